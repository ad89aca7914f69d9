"""How a benchmark ends: stopped with Ctrl-C, SIGTERM or SIGHUP (`kill`, `pkill`, `timeout`), it ends what it
started; given a bad name or path, it says so in one line.

Python's default SIGTERM action ends the process where it stands: no `finally`, no `with` exit, so the scorer
child of `subprocess.run` or a server started in its own session keeps running and disturbs whatever is
measured next. Answered as Ctrl-C is (inference/interrupts.py), the signal unwinds the stack: `subprocess.run`
kills its child and `finally: stop_server(...)` runs."""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from inference.interrupts import say_stopped, terminations_as_interrupts
from inference.messages import os_error_text


def run(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status, or with 128 + the signal's number and one line when stopped, or with 2
    and one line for what the user named wrong: an unknown model or recipe (KeyError, or a ValueError such as
    ManifestError and ConfigError), a missing file."""
    with terminations_as_interrupts():
        try:
            status = main()
        except KeyboardInterrupt as exc:
            status = say_stopped(exc, "benchmark stopped; no results written")
        except (KeyError, ValueError, OSError) as exc:
            if isinstance(exc, OSError):
                text = os_error_text(exc)
            else:  # a KeyError's str() is its message in quotes
                text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            print(f"error: {text}", file=sys.stderr)
            status = 2
    sys.exit(status)
