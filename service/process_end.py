"""How a service process ends: a ``python -m service`` command, and a server worker unable to load its models."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def end_process(status: int) -> NoReturn:
    """End a ``python -m service`` process with ``status``. Once Ray is loaded, with os._exit after flushing
    (the output files are closed by then), as Ray ends its own workers: a Ray thread that reaches the core
    worker while it is shut down, at ray.shutdown() or in Ray's exit handler, ends the process with status 1,
    which replaced a Ctrl-C's 130 on a busy machine. Without Ray, the ordinary exit."""
    if "ray" in sys.modules:
        _flush_standard_streams()
        os._exit(status)
    sys.exit(status)


def end_worker(status: int) -> NoReturn:
    """End a server worker now, from any thread, its log written out first. For a worker that cannot serve: its
    supervisor (BentoML's arbiter) starts another, as it does when the server's start-up fails."""
    logging.shutdown()
    _flush_standard_streams()
    os._exit(status)


def _flush_standard_streams() -> None:
    for stream in (sys.stdout, sys.stderr):  # None where closed (>&-)
        if stream is not None:
            stream.flush()
