"""The benchmarks as a performance engineer meets them: the smallest runs they accept give figures, not a
traceback; what they cannot use is said with what to do; a run leaves nothing behind; the JSON names what the
figures depend on."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

from conftest import ROOT
from inference.errors import UsageError

sys.path.insert(0, str(ROOT / "bench"))

import report_io  # noqa: E402
import score_runs  # noqa: E402
import service_runs  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the benchmarks read /proc")

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _scorer_said(monkeypatch, tmp_path, summary: str, rows: int):
    """run_scorer's figures where the scorer wrote ``rows`` rows and ended with ``summary``."""
    out = tmp_path / "out.csv"
    out.write_text("path,label\n" + "x.jpg,cat\n" * rows)
    done = subprocess.CompletedProcess([], 0, "", summary + "\n")
    monkeypatch.setattr(score_runs.termination, "run_child", lambda cmd, **kwargs: done)
    return score_runs.run_scorer(tmp_path, ROOT / "models", "m", None, [], out)


def test_a_slow_run_of_a_few_images_is_timed_by_its_seconds_not_divided_by_a_rate_of_0(monkeypatch, tmp_path):
    """`bench_score_ray.py --images 10`: Ray's scorer took 18 s over 10 images, said '0 images/s' (rounded), and
    the benchmark died of a ZeroDivisionError; at 2 images/s the rate alone is 25% off."""
    r = _scorer_said(
        monkeypatch, tmp_path, "scored 10, failed 0, skipped 1 (not images, or hidden); 25.3 s, 0 images/s", 10
    )
    assert r["seconds"] == 25.3 and r["images_per_s"] == pytest.approx(10 / 25.3)
    r = _scorer_said(
        monkeypatch, tmp_path, "scored 100, failed 0, skipped 1 (not images, or hidden); 41.7 s, 2 images/s", 100
    )
    assert r["images_per_s"] == pytest.approx(100 / 41.7)


def test_a_fast_run_keeps_the_rate_its_summary_gives_to_the_image(monkeypatch, tmp_path):
    """9.5 s is rounded to a tenth of a second (0.5%), 1053 images/s to one image a second (0.05%)."""
    r = _scorer_said(
        monkeypatch, tmp_path, "scored 10000, failed 0, skipped 1 (not images, or hidden); 9.5 s, 1053 images/s", 10000
    )
    assert r["images_per_s"] == pytest.approx(1053) and r["seconds"] == pytest.approx(10000 / 1053)


def _archive(path, per_class: int):
    with tarfile.open(path, "w:gz") as tar:
        for name in CLASSES:
            for i in range(per_class):
                info = tarfile.TarInfo(f"cifar10/train/{name}/{i}.jpg")
                info.size = 4
                tar.addfile(info, io.BytesIO(b"jpeg"))
    return path


def test_an_archive_with_fewer_images_than_asked_is_refused_not_reported_as_the_count_asked(tmp_path):
    """--images 20 from an archive of one JPEG a class scored 10 images while the JSON said 20 (and
    bench_score_ray.py ended on an AssertionError's traceback)."""
    archive, work = _archive(tmp_path / "small.tar.gz", 1), tmp_path / "work"
    with pytest.raises(UsageError, match=r"holds 10 of the 20 JPEGs asked for .*: ask for fewer with --images"):
        score_runs.extract(archive, work, 20)
    assert list(work.iterdir()) == []  # neither a half folder nor the extraction's temporary one
    assert sum(1 for _ in score_runs.extract(archive, work, 10).glob("*/*.jpg")) == 10


