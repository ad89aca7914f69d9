"""A benchmark stopped with SIGTERM ends the child it was waiting on, and says so in one line
(bench/termination.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT
from inference.errors import UsageError
from inference.manifest import ManifestError, UnknownModel

sys.path.insert(0, str(ROOT / "bench"))

import termination  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")

PARENT = textwrap.dedent(
    """
    import subprocess, sys
    sys.path[:0] = [{root!r}, {bench!r}]
    from termination import run
    child = "import os, time; open({pid_file!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    def main():
        subprocess.run([sys.executable, "-c", child], stderr=subprocess.DEVNULL)  # the pipe is the parent's
        return 0
    if {install}:
        run(main)
    else:
        sys.exit(main())
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by init) counts as ended.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def _stop_parent(tmp_path, install: bool) -> tuple[int, str, int]:
    """(the parent's exit status after SIGTERM, what it printed on stderr, its child's pid)."""
    pid_file = tmp_path / "child.pid"
    code = PARENT.format(root=str(ROOT), bench=str(ROOT / "bench"), install=install, pid_file=str(pid_file))
    parent = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.05)
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=30)
    return parent.returncode, err, int(pid_file.read_text())


def _ended_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_ends_the_benchmark_and_its_child(tmp_path):
    status, err, child = _stop_parent(tmp_path, install=True)
    assert status == 128 + signal.SIGTERM
    assert err.strip() == "SIGTERM: benchmark stopped; no results written"  # one line, no traceback
    assert _ended_within(child, 10)


