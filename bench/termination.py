"""How a benchmark ends: stopped with Ctrl-C, SIGTERM or SIGHUP (`kill`, `pkill`, `timeout`), it ends what it
started; given a bad name or path, it says so in one line; a bug keeps its traceback.

Python's default SIGTERM action ends the process where it stands: no `finally`, no `with` exit, so the scorer
child of `subprocess.run` or a server started in its own session keeps running and disturbs whatever is
measured next. Answered as Ctrl-C is (inference/interrupts.py), the signal unwinds the stack: `subprocess.run`
kills its child, `run_child` passes the signal on to its own, and `service_runs.serving` stops its server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Callable, Iterator, NoReturn

from inference.errors import UsageError
from inference.interrupts import Terminated, say_stopped, terminations_as_interrupts
from inference.messages import os_error_text

# How long a stopped child may take to clean up after itself: the Ray engine's scorer shuts its local Ray
# instance down in a few seconds, more on two busy cores.
CHILD_GRACE_S = 30.0


@contextlib.contextmanager
def user_input(*kinds: type[Exception]) -> Iterator[None]:
    """Around a lookup of what the user named: the libraries refuse an unknown model, recipe or device with a
    KeyError or ValueError (ManifestError, ConfigError, ...), or with ``kinds`` where given, which become a
    UsageError here and only here."""
    caught = kinds or (KeyError, ValueError)
    try:
        yield
    except UsageError:  # typed already (ManifestError, UnknownModel, ...): its message is the one to say
        raise
    except caught as exc:
        # a KeyError's str() is its message in quotes
        raise UsageError(exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)) from exc


def run(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main()``'s status, or with 128 + the signal's number and one line when stopped, or with 2
    and one line for a UsageError (inference.errors: what the user named wrong, the libraries' typed refusals
    included) or an OSError (a missing file, an unwritable --out). Anything else, a bare KeyError or ValueError
    too, is a bug and is raised: a traceback and status 1."""
    with terminations_as_interrupts():
        try:
            status = main()
        except KeyboardInterrupt as exc:
            status = say_stopped(exc, "benchmark stopped; no results written")
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
        except OSError as exc:
            print(f"error: {os_error_text(exc)}", file=sys.stderr)
            status = 2
    sys.exit(status)


def run_child(cmd: list[str], grace_s: float = CHILD_GRACE_S, **popen) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True)`` for a child that cleans up after itself when
    stopped. Stopped, ``subprocess.run`` kills its child 0.25 s on, too soon for the Ray engine's scorer to shut
    its Ray instance down, whose agents would outlive it. Here the child gets the signal the benchmark got
    and ``grace_s`` to end; then its process group, Ray's processes included, is killed. The child runs in a
    session of its own, so that a Ctrl-C at the terminal reaches it once, from here."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **popen
    ) as child:
        try:
            out, err = child.communicate()
        except KeyboardInterrupt as exc:
            try:
                child.send_signal(exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
                _wait_for(child, grace_s)
            finally:
                _kill_group(child)
            raise
        except BaseException:
            _kill_group(child)
            raise
    return subprocess.CompletedProcess(cmd, child.returncode, out, err)


def _wait_for(child: subprocess.Popen, grace_s: float) -> None:
    """Until the child has ended, at most ``grace_s``, its pipes drained meanwhile (a child blocked writing to a
    full pipe would never end). Not until the pipes close: a process the child started holds them open, and would
    keep the benchmark waiting the whole grace after the child is gone."""
    deadline = time.monotonic() + grace_s
    while child.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.communicate(timeout=min(0.2, max(0.0, deadline - time.monotonic())))


def _kill_group(child: subprocess.Popen) -> None:
    """The child and what it started in its process group (it leads it: ``start_new_session``), which may
    outlive it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
