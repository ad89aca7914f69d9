"""How a service process ends: a ``python -m service`` command, and a server worker told to stop or unable to load."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any, NoReturn


def end_process(status: int) -> NoReturn:
    """End a ``python -m service`` process with ``status``. Once Ray is loaded, with os._exit after flushing
    (the output files are closed by then), as Ray ends its own workers: a Ray thread that reaches the core
    worker while it is shut down, at ray.shutdown() or in Ray's exit handler, ends the process with status 1,
    which replaced a Ctrl-C's 130 on a busy machine. Without Ray, the ordinary exit."""
    if "ray" in sys.modules:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)


def end_worker(status: int) -> NoReturn:
    """End a server worker now, from any thread, its log written out first. For a worker that cannot serve: its
    supervisor (BentoML's arbiter) starts another, as it does when the server's start-up fails."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


class StopSignals:
    """Whether this process has been told to stop. A worker's first SIGTERM or SIGINT lets it finish its requests,
    queued ones included; a second Ctrl-C (or a grace period running out) cancels those still queued, and their
    answer should say the worker is stopping rather than why a queue refuses work."""

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.received: int | None = None
        self._watching = False

    def watch(self) -> None:
        """Note each stop signal, then hand it to the handler that was there (uvicorn's, in a worker). Signal
        handlers are set from the main thread only: elsewhere (a test's thread), nothing is watched."""
        if self._watching or threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            signal.signal(signum, functools.partial(self._note, signal.getsignal(signum)))
        self._watching = True

    def _note(self, previous: Any, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # what the signal did before: end the process
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)


# Signals reach a process, not an object: one watcher for the worker.
STOP_SIGNALS = StopSignals()
