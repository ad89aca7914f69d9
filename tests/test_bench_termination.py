"""A benchmark stopped with SIGTERM ends the child it was waiting on, and says so in one line
(bench/termination.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

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
