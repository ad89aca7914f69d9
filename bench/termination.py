"""A benchmark stopped with Ctrl-C, SIGTERM or SIGHUP (`kill`, `pkill`, `timeout`) ends what it started.

Python's default SIGTERM action ends the process where it stands: no `finally`, no `with` exit, so the scorer
child of `subprocess.run` or a server started in its own session keeps running and disturbs whatever is
measured next. Answered as Ctrl-C is (inference/interrupts.py), the signal unwinds the stack: `subprocess.run`
kills its child and `finally: stop_server(...)` runs."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from inference.interrupts import say_stopped, terminations_as_interrupts


def run(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status, or with 128 + the signal's number and one line when stopped."""
    with terminations_as_interrupts():
        try:
            status = main()
        except KeyboardInterrupt as exc:
            status = say_stopped(exc, "benchmark stopped; no results written")
    sys.exit(status)