def test_without_it_the_child_outlives_the_benchmark(tmp_path):
    """What the handler is for: Python's default SIGTERM leaves the child running."""
    status, _, child = _stop_parent(tmp_path, install=False)
    try:
        assert status == -signal.SIGTERM
        assert not _ended_within(child, 1)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def _bench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize(
    "args",
    [
        ["bench/bench_mixed_models.py", "--slow", "no-such-model"],  # a KeyError from the manifest
        # one model's clients replaced the other's in the phase of both, which then measured the slow model alone
        ["bench/bench_mixed_models.py", "--fast", "wrn-16-4-cifar10-int8", "--slow", "wrn-16-4-cifar10-int8"],
        ["bench/bench_export.py", "--fp32", "no-such-model"],
        ["bench/bench_training.py", "--steps", "0"],  # the time of no steps: no figure at all
        ["bench/bench_score.py", "--images", "5"],  # a tenth of 5 per class: no image
        ["bench/bench_service.py", "--routes", "classify,v3"],
        ["bench/bench_score.py", "--images", "10", "--configs", "default,fast"],  # was a SystemExit: status 1
        ["bench/bench_score_models.py", "--models-dir", "no-such-dir"],  # was a SystemExit: status 1
        ["bench/bench_score_ray.py", "--images", "10", "--models-dir", "no-such-dir"],
        ["bench/bench_photos.py", "--sizes", "0.05,big"],
        ["bench/bench_photos.py", "--sizes", "0.05", "--repeats", "0"],  # no median of no decodes
        ["bench/bench_training.py", "--models", "no_such_model", "--steps", "1", "--batch-size", "8"],
        ["bench/bench_checkpoint.py", "--recipes", "no_such_recipe"],
        # pooled down to nothing: was torch's RuntimeError with its traceback
        ["bench/bench_training.py", "--models", "resnet9_half", "--image-size", "2"],
    ],
)
def test_a_users_mistake_is_one_line_and_status_2(args, tmp_path):
    done = _bench(*args, "--out", str(tmp_path / "out.json"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error: " in done.stderr.strip().splitlines()[-1], done.stderr
    assert "server log" not in done.stderr  # refused before a server was started that it would leave behind
    assert not (tmp_path / "out.json").exists()


# Each script with the arguments that make it fail fast past argparse (no manifest, no report): were a bad
# value let through, the test would see that failure, not the flag named, and no server would outlive it.
NO_MODELS = {
    "bench_service": ["--models-dir", "no-such-dir"],
    "bench_mixed_models": ["--slow", "x", "--models-dir", "no-such-dir"],
    "bench_photos": ["--sizes", "0.05", "--repeats", "1", "--models-dir", "no-such-dir"],
    "bench_export": ["--models-dir", "no-such-dir"],
    "bench_score": ["--images", "10", "--models-dir", "no-such-dir"],
    "bench_score_models": ["--images", "10", "--models-dir", "no-such-dir"],
    "bench_score_ray": ["--images", "10", "--models-dir", "no-such-dir"],
    "calibration_crossfit": ["no-such-report"],
}


@pytest.mark.parametrize(
    "script, flag, value",
    [
        ("bench_service", "--duration", "0"),  # a level of no load: no rate to report
        ("bench_service", "--duration", "nan"),  # a deadline no clock reaches
        ("bench_service", "--warmup", "-1"),
        ("bench_service", "--max-requests", "0"),
        ("bench_service", "--k", "0"),
        ("bench_service", "--pool", "0"),  # no JPEG to build a request from
        ("bench_service", "--streams", "-1"),  # 0 is the service's default
        ("bench_service", "--threads", "-2"),
        ("bench_service", "--max-batch-size", "0"),
        ("bench_service", "--max-batch-size", "1"),  # below the service's least: it refused to start
        ("bench_mixed_models", "--max-batch-size", "1"),
        ("bench_mixed_models", "--concurrency", "0"),
        ("bench_mixed_models", "--slow-concurrency", "-1"),
        ("bench_mixed_models", "--images-per-request", "0"),
        ("bench_mixed_models", "--duration", "-5"),
        ("bench_mixed_models", "--warmup", "-1"),
        ("bench_mixed_models", "--k", "0"),
        ("bench_mixed_models", "--pool", "0"),
        ("bench_mixed_models", "--streams", "-1"),
        ("bench_mixed_models", "--threads", "-1"),
        ("bench_mixed_models", "--max-batch-size", "0"),
        ("bench_photos", "--concurrency", "0"),
        ("bench_photos", "--duration", "0"),
        ("bench_photos", "--warmup", "-1"),
        ("bench_export", "--seconds", "0"),
        ("bench_score", "--images", "15"),  # 10 scored, 15 reported (bench_score_ray: an AssertionError after a run)
        ("bench_score_ray", "--images", "25"),
        ("bench_score", "--quiet-below", "-1"),  # 0 is "do not wait", as in the other scoring benchmarks
        ("bench_score_models", "--quiet-below", "-1"),
        ("bench_score_ray", "--quiet-below", "-0.5"),  # 0 is "do not wait"
        ("calibration_crossfit", "--seed", "-1"),  # numpy's generators take no negative seed
    ],
)
def test_a_count_or_time_that_makes_no_sense_is_argparses_usage_error(script, flag, value, tmp_path):
    out = tmp_path / "out.json"
    done = _bench(f"bench/{script}.py", *NO_MODELS[script], f"{flag}={value}", "--out", str(out))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "server log" not in done.stderr, done.stderr
    # argparse's usage, then one line naming the flag
    assert [line for line in lines if "error" in line] == [lines[-1]], done.stderr
    assert lines[-1].startswith(f"{script}.py: error: argument {flag}: "), done.stderr
    assert not out.exists()


def _holders(path: str) -> list[int]:
    """The processes that have ``path`` open: the server writes its log there, and so do its workers."""
    pids = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == path for fd in fd_dir.iterdir()):
                pids.append(int(fd_dir.parent.name))
        except OSError:  # gone, or not ours
            continue
    return pids


def test_sigterm_stops_the_server_a_photo_benchmark_started(tmp_path):
    """bench_photos.py starts the service in its own session, out of reach of the signal: only the benchmark's
    own `finally` can stop it."""
    bench = subprocess.Popen(
        [sys.executable, "bench/bench_photos.py", "--sizes", "0.05", "--repeats", "1", "--duration", "120",
         "--concurrency", "1", "--out", str(tmp_path / "out.json")],
        cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    servers: list[int] = []
    try:
        log = ""
        while "server log: " not in log:
            log = bench.stderr.readline()
            assert log or bench.poll() is None, "the benchmark ended before starting the server"
        path = log.split("server log: ", 1)[1].split(" (removed", 1)[0].strip()
        deadline = time.monotonic() + 60
        while not servers:
            assert time.monotonic() < deadline, "the server never started"
            servers = [pid for pid in _holders(path) if pid != bench.pid]  # the benchmark opens it first
            time.sleep(0.1)
        bench.send_signal(signal.SIGTERM)
        bench.communicate(timeout=60)
        assert bench.returncode == 128 + signal.SIGTERM
        assert all(_ended_within(pid, 30) for pid in servers), [p for p in servers if _alive(p)]
    finally:
        if bench.poll() is None:
            bench.kill()
        for pid in servers:
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)


@pytest.mark.parametrize("bug", [lambda: {}["typo"], lambda: int("not a number")])
def test_a_bug_in_a_benchmark_keeps_its_traceback(bug, capsys):
    """A KeyError or ValueError from the benchmark's own code is no user's mistake: it is raised (a traceback,
    status 1), not said in one line with status 2."""
    with pytest.raises((KeyError, ValueError)):
        termination.run(bug)
    assert capsys.readouterr().err == ""


def test_what_the_user_named_wrong_is_one_line_and_status_2(capsys):
    def unknown_model() -> int:
        with termination.user_input():
            raise KeyError("unknown model 'x'; available: a, b")  # as Manifest.get and the registries say it

    def missing_file() -> int:
        raise FileNotFoundError(2, "No such file or directory", "runs/x/best.pt")

    for main, line in (
        (unknown_model, "error: unknown model 'x'; available: a, b\n"),  # without a KeyError's quotes
        (missing_file, "error: runs/x/best.pt: No such file or directory\n"),
    ):
        with pytest.raises(SystemExit) as exit_:
            termination.run(main)
        assert exit_.value.code == 2 and capsys.readouterr().err == line


def test_a_librarys_typed_refusal_is_one_line_and_status_2_without_a_wrapper(capsys):
    """The manifest's and the registries' refusals are UsageErrors (inference.errors): a benchmark says them in
    one line wherever they come from, as training's and export's command lines do."""
    for refusal, line in (
        (ManifestError("no manifest.json in no-such-dir"), "error: no manifest.json in no-such-dir\n"),
        (UnknownModel("unknown model 'x'; available: a"), "error: unknown model 'x'; available: a\n"),
    ):

        def main(refusal=refusal) -> int:
            raise refusal

        with pytest.raises(SystemExit) as exit_:
            termination.run(main)
        assert exit_.value.code == 2 and capsys.readouterr().err == line


def test_user_input_keeps_a_typed_refusals_own_message():
    with pytest.raises(UnknownModel, match="^unknown model 'x'$"):
        with termination.user_input():
            raise UnknownModel("unknown model 'x'")


def test_user_input_takes_only_the_kinds_named():
    with pytest.raises(UsageError, match="no such argument"):
        with termination.user_input(TypeError):
            raise TypeError("no such argument")
    with pytest.raises(KeyError):  # not among the kinds named: a bug
        with termination.user_input(TypeError):
            raise KeyError("typo")


RUN_CHILD_PARENT = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [{root!r}, {bench!r}]
    from termination import run, run_child
    run(lambda: run_child([sys.executable, "-c", {child!r}], grace_s={grace}).returncode)
    """
)

# A child that cleans up when stopped (as the Ray engine's scorer shuts its Ray instance down), taking
# ``cleanup_s``, and has a helper in its process group that it leaves behind (as Ray's agents outlive a
# scorer killed before its cleanup).
CLEANING_CHILD = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    log = open({log!r}, "a", buffering=1)
    def stop(signum, frame):
        log.write(signal.Signals(signum).name + "\\n")
        time.sleep({cleanup_s})
        log.write("cleaned\\n")
        sys.exit(128 + signum)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    log.write(f"started {{helper.pid}}\\n")
    time.sleep(120)
    """
)


