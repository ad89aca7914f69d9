"""The Ray engine (`python -m service score --engine ray`): the local engine's rows, error rows, summary and
resume, on a small local Ray instance (2 CPUs) that every test of this module shares."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, wait_for_lines
from service.score import ray_engine
from service.score.cli import main as score_main
from service.score.errors import UserError

BROKEN = {  # file -> what its error row says, in both engines
    "alpha/corrupt.jpg": "not a readable image",
    "beta/notes.png": "cannot identify image file",  # a text file with an image's extension
    "gamma/truncated.png": "not a readable image",
    "gamma/gone.jpg": "broken symlink",
}


def _score(*args) -> int:
    return score_main([str(a) for a in args])


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return [header, *sorted(rows)]


def _copies(image_folder: Path, root: Path, count: int) -> None:
    """``count`` images in class folders named as the tiny model's classes, PNG and JPEG."""
    sources = sorted(image_folder.rglob("*.png"))
    for i in range(count):
        source = sources[i % len(sources)]
        folder = root / source.parent.name
        folder.mkdir(parents=True, exist_ok=True)
        if i % 3:
            shutil.copy(source, folder / f"{i:05d}.png")
        else:
            Image.open(source).save(folder / f"{i:05d}.jpg", quality=90)


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for this module (this process connects to it; subprocesses get --address)."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    for attempt in (1, 2):
        try:
            ray.init(
                address="local",
                num_cpus=2,
                object_store_memory=200 << 20,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
            )
            break
        except Exception as exc:
            # Ray gives its raylet a fixed 30 s to register; on two cores busy with other work it can take longer.
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(exc):
                raise
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def three_hundred(image_folder, tmp_path_factory) -> Path:
    """300 image files: 296 readable, a corrupt JPEG, a text file named .png, a truncated PNG, a broken link;
    and a file without an image extension (skipped)."""
    root = tmp_path_factory.mktemp("three-hundred")
    _copies(image_folder, root, 296)
    (root / "alpha/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (root / "beta/notes.png").write_text("a text file, not an image")
    (root / "gamma/truncated.png").write_bytes((image_folder / "gamma" / "0040.png").read_bytes()[:120])
    os.symlink("missing.jpg", root / "gamma/gone.jpg")
    (root / "README.txt").write_text("not an image either")
    return root


def test_ray_engine_gives_the_local_engines_rows_and_summary(
    ray_address, three_hundred, tiny_models_dir, tmp_path, capsys, monkeypatch
):
    common = ["--models-dir", tiny_models_dir, "--k", 2, "--batch-size", 16, "--labels-from-folders", "--no-progress"]
    assert _score(three_hundred, "--out", tmp_path / "local.csv", *common) == 0
    local_err = capsys.readouterr().err
    monkeypatch.setattr(ray_engine, "WINDOW_FILES", 160)  # two datasets, one after the other
    assert _score(three_hundred, "--out", tmp_path / "ray.csv", "--engine", "ray", *common) == 0
    ray_err = capsys.readouterr().err

    local, ray = _rows(tmp_path / "local.csv"), _rows(tmp_path / "ray.csv")
    assert len(local) == 1 + 300 and ray == local  # header and every row, byte for byte once sorted by path
    errors = {row[0]: row[-1] for row in ray[1:] if row[-1]}
    assert set(errors) == set(BROKEN) and all(BROKEN[path] in message for path, message in errors.items())
    assert "ray: the Ray instance this process is connected to, with 2 CPUs" in ray_err  # not a new one
    for err in (local_err, ray_err):
        assert "scored 296, failed 4, skipped 1 (not images, or hidden)" in err and "Traceback" not in err, err
    # The accuracy report comes from the rows alike.
    assert ray_err[ray_err.index("accuracy against") :] == local_err[local_err.index("accuracy against") :]


def test_ray_engine_resumes_an_interrupted_run_scoring_each_file_once(
    ray_address, image_folder, tiny_models_dir, tmp_path
):
    """Killed (SIGKILL) part-way, then resumed and interrupted with Ctrl-C, then resumed to the end: each file
    is in the output exactly once, with the rows the local engine gives. The scorer runs as a driver of its
    own against the module's Ray instance (--address)."""
    root = tmp_path / "many"
    _copies(image_folder, root, 3000)
    (root / "beta" / "broken.png").write_bytes(b"broken")
    out = tmp_path / "ray.csv"
    common = ["--models-dir", str(tiny_models_dir), "--batch-size", "8", "--k", "1"]
    ray_cmd = [sys.executable, "-m", "service", "score", str(root), "--out", str(out), *common]
    ray_cmd += ["--engine", "ray", "--address", ray_address]
    kw = dict(
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as in a shell
    )

    proc = subprocess.Popen(ray_cmd, **kw)
    wait_for_lines(out, 40, proc, timeout=180)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = out.read_bytes().count(b"\n")
    assert 40 <= lines < 3002, "the run should have been killed part-way"
    with open(out, "a") as f:
        f.write("alpha/00999.png,al")  # as if killed in the middle of a write

    proc = subprocess.Popen([*ray_cmd, "--resume"], **kw)
    wait_for_lines(out, lines + 40, proc, timeout=180)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "--resume" in err and "Traceback" not in err, err

    done = subprocess.run([*ray_cmd, "--resume"], **kw, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "already in" in done.stderr and "Traceback" not in done.stderr

    assert _score(root, "--out", tmp_path / "local.csv", *common, "--no-progress") == 0
    rows = _rows(out)
    paths = [row[0] for row in rows[1:]]
    assert len(paths) == len(set(paths)) == 3001  # each file exactly once
    assert rows == _rows(tmp_path / "local.csv")
    assert [row[0] for row in rows[1:] if row[-1]] == ["beta/broken.png"]


def test_ray_engine_usage_errors(three_hundred, tiny_models_dir, tmp_path, capsys, monkeypatch):
    """Flags of other engines are refused before anything starts; without Ray, one line naming the extra."""
    models = ["--models-dir", tiny_models_dir, "--no-progress", "--out", tmp_path / "p.csv"]
    cases = {
        "--address is not for --engine local (it is for --engine ray)": ["--address", "auto"],
        "--workers is not for --engine ray (it is for --engine local, remote)": ["--engine", "ray", "--workers", 2],
        "--engine remote needs --url": ["--engine", "remote"],
        "--gpus-per-actor must be more than 0": ["--engine", "ray", "--gpus-per-actor", 0],
        "--actors must be at least 1": ["--engine", "ray", "--actors", 0],
    }
    for message, args in cases.items():
        assert _score(three_hundred, *models, *args) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, err

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the extra
    assert _score(three_hundred, *models, "--engine", "ray") == 2
    assert capsys.readouterr().err == f"error: {ray_engine.MISSING}\n"
    assert "pip install -e '.[ray]'" in ray_engine.MISSING


def test_the_scorer_runs_without_importing_ray(tiny_models_dir, image_folder, tmp_path):
    code = (
        "import sys, service.__main__\n"
        "from service.score.cli import main\n"
        "assert main([sys.argv[1], '--models-dir', sys.argv[2], '--out', sys.argv[3], '--no-progress']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(image_folder), str(tiny_models_dir), str(tmp_path / "p.csv")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_actor_pool_sizes_and_resource_checks():
    assert ray_engine.default_actors(cpus=16, gpus=0, gpus_per_actor=None, cpus_per_actor=1) == 16
    assert ray_engine.default_actors(cpus=16, gpus=0, gpus_per_actor=None, cpus_per_actor=4) == 4
    assert ray_engine.default_actors(cpus=16, gpus=2, gpus_per_actor=0.5, cpus_per_actor=1) == 4
    assert ray_engine.default_actors(cpus=1, gpus=0, gpus_per_actor=None, cpus_per_actor=2) == 1
    ray_engine.check_resources(2, 1, None, cpus=2, gpus=0)  # CPU actors may hold every CPU (stages fused)
    ray_engine.check_resources(4, 1, 0.5, cpus=8, gpus=2)
    for args, message in (
        ((3, 1, None, 2, 0), "need more than the 2 CPUs"),
        ((5, 1, 0.5, 8, 2), "need more than the 2 GPUs"),
        ((2, 1, 1.0, 2, 2), "none is left to read and decode"),  # GPU actors: the stages stay CPU tasks
    ):
        with pytest.raises(UserError, match=message):
            ray_engine.check_resources(*args[:3], cpus=args[3], gpus=args[4])


def test_stages_turn_every_failure_into_the_local_engines_error_row(image_folder, tmp_path):
    """The read and decode stages on their own (no Ray): bytes paths, a non-UTF-8 name, a missing file."""
    pa = pytest.importorskip("pyarrow")
    good = (image_folder / "alpha" / "0000.png").read_bytes()
    odd = os.fsencode("caf\udce9.png")  # a name that is not UTF-8
    (tmp_path / os.fsdecode(odd)).write_bytes(good)
    (tmp_path / "text.png").write_text("hello")
    rels = [odd, b"text.png", b"missing.png", b"walked.png"]
    batch = pa.table(
        {
            "rel": pa.array(rels, pa.binary()),
            "error": pa.array([None, None, None, b"broken symlink (...)"], pa.binary()),
        }
    )
    read = ray_engine.read_files(batch, os.fsencode(str(tmp_path)))
    decoded = ray_engine.decode_files(read, (32, 32), "center_crop")
    errors = decoded.column("error").to_pylist()
    assert errors[0] is None and len(decoded.column("pixels")[0].as_py()) == 32 * 32 * 3
    assert errors[1].startswith(b"not a readable image (UnidentifiedImageError: cannot identify image file); ")
    assert errors[2] == b"file not found (deleted while scoring?)"
    assert errors[3] == b"broken symlink (...)" and decoded.column("pixels").to_pylist()[1:] == [None] * 3
    np.testing.assert_array_equal(
        np.frombuffer(decoded.column("pixels")[0].as_py(), np.uint8).reshape(32, 32, 3),
        np.asarray(Image.open(tmp_path / os.fsdecode(odd)).convert("RGB")),
    )


class _RecordingRay:
    """Stands in for the ray module at shutdown: records which of Ray Data's pipeline threads are still alive."""

    def __init__(self):
        self.alive_at_shutdown = None

    def shutdown(self):
        alive = [t for t in threading.enumerate() if t.name == ray_engine.PIPELINE_THREAD]
        self.alive_at_shutdown = alive


def _closing_backend() -> tuple[ray_engine.RayBackend, _RecordingRay]:
    backend = ray_engine.RayBackend.__new__(ray_engine.RayBackend)
    backend.ray, backend._stream, backend._owns_connection, backend._address = _RecordingRay(), None, True, None
    return backend, backend.ray


def test_ray_shuts_down_after_the_pipeline_threads_end(monkeypatch):
    """A Ray Data thread still in a Ray call when Ray shuts down makes Ray end the process with status 1 (a
    Ctrl-C answered 1, not 130): close() lets them finish first, and waits no longer than its grace period."""
    backend, ray = _closing_backend()
    finishing = threading.Thread(target=time.sleep, args=(0.5,), name=ray_engine.PIPELINE_THREAD)
    finishing.start()
    backend.close()
    assert ray.alive_at_shutdown == []

    class Timed(threading.Thread):
        """Records the timeout of each join: close() must bound its wait by the grace period."""

        timeouts: list = []

        def join(self, timeout=None):
            self.timeouts.append(timeout)
            super().join(timeout)

    monkeypatch.setattr(ray_engine, "PIPELINE_GRACE_S", 0.2)
    backend, ray = _closing_backend()
    release = threading.Event()
    stuck = Timed(target=release.wait, name=ray_engine.PIPELINE_THREAD, daemon=True)
    stuck.start()
    backend.close()
    release.set()
    assert ray.alive_at_shutdown == [stuck]  # waited, then shut down anyway
    assert stuck.timeouts and all(t is not None and t <= 0.2 for t in stuck.timeouts), stuck.timeouts
    backend.close()  # a second close does nothing
    assert ray.alive_at_shutdown == [stuck]


def test_a_cluster_connection_is_left_to_the_process_end_which_keeps_its_status(tmp_path):
    """Shutting Ray down raced its own threads, which then ended the process with status 1: the connection to
    a cluster is not shut down at close, and the command's process ends with os._exit and its own status
    (no exit handler runs: Ray's would shut down), Ray loaded or not."""
    backend, ray = _closing_backend()
    backend._address = "10.0.0.1:6379"
    backend.close()
    assert ray.alive_at_shutdown is None  # not shut down: the process's end disconnects it

    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('exit handler ran', flush=True))\n"
        "if sys.argv[1] == 'ray':\n"
        "    sys.modules['ray'] = type(sys)('ray')  # as if the Ray engine had run\n"
        "from service.process_end import end_process\n"
        "print('scored', flush=False)\n"
        "end_process(130)\n"
    )
    for loaded, handler_runs in (("ray", False), ("none", True)):
        done = subprocess.run([sys.executable, "-c", script, loaded], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 130, (loaded, done.stderr)
        assert done.stdout.startswith("scored\n"), (loaded, done.stdout)  # flushed before os._exit
        assert ("exit handler ran" in done.stdout) == handler_runs, (loaded, done.stdout)


BENCH_RUN = """
import sys
from pathlib import Path
sys.path[:0] = [{root!r}, {bench!r}]
import termination
from score_runs import run_scorer
def main():
    run_scorer(Path({folder!r}), Path({models!r}), "tiny", 8, {flags!r}, Path({out!r}))
    return 0
termination.run(main)
"""


def _process_tree(pid: int) -> list[int]:
    """``pid`` and every process descended from it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):  # ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_a_stopped_scoring_benchmark_leaves_no_ray_process_behind(image_folder, tiny_models_dir, tmp_path):
    """bench_score_ray.py stopped (SIGTERM; Ctrl-C alike) while its scorer runs a local Ray instance: the scorer
    gets the signal and the time to shut Ray down (bench/termination.py's run_child), where subprocess.run
    killed it at once and Ray's dashboard and runtime-env agents lingered 40-75 s."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    root = tmp_path / "many"
    _copies(image_folder, root, 3000)
    out = tmp_path / "ray.csv"
    code = BENCH_RUN.format(
        root=str(ROOT),
        bench=str(ROOT / "bench"),
        folder=str(root),
        models=str(tiny_models_dir),
        flags=["--engine", "ray", "--k", "1"],
        out=str(out),
    )
    bench = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    started: list[int] = []
    try:
        wait_for_lines(out, 40, bench, timeout=180)  # Ray's instance, actors and agents all running
        started = _process_tree(bench.pid)
        bench.send_signal(signal.SIGTERM)
        _, err = bench.communicate(timeout=60)
        assert bench.returncode == 128 + signal.SIGTERM, err
        assert err.strip() == "SIGTERM: benchmark stopped; no results written"
        deadline = time.monotonic() + 15
        while any(map(_running, started)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [Path(f"/proc/{pid}/cmdline").read_bytes()[:80].replace(b"\0", b" ") for pid in started if _running(pid)]
        assert not left, left
    finally:
        for pid in {*started, *(_process_tree(bench.pid) if bench.poll() is None else [])}:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
