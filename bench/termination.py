"""A benchmark stopped with SIGTERM (`kill`, `pkill`, `timeout`) ends what it started.

Python's default SIGTERM action ends the process at once: no `finally`, no `with` exit, so the scorer child of
`subprocess.run` or a server started in its own session keeps running and disturbs whatever is measured next.
Raised as SystemExit, the signal unwinds the stack as Ctrl-C does: `subprocess.run` kills its child and
`finally: stop_server(...)` runs."""

from __future__ import annotations

import signal
from types import FrameType


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def exit_on_sigterm() -> None:
    """Make SIGTERM unwind this process (exit status 143) instead of ending it where it stands."""
    signal.signal(signal.SIGTERM, _exit)
