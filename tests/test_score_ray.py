"""The Ray engine (`python -m service score --engine ray`): the local engine's rows, error rows, summary and
resume, on a small local Ray instance (2 CPUs) that every test of this module shares."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, wait_for_lines
from inference.interrupts import terminations_as_interrupts
from service.score import ray_connect, ray_engine, ray_stages
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

    # Header and every row byte for byte, in the walk's order (the local engine's), across both datasets. Ray
    # Data yields blocks as they finish unless told to keep their order; here they often finish in order anyway.
    assert (tmp_path / "ray.csv").read_bytes() == (tmp_path / "local.csv").read_bytes()
    assert ray_engine._import_ray().data.DataContext.get_current().execution_options.preserve_order
    ray = _rows(tmp_path / "ray.csv")
    assert len(ray) == 1 + 300
    errors = {row[0]: row[-1] for row in ray[1:] if row[-1]}
    assert set(errors) == set(BROKEN) and all(BROKEN[path] in message for path, message in errors.items())
    assert "ray: the Ray instance this process is connected to, with 2 CPUs" in ray_err  # not a new one
    for err in (local_err, ray_err):
        assert "scored 296, failed 4, skipped 1 (not images, or hidden)" in err and "Traceback" not in err, err
    # The summary (the first failed files named alike) and the accuracy report, but for the time taken.
    timing = re.compile(r"; [0-9.]+ s, [0-9]+ images/s")
    summary = timing.sub("", local_err[local_err.index("scored 296") :])
    assert timing.sub("", ray_err[ray_err.index("scored 296") :]) == summary


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
        # the number as typed, not as the float it was parsed to ("0.0")
        "--gpus-per-actor must be more than 0, not 0\n": ["--engine", "ray", "--gpus-per-actor", 0],
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


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_address_where_no_ray_answers_is_one_line_at_once(three_hundred, tiny_models_dir, tmp_path):
    """--address, or RAY_ADDRESS without it (as Ray's own commands read it), naming a port where nothing
    listens: ray.init would retry for about ten minutes; the command says so in one line, at once."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    port = _closed_port()
    command = [sys.executable, "-m", "service", "score", str(three_hundred), "--engine", "ray", "--no-progress"]
    command += ["--models-dir", str(tiny_models_dir), "--out", str(tmp_path / "p.csv")]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    for flags, variable in (([], f"127.0.0.1:{port}"), (["--address", f"127.0.0.1:{port}"], None)):
        run_env = env if variable is None else {**env, "RAY_ADDRESS": variable}
        start = time.monotonic()
        done = subprocess.run([*command, *flags], cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=120)
        took = time.monotonic() - start
        assert done.returncode == 2, (flags, done.stderr)
        assert done.stderr == (
            f"error: cannot reach Ray at 127.0.0.1:{port}: nothing listens there (is the cluster's head running?)\n"
        )
        assert took < 30, took  # the interpreter and Ray's import, no connection attempts
    assert not (tmp_path / "p.csv").exists()


class _FakeRay:
    """Stands in for the ray module in _connect: records ray.init's calls, or raises ``error`` from it."""

    __version__ = "2.60.0"

    def __init__(self, error: Exception | None = None):
        self.inits: list[dict] = []
        self.error = error
        self._private = SimpleNamespace(worker=SimpleNamespace(print_to_stdstream=lambda data, ignore_prefix: None))

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        self.inits.append(kwargs)
        if self.error:
            raise self.error


def test_cluster_addresses_are_resolved_and_checked_before_ray_init(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert ray_connect.resolve_address(None) == (None, "")  # a local instance
    assert ray_connect.resolve_address("auto") == ("auto", "")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert ray_connect.resolve_address(None) == ("10.0.0.1:6379", " (RAY_ADDRESS)")
    assert ray_connect.resolve_address("auto") == ("10.0.0.1:6379", " (RAY_ADDRESS)")  # as ray.init takes it
    assert ray_connect.resolve_address("head:6379") == ("head:6379", "")  # the flag wins

    # Ray Client's grpcio imports, whatever this machine has
    monkeypatch.setitem(sys.modules, "grpc", ModuleType("grpc"))
    port = _closed_port()
    for address, message in (
        (f"127.0.0.1:{port}", "nothing listens there"),
        (f"ray://127.0.0.1:{port}", "nothing listens there"),
        ("no-such-host.invalid:6379", "unknown host 'no-such-host.invalid'"),
    ):
        ray = _FakeRay()
        with pytest.raises(UserError, match=f"^cannot reach Ray at {re.escape(address)}: {message}"):
            ray_connect._connect(ray, address)
        assert ray.inits == []

    # Ray Client needs grpcio: the extra that brings it, before any connection.
    monkeypatch.setitem(sys.modules, "grpc", None)
    with pytest.raises(UserError, match=re.escape("needs Ray's client extra (import grpc: ")):
        ray_connect._connect(_FakeRay(), f"ray://127.0.0.1:{port}")

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = "127.0.0.1:%d" % listening.getsockname()[1]
        ray = _FakeRay()
        assert ray_connect._connect(ray, address) is True
        assert [init["address"] for init in ray.inits] == [address] and "runtime_env" in ray.inits[0]
        # Ray's own error says only that it could not connect: a cluster with token authentication is a likely cause.
        ray = _FakeRay(ConnectionError(f"Failed to connect to Ray cluster at {address}"))
        with pytest.raises(UserError, match="also needs RAY_AUTH_MODE=token"):
            ray_connect._connect(ray, address)


def test_the_ray_extra_brings_ray_client_at_the_pinned_version():
    """--address ray://HEAD:10001 needs Ray Client (grpcio), which ray[data] alone does not install."""
    import tomllib

    with open(ROOT / "pyproject.toml", "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["ray"]
    pins = [re.fullmatch(r"ray\[([a-z,]+)\]==([0-9.]+)", requirement) for requirement in extra]
    assert len(pins) == 1 and pins[0], extra  # one requirement: the extras at one version
    assert {"data", "client"} <= set(pins[0].group(1).split(",")), extra
    assert pins[0].group(2) == _FakeRay.__version__


def _client_address_refused(tmp_path, monkeypatch, capsys) -> str:
    """The command's one line for a ray:// address it refuses: exit 2, before Ray starts or the output opens."""
    ray = _FakeRay()
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    address = f"ray://127.0.0.1:{_closed_port()}"
    argv = ["--engine", "ray", "--address", address, "--models-dir", ROOT / "models", "--no-progress"]
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0.png").write_bytes(b"")  # the walk goes by the name
    assert _score(photos, *argv, "--out", tmp_path / "p.csv") == 2
    assert ray.inits == []
    err = capsys.readouterr().err
    assert err.startswith(f"error: {address} is a Ray Client address, which needs Ray's client extra"), err
    assert err.count("\n") == 1 and "pip install -e '.[ray]'" in err, err
    assert not (tmp_path / "p.csv").exists()
    return err


def test_a_ray_client_address_without_grpcio_is_one_line(tmp_path, monkeypatch, capsys):
    """Ray installed as ray[data] alone, without the ray extra: the command names the extra, in one line."""
    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` raises ImportError, as without it
    assert "(import grpc: " in _client_address_refused(tmp_path, monkeypatch, capsys)


def test_a_ray_client_address_with_a_grpcio_that_does_not_import_is_one_line(tmp_path, monkeypatch, capsys):
    """A grpcio that is there but does not import (built for another Python) fails Ray Client as a missing one
    does: the same line, with the import's own reason, not Ray's ImportError from inside ray.init."""
    site = tmp_path / "site"
    (site / "grpc").mkdir(parents=True)
    (site / "grpc" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'cygrpc' from 'grpc._cython'\")\n"
    )
    monkeypatch.delitem(sys.modules, "grpc", raising=False)
    monkeypatch.syspath_prepend(str(site))
    err = _client_address_refused(tmp_path, monkeypatch, capsys)
    assert "(import grpc: cannot import name 'cygrpc' from 'grpc._cython')" in err, err


def test_rays_error_messages_go_to_stderr_not_to_the_rows(monkeypatch, capsys):
    """Ray's driver prints the errors its nodes publish (a task retried after Ctrl-C killed its actor, a worker
    lost) to standard output, where `score DIR` writes its CSV rows: the engine sends them to standard error.
    This relies on Ray's private listener looking print_to_stdstream up by name: breaks loudly if Ray changes."""
    ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    worker = ray._private.worker
    assert "print_to_stdstream" in worker.listen_error_messages.__code__.co_names
    monkeypatch.setattr(worker, "print_to_stdstream", worker.print_to_stdstream)  # restored after the test
    ray_connect._errors_to_stderr(ray)
    ray_connect._errors_to_stderr(ray)  # once only: no wrapper around the wrapper
    message = "Task MapWorker(...).submit failed. There are infinite retries remaining"
    worker.print_to_stdstream({"lines": [message], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count(message) == 1


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
        ((1, 1, 0.5, 8, 0), r"^--gpus-per-actor 0.5: the Ray cluster has no GPU$"),  # not "--actors 1" unasked
        ((2, 1, 1.0, 2, 2), "none is left to read and decode"),  # GPU actors: the stages stay CPU tasks
    ):
        with pytest.raises(UserError, match=message):
            ray_engine.check_resources(*args[:3], cpus=args[3], gpus=args[4])
    # an actor count the command chose is not said as an --actors the user typed
    for args, message in (
        ((1, 3, None, 2, 0), r"^one actor \(the default\) x --threads 3 need more than the 2 CPUs"),
        (
            (4, 1, 1.0, 4, 4),
            r"^4 actors \(the default\) x --threads 1 take all 4 CPUs.*\(use fewer actors or threads\)$",
        ),
    ):
        with pytest.raises(UserError, match=message):
            ray_engine.check_resources(*args[:3], cpus=args[3], gpus=args[4], chosen=True)
    # one GPU actor taking every CPU: there are no fewer actors, and fewer --threads helps only where a CPU is left
    left = "none is left to read and decode the images"
    for (actors, threads, cpus, chosen), message in (
        (
            (1, 2, 2, True),
            rf"^one actor \(the default\) x --threads 2 take all 2 CPUs of the Ray cluster: {left} "
            r"\(use fewer --threads\)$",
        ),
        ((1, 2, 2, False), rf"^--actors 1 x --threads 2 take all 2 CPUs .*: {left} \(use fewer --threads\)$"),
        (
            (1, 1, 1, True),
            rf"^one actor \(the default\) x --threads 1 take all 1 CPUs .*: {left} "
            r"\(the Ray cluster needs more than 1 CPU\)$",
        ),
    ):
        with pytest.raises(UserError, match=message):
            ray_engine.check_resources(actors, threads, 1.0, cpus=cpus, gpus=1, chosen=chosen)


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
    read = ray_stages.read_files(batch, os.fsencode(str(tmp_path)))
    decoded = ray_stages.decode_files(read, (32, 32), "center_crop")
    errors = decoded.column("error").to_pylist()
    assert errors[0] is None and len(decoded.column("pixels")[0].as_py()) == 32 * 32 * 3
    assert errors[1].startswith(b"not a readable image (UnidentifiedImageError: cannot identify image file); ")
    assert errors[2] == b"file not found (deleted while scoring?)"
    assert errors[3] == b"broken symlink (...)" and decoded.column("pixels").to_pylist()[1:] == [None] * 3
    np.testing.assert_array_equal(
        np.frombuffer(decoded.column("pixels")[0].as_py(), np.uint8).reshape(32, 32, 3),
        np.asarray(Image.open(tmp_path / os.fsdecode(odd)).convert("RGB")),
    )


def test_a_stage_that_raises_fails_the_job_in_one_line_naming_the_stage(
    ray_address, image_folder, tiny_models_dir, tmp_path, monkeypatch, capfd
):
    """Ray's text of the failure is a remote traceback on many lines; the scorer says which stage raised what, in one
    line, and keeps Ray's text in a file that line names. Here inference raises: pixels of another size than the
    model takes."""
    from service.score.errors import RemoteError
    from service.score.walk import Entry

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    backend = ray_engine.RayBackend(str(tiny_models_dir / "tiny.onnx"), str(image_folder), actors=1, batch_size=4)
    try:
        backend.size = (16, 16)  # decoded and fed to the model at 16x16; it takes 32x32
        entries = [Entry(f"alpha/{i:04d}.png", str(image_folder / "alpha" / f"{i:04d}.png")) for i in range(4)]
        with pytest.raises(RemoteError) as failed:
            list(backend.rows(iter([entries])))
    finally:
        backend.close()
    said = str(failed.value)
    assert "\n" not in said and len(said) < 600, said
    assert said.startswith("the Ray job failed in stage Classify: ") and "Traceback" not in said, said
    # the stage's own exception, not Ray's wrapper of it
    assert "UsageError: tiny takes float32 [N, 3, 32, 32]" in said and "UserCodeException" not in said, said
    (kept,) = tmp_path.glob("score-ray-failure-*.txt")
    assert said.endswith(f" (Ray's traceback: {kept})"), said
    assert "UsageError" in kept.read_text() and "UserCodeException" in kept.read_text()  # Ray's whole text
    assert "An exception was raised from a task" not in capfd.readouterr().err  # nor Ray Data's ERROR lines


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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_stop_while_ray_shuts_down_lets_the_shutdown_finish(signum):
    """A second Ctrl-C (or a SIGTERM) while close() shut Ray down stopped the shutdown halfway: Ray's dashboard
    and runtime-env agents were left running and the command ended with status 1, not 130. It is ignored there,
    and the handlers are the run's again after."""

    class StoppedAgain(_RecordingRay):
        finished = False

        def shutdown(self):
            signal.raise_signal(signum)
            self.finished = True

    backend, _ = _closing_backend()
    backend.ray = ray = StoppedAgain()
    with terminations_as_interrupts():
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            backend.close()
        except KeyboardInterrupt:  # Terminated too; raised on, it would end pytest's session
            pytest.fail(f"{signal.Signals(signum).name} stopped Ray's shutdown")
        assert ray.finished
        assert {s: signal.getsignal(s) for s in handlers} == handlers


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
