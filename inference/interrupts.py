"""SIGTERM and SIGHUP (a scheduler preempting a job, a closed terminal) answered as Ctrl-C is: the command's own
cleanup runs (a file being written is removed, a run keeps its last checkpoint) and it says where it stopped,
where the default action would end the process on the spot. Torch-free: the scorer uses it too."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from types import FrameType
from typing import Any, Callable, Iterator

# What ``signal.signal`` takes and returns: a function, SIG_DFL or SIG_IGN, or None for one not set from Python.
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

CAUGHT = tuple(s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def interrupted_status(exc: KeyboardInterrupt) -> int:
    """The exit status of a command stopped by ``exc``: 128 + the signal's number, as the shell reports it."""
    return 128 + (exc.signum if isinstance(exc, Terminated) else signal.SIGINT)


def stopped_by(exc: KeyboardInterrupt) -> str:
    """``SIGTERM: `` for a termination, nothing for Ctrl-C: the prefix of the message that follows."""
    return f"{signal.Signals(exc.signum).name}: " if isinstance(exc, Terminated) else ""


def take_over_terminations() -> dict[int, Handler]:
    """SIGTERM and SIGHUP raise ``Terminated`` from now on, except where they are ignored (``nohup`` ignores
    SIGHUP so that a run outlives its terminal: that stays so). Returns the handlers replaced, for
    ``give_back``; nothing where this is not the main thread, which alone may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, raise_terminated) for s in CAUGHT if signal.getsignal(s) is not signal.SIG_IGN}


def give_back(previous: dict[int, Handler]) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler)


def interrupt_within(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or termination behind ``exc``, where a library turned it into an error of its own (torch's
    ONNX exporter, stopped while it imports, reports a failed export); None where there is none."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


@contextlib.contextmanager
def stops_recorded() -> Iterator[list[int]]:
    """The stops (SIGINT, and SIGTERM or SIGHUP where a handler of this process takes them) that arrive within,
    each still handled as before: a native module they land in may turn the stop into an error of its own, with
    nothing to trace it by (pydantic-core building a validator reports a SchemaError), and the caller can still
    tell it for a stop. Nothing is recorded off the main thread, which alone may set handlers."""
    seen: list[int] = []
    previous: dict[int, Handler] = {}
    if threading.current_thread() is threading.main_thread():
        for s in (signal.SIGINT, *CAUGHT):
            handler = signal.getsignal(s)
            if callable(handler):
                previous[s] = signal.signal(s, _recording(handler, seen))
    try:
        yield seen
    finally:
        give_back(previous)


def _recording(handler: Callable[[int, FrameType | None], Any], seen: list[int]) -> Handler:
    def record(signum: int, frame: FrameType | None) -> Any:
        seen.append(signum)
        return handler(signum, frame)

    return record


def stopped_while_importing(exc: BaseException, seen: list[int] | None = None) -> int:
    """The status for a command whose imports ended with ``exc``: a Ctrl-C then, even one that landed in a native
    module (ONNX Runtime's turns it into its ImportError, "initialization failed"; pydantic-core's into a
    SchemaError, which keeps no trace of it: ``seen``, ``stops_recorded``'s, says it came), is an interrupt, said
    in one line; any other error is raised again."""
    stop = interrupt_within(exc)
    if stop is None and seen:
        stop = KeyboardInterrupt() if seen[0] == signal.SIGINT else Terminated(seen[0])
    if stop is None:
        raise exc
    return say_stopped(stop, "interrupted")


def say_stopped(exc: KeyboardInterrupt, message: str) -> int:
    """Print ``message`` (after the signal's name, for a termination) and return the exit status. A closed
    terminal (SIGHUP) takes stderr with it: the message is then lost, not turned into a traceback and exit 1."""
    try:
        print(f"{stopped_by(exc)}{message}", file=sys.stderr, flush=True)
    except OSError:
        pass
    return interrupted_status(exc)


@contextlib.contextmanager
def terminations_as_interrupts() -> Iterator[None]:
    """``take_over_terminations`` within it, the previous handlers back after."""
    previous = take_over_terminations()
    try:
        yield
    finally:
        give_back(previous)


@contextlib.contextmanager
def interrupts_held(on_stop: Callable[[], None] | None = None) -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP held off while the body runs (renames that must happen together), then acted
    on as they would have been: the body is never stopped halfway. ``on_stop`` is called as each stop is held,
    for a body that a stop should hurry (the scorer abandons the requests it waits for). Only the main thread may
    set handlers: elsewhere the body runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []

    def hold(signum: int, _frame: FrameType | None) -> None:
        held.append(signum)
        if on_stop is not None:
            on_stop()

    signals = [s for s in (signal.SIGINT, *CAUGHT) if signal.getsignal(s) not in (signal.SIG_IGN, None)]
    previous = {s: signal.signal(s, hold) for s in signals}
    try:
        yield
    finally:
        give_back(previous)
        if held:
            signal.raise_signal(held[0])  # to the handler it would have met: KeyboardInterrupt, Terminated


@contextlib.contextmanager
def stops_dropped() -> Iterator[None]:
    """For the bounded waits of a run that is stopping already (its streams ending their batch, its engine
    closing, the summary): Ctrl-C, SIGTERM and SIGHUP held off while the body runs, then dropped, so that they cut
    none of it short and the run ends with the first stop's message and status. A stop held while the body
    raised an error of its own is raised, as ``interrupts_held`` raises it."""
    finished = False
    try:
        with interrupts_held():
            yield
            finished = True
    except KeyboardInterrupt:  # the held stop, raised again by interrupts_held once the body is done
        if not finished:
            raise
