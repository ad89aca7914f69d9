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
        ["bench/bench_export.py", "--fp32", "no-such-model"],
        ["bench/bench_training.py", "--steps", "0"],  # the time of no steps: no figure at all
        ["bench/bench_score.py", "--images", "5"],  # a tenth of 5 per class: no image
        ["bench/bench_service.py", "--routes", "classify,v3"],
    ],
)
def test_a_users_mistake_is_one_line_and_status_2(args, tmp_path):
    done = _bench(*args, "--out", str(tmp_path / "out.json"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error: " in done.stderr.strip().splitlines()[-1], done.stderr
    assert "server log" not in done.stderr  # refused before a server was started that it would leave behind
    assert not (tmp_path / "out.json").exists()


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
        path = log.split("server log: ", 1)[1].strip()
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