def _stop_run_child(tmp_path, send, cleanup_s: float, grace: float) -> tuple[int, list[str], int, float]:
    """(the parent's status, the child's log, its helper's pid, seconds from the signal to the parent's end)."""
    log = tmp_path / "child.log"
    child = CLEANING_CHILD.format(log=str(log), cleanup_s=cleanup_s)
    code = RUN_CHILD_PARENT.format(root=str(ROOT), bench=str(ROOT / "bench"), child=child, grace=grace)
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        # Ctrl-C as in a shell: a test run in the background (`nohup ... &`) ignores SIGINT, and Python keeps an
        # ignored SIGINT ignored, so the parent would never stop
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().endswith("\n")):
        assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.05)
    start = time.monotonic()
    send(parent)
    parent.communicate(timeout=60)
    lines = log.read_text().splitlines()
    return parent.returncode, lines, int(lines[0].split()[1]), time.monotonic() - start


@pytest.mark.parametrize(
    "send, signum",
    [
        (lambda parent: parent.send_signal(signal.SIGTERM), signal.SIGTERM),  # `kill`, `timeout`: the parent alone
        (lambda parent: os.killpg(parent.pid, signal.SIGINT), signal.SIGINT),  # Ctrl-C: the terminal's whole group
    ],
)
def test_a_stopped_child_gets_the_signal_once_and_time_to_clean_up(tmp_path, send, signum):
    """subprocess.run killed the child 0.25 s after the signal, before its cleanup: the Ray engine's scorer
    never shut Ray down, whose processes lingered for a minute. run_child passes the signal on (once: a Ctrl-C
    reaches the child through the benchmark alone) and waits; what the child left in its group goes after."""
    status, lines, helper, seconds = _stop_run_child(tmp_path, send, cleanup_s=1.0, grace=30)
    assert status == 128 + signum
    assert lines[1:] == [signal.Signals(signum).name, "cleaned"]
    assert _ended_within(helper, 10)
    # once the child has ended, not the whole grace: its helper held the pipes open until killed
    assert seconds < 15, seconds


def test_a_child_that_does_not_end_in_its_grace_is_killed_with_its_group(tmp_path):
    status, lines, helper, seconds = _stop_run_child(
        tmp_path, lambda parent: parent.send_signal(signal.SIGTERM), cleanup_s=60, grace=1
    )
    assert status == 128 + signal.SIGTERM and lines[1:] == ["SIGTERM"] and seconds < 20
    assert _ended_within(helper, 10)
