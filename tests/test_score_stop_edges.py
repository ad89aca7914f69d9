"""Stopping the local batch scorer twice, or at the edges of a run: while its inference streams end their batch,
while its engine closes, while its model loads. Each ends in its one message and the first stop's status, and the
output completes with --resume.

Real scorer processes and real signals. Where a signal must land is made certain, not timed: a hook in the process
(``_DRIVER``) says when it has reached that place (a file) and waits there for the test's go-ahead (another)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from inference.interrupts import stops_dropped

IMAGES = 24

# ``python -m service ARGS`` with hooks (STOP_HOOKS names them): "stream" holds the first batch's inference until
# the main thread waits for the streams to end (the run is stopping), "close" holds the engine's close, "load" the
# model's loading. Each writes a file named for it in STOP_DIR when it is reached and goes on once the test writes
# its "go-" file.
_DRIVER = r"""
import os, sys, threading, time
from pathlib import Path

import inference.runtime as runtime
import service.score.local as local

where = Path(os.environ["STOP_DIR"])
hooks = os.environ["STOP_HOOKS"].split(",")


def reached(name):
    (where / name).touch()
    deadline = time.monotonic() + 60
    while not (where / f"go-{name}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def main_thread_in(function, file="thread.py"):
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        if frame.f_code.co_name == function and frame.f_code.co_filename.endswith(file):
            return True
        frame = frame.f_back
    return False


def wait_for_main_thread_in(function, file="thread.py"):
    deadline = time.monotonic() + 60
    while not main_thread_in(function, file) and time.monotonic() < deadline:
        time.sleep(0.01)
    if not main_thread_in(function, file):
        import faulthandler

        faulthandler.dump_traceback()  # where the main thread is instead, for the test's failure


if "stream" in hooks:
    finish, held = local.LocalBackend.finish, []

    def held_finish(self, chunk, handle):
        if not held and threading.current_thread() is not threading.main_thread():
            held.append(chunk)
            # the stop is sent once the main thread waits for this batch inside the pipeline (not while it writes
            # rows outside it), so that it leaves the pipeline by the wait for the streams
            wait_for_main_thread_in("result", "_base.py")
            (where / "busy").touch()
            wait_for_main_thread_in("shutdown")
            reached("stream")
        return finish(self, chunk, handle)

    local.LocalBackend.finish = held_finish

if "close" in hooks:
    close = local.LocalBackend.close

    def held_close(self):
        reached("close")
        close(self)

    local.LocalBackend.close = held_close

if "load" in hooks:
    load = runtime.OnnxClassifier.__init__

    def held_load(self, *args, **kwargs):
        reached("load")
        load(self, *args, **kwargs)

    runtime.OnnxClassifier.__init__ = held_load

from service.__main__ import main
from service.process_end import end_process

end_process(main(sys.argv[1:]))
"""


@pytest.fixture
def folder(image_folder, tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    sources = sorted(image_folder.rglob("*.png"))
    for i in range(IMAGES):
        shutil.copy(sources[i % len(sources)], root / f"{i:03d}.png")
    return root


def _args(folder: Path, out: Path, *extra: str) -> list[str]:
    # Two streams whatever the cores, so that inference runs on threads of its own that a stop must wait for.
    return ["score", str(folder), "--out", str(out), "--batch-size", "4", "--streams", "2", "--no-progress", *extra]


def _start(tmp_path: Path, args: list[str], hooks: str) -> tuple[subprocess.Popen, Path]:
    where = tmp_path / "hooks"
    where.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-c", _DRIVER, *args],
        cwd=ROOT,
        env={**os.environ, "STOP_DIR": str(where), "STOP_HOOKS": hooks},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as in a shell
    )
    return proc, where


def _reached(where: Path, name: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not (where / name).exists():
        if proc.poll() is not None:
            pytest.fail(f"the scorer ended ({proc.returncode}) before reaching {name!r}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the scorer never reached {name!r}: {proc.communicate()[1]}")
        time.sleep(0.01)


def _go(where: Path, name: str) -> None:
    (where / f"go-{name}").touch()


def _ended(proc: subprocess.Popen) -> list[str]:
    _, err = proc.communicate(timeout=120)
    return [line for line in err.splitlines() if line.strip()]


def _resumed_matches_a_whole_run(folder: Path, out: Path, tmp_path: Path) -> None:
    """--resume completes ``out`` with every image's row once, in order, as a run never stopped writes them."""
    cmd = [sys.executable, "-m", "service"]
    resumed = subprocess.run([*cmd, *_args(folder, out, "--resume")], cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    whole = tmp_path / "whole.csv"
    straight = subprocess.run([*cmd, *_args(folder, whole)], cwd=ROOT, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    with open(out, newline="") as a, open(whole, newline="") as b:
        got, expected = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert [r["path"] for r in got] == [f"{i:03d}.png" for i in range(IMAGES)]
    assert [(r["path"], r["label_1"], r["error"]) for r in got] == [
        (r["path"], r["label_1"], r["error"]) for r in expected
    ]


def _no_failure_said(lines: list[str]) -> None:
    text = "\n".join(lines)
    for said in ("Traceback", "terminate called", "Exception ignored", "leaked", "Fatal Python error"):
        assert said not in text, text


def _ended_as_the_sigterm_ends_it(proc, folder, out, tmp_path) -> None:
    """The run ended with the first stop's (the SIGTERM's) status and message, and --resume completes its rows."""
    lines = _ended(proc)
    _no_failure_said(lines)
    assert proc.returncode == 143, lines
    assert lines[0].startswith("SIGTERM: interrupted: scored "), lines
    assert lines[-1] == f"the rows so far are in {out}: rerun with --resume to continue", lines
    _resumed_matches_a_whole_run(folder, out, tmp_path)


def test_a_ctrl_c_while_the_streams_end_their_batch_leaves_the_first_stops_status(folder, tmp_path):
    """SIGTERM, then Ctrl-C while the streams end the batch they hold: the wait for them is not cut short (which
    left a stream inferring as the process exited: ONNX Runtime's abort, status -6), and the run ends as the
    SIGTERM ends it."""
    out = tmp_path / "preds.csv"
    proc, where = _start(tmp_path, _args(folder, out), "stream")
    _reached(where, "busy", proc)
    proc.send_signal(signal.SIGTERM)
    _reached(where, "stream", proc)  # the main thread waits for the streams
    proc.send_signal(signal.SIGINT)
    _go(where, "stream")
    _ended_as_the_sigterm_ends_it(proc, folder, out, tmp_path)


def test_a_second_stop_while_the_engine_closes_is_dropped(folder, tmp_path):
    """SIGTERM in the run, Ctrl-C while the engine closes: the close ends (its decode workers, its shared memory),
    and the status and message are the SIGTERM's."""
    out = tmp_path / "preds.csv"
    proc, where = _start(tmp_path, _args(folder, out), "stream,close")
    _reached(where, "busy", proc)
    proc.send_signal(signal.SIGTERM)
    _reached(where, "stream", proc)
    _go(where, "stream")
    _reached(where, "close", proc)
    proc.send_signal(signal.SIGINT)
    _go(where, "close")
    _ended_as_the_sigterm_ends_it(proc, folder, out, tmp_path)


def test_a_ctrl_c_after_the_last_row_while_the_engine_closes_is_an_interrupt_said_in_one_line(folder, tmp_path):
    out = tmp_path / "preds.csv"
    proc, where = _start(tmp_path, _args(folder, out), "close")
    _reached(where, "close", proc)
    proc.send_signal(signal.SIGINT)
    _go(where, "close")
    lines = _ended(proc)
    _no_failure_said(lines)
    assert proc.returncode == 130, lines
    assert lines[0].startswith(f"scored {IMAGES}, failed 0"), lines
    assert lines[-1] == "interrupted", lines
    with open(out, newline="") as f:
        assert len(list(csv.DictReader(f))) == IMAGES  # every row was written before it came


def test_two_ctrl_cs_while_the_model_loads_close_the_decode_workers_and_say_one_line(folder, tmp_path):
    """A Ctrl-C while the model loads, a second while the engine closes what it had started (its decode workers):
    one line, 130, and the workers gone with the process, not left to its exit."""
    out = tmp_path / "preds.csv"
    proc, where = _start(tmp_path, _args(folder, out, "--workers", "1"), "load,close")
    _reached(where, "load", proc)
    proc.send_signal(signal.SIGINT)
    _go(where, "load")
    _reached(where, "close", proc)
    proc.send_signal(signal.SIGINT)
    _go(where, "close")
    lines = _ended(proc)
    _no_failure_said(lines)
    assert proc.returncode == 130 and lines == ["interrupted"], lines
    _resumed_matches_a_whole_run(folder, out, tmp_path)


def test_stops_dropped_holds_a_stop_off_then_drops_it_and_gives_the_handlers_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        ran = []
        with stops_dropped():
            signal.raise_signal(signal.SIGINT)  # a KeyboardInterrupt here, without the guard
            ran.append("the rest of the body")
        assert ran == ["the rest of the body"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with pytest.raises(ValueError, match="its own"):  # the body's error is not taken for the stop's
            with stops_dropped():
                raise ValueError("its own")
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
