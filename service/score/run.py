"""One scoring job, from its arguments to its exit status: the engine and the output's lock opened and always
closed, and each way the job can end early (a refused argument, a stop, an output that cannot be written)
said in one line with its status."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import signal
import sys
from typing import Iterator

from inference.image_formats import IMAGE_EXTENSIONS
from inference.interrupts import Handler, give_back, interrupts_held, say_stopped, stops_dropped, take_over_terminations
from inference.messages import counted

from .arguments import validate
from .engines import choose_engine
from .errors import StopRun, UserError
from .lock import OutputLock, lock_output
from .loop import failure_before, score_rows
from .output import OUTPUT_LOST, OutputLost, output_name
from .pipeline import Backend
from .sinks import ENCODING
from .summary import Summary, hidden_dirs
from .walk import Entry, WalkStats, walk


def run(args: argparse.Namespace) -> int:
    if sys.stderr is None:
        # Started with it closed (`2>&-`): the progress bar would fail on it after the header, and print() to None
        # writes to standard output, into the rows. The rows matter more than the messages.
        sys.stderr = open(os.devnull, "w", **ENCODING)
    previous = take_over_terminations()
    try:
        # Once a stop has ended the run, the stops after it are held off and dropped (``stopping`` then holds
        # ``stops_dropped``) until the run has said where it stopped and closed its engine: a second Ctrl-C would
        # cut those short with a traceback, and the status is the first stop's.
        with _library_warnings_said(), contextlib.ExitStack() as stopping:
            return _job(args, previous, stopping)
    finally:
        give_back(previous)


class _Said(logging.Handler):
    """A log record as the scorer's own lines are written: ``warning: ...`` on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr, flush=True)
        except Exception:  # as logging's own handlers: a record that cannot be written never stops the run
            self.handleError(record)


@contextlib.contextmanager
def _library_warnings_said() -> Iterator[None]:
    """The warnings the shared code logs (``inference``: onnxruntime.preload_dlls() failing on a GPU host), said
    as the scorer's other warnings are: the scorer configures no logging, and Python's last-resort handler
    would print them bare. The service logs them through its own setup."""
    logger = logging.getLogger("inference")
    handler = _Said(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def _job(args: argparse.Namespace, previous: dict[int, Handler], stopping: contextlib.ExitStack) -> int:
    backend = None
    lock: OutputLock | None = None
    try:
        fmt_name = validate(args)
        engine = choose_engine(args)
        summary = Summary()
        entries = _images(args.dir, summary.walk)
        # before the engine opens (Ray takes seconds to start), held until the last row is written
        lock = lock_output(args.out)
        backend = engine.open(args)
        for s, handler in take_over_terminations().items():  # an engine may have set its own (ray.init does)
            previous.setdefault(s, handler)
        status = score_rows(args, fmt_name, backend, summary, entries, stopping)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except StopRun as exc:  # before scoring started: while --resume scored some of its rows again
        print(f"error: {exc}\nthe rows so far are kept: rerun with --resume to continue", file=sys.stderr)
        status = 1
    except KeyboardInterrupt as exc:  # before scoring started (loading the model, reading back --resume)
        stopping.enter_context(stops_dropped())
        if (failure := failure_before(exc)) is not None:
            print(f"error: {failure}", file=sys.stderr)
        status = say_stopped(exc, "interrupted")
    except OutputLost as exc:
        if isinstance(exc.error, BrokenPipeError):
            # The reader has gone (`score DIR | head`): stop quietly, as Unix tools do, and keep Python from
            # complaining when it flushes standard output at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            status = 128 + signal.SIGPIPE
        else:
            print(f"error: cannot write {output_name(args.out)}: {exc}", file=sys.stderr)
            status = OUTPUT_LOST
    finally:
        late = _closed(backend, lock)
    if late is not None:  # a stop while the engine closed, none having stopped the run before it
        return say_stopped(late, "interrupted")
    return status


def _closed(backend: Backend | None, lock: OutputLock | None) -> KeyboardInterrupt | None:
    """Close the engine and release the output's lock, neither cut short: a stop meanwhile is held off until both
    are done, then returned (None where none came, or where ``stops_dropped`` dropped it)."""
    try:
        with interrupts_held():
            if backend is not None:
                backend.close()
            if lock is not None:
                lock.release()
    except KeyboardInterrupt as stop:  # the held stop, raised again once both are done
        return stop
    return None


def _images(root: str, stats: WalkStats) -> Iterator[Entry]:
    """The walk of ``root``, its first image found: UserError where it holds none, before the engine opens (the
    local one loads its model and forks its decoders, Ray starts) and before the output is opened (a wrong folder
    replaces no file)."""
    try:
        entries = walk(root, stats)
        first = next(entries, None)
    except OSError as exc:
        raise UserError(f"cannot read {root}: {exc.strerror or exc}") from None
    if first is None:
        hidden = stats.hidden_dirs_skipped
        raise UserError(
            f"no image files under {root} ({counted(stats.skipped, 'other file')} skipped; "
            f"image extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})"
            + (f"; not entered: {hidden_dirs(hidden)}" if hidden else "")
        )
    return itertools.chain([first], entries)