def test_the_results_name_the_library_versions_and_the_settings_from_the_environment(tmp_path, monkeypatch):
    """The host record named the CPU and Python alone: not the ONNX Runtime, PyTorch or Pillow the figures came
    from, nor a CIFAR_THREADS=1 exported in the shell, which the server a benchmark starts reads."""
    import numpy

    monkeypatch.setenv("CIFAR_THREADS", "1")
    monkeypatch.setenv("CIFAR_API_KEYS", "s3cret")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    report_io.write_json(tmp_path / "x.json", {"figure": 1})
    host = json.loads((tmp_path / "x.json").read_text())["host"]
    assert host["versions"]["numpy"] == numpy.__version__
    assert {"onnxruntime", "onnxruntime-gpu"} & set(host["versions"]) and "pillow" in host["versions"]
    assert host["environment"]["CIFAR_THREADS"] == "1" and host["environment"]["OMP_NUM_THREADS"] == "2"
    assert "s3cret" not in json.dumps(host)  # the API keys are secrets


def _sleeper(port, models_dir, *args, log, env=None):
    """A stand-in for `python -m service serve`, started as spawn_server starts it."""
    log.write("serving\n")
    log.flush()
    code = "import time; time.sleep(120)"
    return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _served(body):
    """(the server's log, its process) after a block run with ``body`` inside ``serving``."""
    args = argparse.Namespace(url=None, models_dir="models", max_batch_size=256, serve_arg=[], streams=0, threads=0)
    seen = {}
    try:
        with service_runs.serving(args) as (_, _, server):
            seen["log"], seen["server"] = service_runs.LOGS[server.pid], server
            body()
    except (KeyboardInterrupt, UsageError):
        pass
    return seen["log"], seen["server"]


@pytest.mark.parametrize(
    "how, kept",
    [("finished", False), ("stopped with Ctrl-C", False), ("failed", True)],
)
def test_the_server_log_is_removed_with_the_server_unless_the_run_failed(how, kept, monkeypatch):
    """Every service benchmark left its server's log in /tmp, Ctrl-C included; a failure's log says why."""

    def body():
        if how == "stopped with Ctrl-C":
            raise KeyboardInterrupt
        if how == "failed":
            raise UsageError("every request failed")

    monkeypatch.setattr(service_runs, "spawn_server", _sleeper)
    monkeypatch.setattr(service_runs, "wait_ready", lambda *a, **k: None)  # the stand-in never answers /readyz
    log, server = _served(body)
    try:
        assert server.poll() is not None  # stopped however the block ended
        assert log.exists() == kept
    finally:
        log.unlink(missing_ok=True)


def test_quiet_below_0_measures_the_load_without_waiting(monkeypatch, capsys):
    """bench_score.py and bench_score_models.py refused 0 ('not a number above 0'), which bench_score_ray.py takes
    as 'do not wait': on a machine that is never idle each of their waits took its full 3 minutes."""
    import bench_score
    import bench_score_models

    assert bench_score.get_args_parser().parse_args(["--quiet-below", "0"]).quiet_below == 0
    assert bench_score_models.get_args_parser().parse_args(["--quiet-below", "0"]).quiet_below == 0
    sleeps = []
    monkeypatch.setattr(score_runs.time, "sleep", sleeps.append)
    monkeypatch.setattr(score_runs, "busy_cores_since", lambda start=None: (0.0, 0.0) if start is None else 1.9)
    assert score_runs.wait_until_quiet(0) == 1.9 and len(sleeps) == 1
    assert capsys.readouterr().err == ""


def test_a_wait_for_quiet_is_said_and_so_is_its_end_without_it(monkeypatch, capsys):
    """Up to 3 minutes of silence before every measurement looked like a hung benchmark."""
    monkeypatch.setattr(score_runs.time, "sleep", lambda s: None)
    monkeypatch.setattr(score_runs, "busy_cores_since", lambda start=None: (0.0, 0.0) if start is None else 1.9)
    ticks = iter(range(0, 1000, 100))
    monkeypatch.setattr(score_runs.time, "monotonic", lambda: next(ticks))
    assert score_runs.wait_until_quiet(0.15, timeout=150) == 1.9
    said = capsys.readouterr().err.splitlines()
    assert said == [
        "  waiting up to 150 s for other processes to use fewer than 0.15 cores (--quiet-below; now 1.90)",
        "  measuring anyway: other processes still use 1.90 cores",
    ]


