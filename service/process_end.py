"""How a service process ends: a ``python -m service`` command, and a server worker unable to load its models."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import NoReturn

from inference.interrupts import CAUGHT

# The stops a command answers (Ctrl-C, and the terminations inference/interrupts.py takes over).
STOPS = (signal.SIGINT, *CAUGHT)


def end_process(status: int) -> NoReturn:
    """End a ``python -m service`` process with ``status``. Once Ray is loaded, with os._exit after flushing
    (the output files are closed by then), as Ray ends its own workers: a Ray thread that reaches the core
    worker while it is shut down, at ray.shutdown() or in Ray's exit handler, ends the process with status 1,
    which would replace a Ctrl-C's 130 on a busy machine. Without Ray, the ordinary exit. A stop that arrives from
    here on (``keep_status``) changes neither the status nor the output."""
    keep_status(status)
    if "ray" in sys.modules:
        _flush_standard_streams()
        os._exit(status)
    sys.exit(status)


def keep_status(status: int) -> None:
    """Let no further stop change how the process ends, once ``status`` is decided and said. Python's own exit
    takes a moment (non-daemon threads joined, exit handlers, modules torn down): a Ctrl-C meanwhile would raise a
    KeyboardInterrupt traceback in the join or a handler, or, once Python has given the signal back its default
    action, kill the process by SIGINT (status 130) after the run's summary. Until the exit handlers run, a stop
    ends the process at once with ``status`` (an exit held up by a thread is still ended by Ctrl-C); from then on,
    stops are ignored. Only the main thread may set handlers; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return

    def end_now(signum: int, frame: object) -> None:
        _flush_standard_streams()
        os._exit(status)

    for stop in STOPS:
        if signal.getsignal(stop) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(stop, end_now)
    # Registered last, so run first of the exit handlers: the rest of the exit runs with the stops ignored.
    atexit.register(_ignore_stops)


def _ignore_stops() -> None:
    mp = sys.modules.get("multiprocessing")
    if mp is not None and mp.active_children():
        # multiprocessing's exit handler waits for them, as long as they run: a stop must still end that wait
        return
    for stop in STOPS:
        signal.signal(stop, signal.SIG_IGN)


def end_worker(status: int) -> NoReturn:
    """End a server worker now, from any thread, its log written out first. For a worker that cannot serve: its
    supervisor (BentoML's arbiter) starts another, as it does when the server's start-up fails."""
    logging.shutdown()
    _flush_standard_streams()
    os._exit(status)


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):  # None where closed (>&-)
        if stream is not None:
            # from a stop's handler the stream may be mid-write (RuntimeError: reentrant call) or its reader gone
            with contextlib.suppress(OSError, ValueError, RuntimeError):
                stream.flush()