def test_a_models_checkpoint_that_is_not_here_is_said_with_what_to_do(tmp_path, monkeypatch):
    """bench_export.py with its defaults said only 'error: no checkpoint at runs/ensembles/...' (training runs are
    not shipped), and looked for it from the current folder rather than the project's."""
    import bench_export

    entry = types.SimpleNamespace(name="m", source={"checkpoint": "runs/a/best.pt"})
    with pytest.raises(UsageError, match=r"^--fp32 m was exported from runs/a/best.pt, which is not here .*--fp32"):
        bench_export.eager_checkpoint(entry, str(tmp_path / "models"))
    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "best.pt").write_bytes(b"")
    monkeypatch.chdir(tmp_path / "runs")
    monkeypatch.setattr(bench_export, "load_checkpoint", lambda path: path)
    assert bench_export.eager_checkpoint(entry, str(tmp_path / "models")) == str(tmp_path / "runs" / "a" / "best.pt")


def test_every_benchmarks_help_gives_its_description_whole():
    """bench_checkpoint.py --help cut its description at the end of the docstring's first line: 'the whole
    training state written (last.pt; best.pt'."""
    import importlib

    for path in sorted((ROOT / "bench").glob("*.py")):
        if not path.stem.startswith(("bench_", "calibration_")):
            continue
        module = importlib.import_module(path.stem)
        first_paragraph = " ".join(module.__doc__.split("\n\n")[0].split())
        assert first_paragraph in " ".join(module.get_args_parser().format_help().split()), path.name


def test_an_out_in_a_folder_that_cannot_be_written_is_refused_before_anything_is_measured(tmp_path, monkeypatch):
    """A read-only folder (or another user's) was found out when the results were written, after the whole run:
    'error: Permission denied' and the figures lost."""
    import arguments

    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(arguments.os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(argparse.ArgumentTypeError, match=rf"^{locked} is not writable here: name a folder"):
        arguments.json_out(str(locked / "new" / "out.json"))
    assert arguments.json_out(str(tmp_path / "out.json")) == tmp_path / "out.json"


def test_the_raw_engines_batch_is_the_one_it_ran_when_the_pool_is_smaller(monkeypatch):
    """bench_service.py --pool 20 ran the raw engine on batches of 20 and recorded them as 'batch 256'."""
    import numpy as np
    import raw_engine

    class Engine:
        def __init__(self, path, device, settings):
            pass

        def logits(self, batch):
            return batch

    monkeypatch.setattr(raw_engine, "OnnxClassifier", Engine)
    rate = raw_engine.measure("m.onnx", np.zeros((20, 3, 4, 4), np.float32), 256, 1, 1, seconds=0.01)
    assert rate.batch_size == 20 and rate.label.endswith("batch 20")
    assert raw_engine.measure("m.onnx", np.zeros((20, 3, 4, 4), np.float32), 8, 1, 1, seconds=0.01).batch_size == 8


@pytest.mark.parametrize("flags", [{"threads": 2}, {"streams": 1, "serve_arg": ["--memory-arena=off"]}])
def test_server_settings_with_a_url_are_refused_not_recorded_as_the_servers(flags):
    """With --url they reached no server, and the JSON said "threads": 2 beside the figures of whatever the server
    at the URL ran with."""
    args = argparse.Namespace(url="http://127.0.0.1:3000", streams=0, threads=0, serve_arg=[])
    vars(args).update(flags)
    with pytest.raises(
        UsageError, match=r"only for a server started here, not the one at --url; leave (it|them) or --url out"
    ):
        service_runs.open_server(args)
    args.streams, args.threads, args.serve_arg = 0, 0, []
    assert service_runs.open_server(args) == ("127.0.0.1", 3000, None)
