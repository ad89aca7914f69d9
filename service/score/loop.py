"""The run loop, the same whatever the engine: --resume's rows read back, the engine's rows written to the
output a chunk at a time and counted, and the summary said with the job's exit status, however it stopped."""

from __future__ import annotations

import contextlib
import heapq
import os
import sys
import threading
import time
from typing import Iterator

from inference.interrupts import interrupted_status, interrupts_held, stopped_by, stops_dropped
from inference.messages import counted

from .accuracy import FolderAccuracy
from .errors import StopRun, UserError
from .output import OUTPUT_LOST, OutputLost, Replacement, close_output, output_name, output_size, settle, write
from .pipeline import Backend, chunks
from .resume import RESUME_CHECK_ROWS, changed_since, check_same_scoring
from .sinks import ENCODING, OutputError, Row, confident, drop_records, holds_no_rows, make_format, resume_output
from .summary import Summary, check_csv_cell, shown
from .walk import Entry, count_entries


def _count(root: str, stop: threading.Event, resumed: frozenset[str], total: list) -> None:
    try:
        total.append(count_entries(root, stop, resumed))
    except OSError:
        total.append(None)


def score_rows(
    args, fmt_name: str, backend: Backend, summary: Summary, entries: Iterator[Entry], stopping: contextlib.ExitStack
) -> int:
    from tqdm import tqdm

    k = min(args.k, len(backend.classes)) if backend.classes else args.k
    backend.k = k
    fmt = make_format(fmt_name, k, exact_k=backend.classes is not None, min_confidence=args.min_confidence)
    accuracy = None
    if args.labels_from_folders:
        accuracy = FolderAccuracy(
            backend.classes, os.path.basename(os.path.abspath(args.dir)), backend.name or "(the service's default)"
        )

    done: set[str] = set()
    written: list[Row] = []  # the first few rows --resume keeps, scored again to check they are this run's
    absent, first_absent = 0, ""  # rows --resume keeps, met before those, whose files are gone: none to check
    replacement: Replacement | None = None
    if args.out == "-":
        out = open(sys.stdout.fileno(), "w", closefd=False, newline="", **ENCODING)
    else:
        if args.resume and os.path.exists(args.out):
            # Read before the rows are: reading them back may cut a half-written line off, which moves it.
            written_at = os.stat(args.out).st_mtime_ns
            now = time.time_ns()
            stale: list[tuple[int, int]] = []  # where the rows of files changed since lie in it

            def keep(row: Row) -> bool:
                nonlocal absent, first_absent
                if not row.path.endswith("/") and changed_since(os.path.join(args.dir, row.path), written_at, now):
                    # Not done, and not checked against this run's scores: a changed file says nothing of the model.
                    summary.changed_first = summary.changed_first or row.path
                    summary.changed += 1
                    return False
                done.add(row.path)
                # Counted as the resumed error rows are: the summary's figures are the whole output's.
                if row.error is None and args.min_confidence is not None and not confident(row, args.min_confidence):
                    summary.resumed_unconfident += 1
                if row.error is not None:
                    summary.resumed_failed += 1
                elif len(written) < RESUME_CHECK_ROWS:
                    # Files deleted or moved since (a subfolder that sorted first) must not make the check
                    # find nothing to compare and take the file for another folder's.
                    if os.path.lexists(os.path.join(args.dir, row.path)):
                        written.append(row)
                    else:
                        first_absent = first_absent or row.path
                        absent += 1
                if accuracy is not None:
                    accuracy.add(row)
                return True

            try:
                summary.resumed = resume_output(args.out, fmt, keep, stale)
            except OutputError as exc:
                raise UserError(f"cannot resume {args.out}: {exc}") from None
            except OSError as exc:
                raise UserError(f"cannot resume {args.out}: {exc.strerror or exc}") from None
            # A changed file is under the folder all the same: rows naming only such files are not another folder's.
            check_same_scoring(backend, args, written, 0 if summary.changed else absent, first_absent)
            if stale:  # after the check, so that a file it refuses is left as it was
                try:
                    drop_records(args.out, stale)
                except OSError as exc:
                    raise UserError(
                        f"cannot resume {args.out}: the rows of {counted(summary.changed, 'file')} changed since it "
                        f"was written (the first: {summary.changed_first!r}) are dropped by writing it again beside "
                        f"itself, which failed: {exc.strerror or exc}; score to a new --out"
                    ) from None
        try:
            if getattr(args, "overwrite", False) and os.path.isfile(args.out) and not holds_no_rows(args.out):
                replacement = Replacement(args.out)
            path = replacement.temp if replacement else args.out
            out = open(path, "a" if args.resume else "w", newline="", **ENCODING)
        except OSError as exc:
            if replacement is not None:
                replacement.abandon()
            raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.out == "-" or not out.seekable() or out.tell() == 0:  # a pipe or terminal given as a path
        try:
            write(out, fmt.header())
        except OutputLost:
            close_output(out, args.out)
            if replacement is not None:
                replacement.abandon()
            raise

    stop = threading.Event()
    total: list[tuple[int, int] | None] = []  # the folder's images, and how many of them the resumed rows name
    bar = tqdm(
        total=None,
        initial=summary.resumed,
        unit="img",
        file=sys.stderr,
        dynamic_ncols=True,
        disable=True if args.no_progress else None,
        smoothing=0.05,
        desc="scoring",
    )
    if not bar.disable:  # the total is only for the bar's ETA: the second walk is not free (docs/measurements.md)
        # A copy of the resumed names: the walk takes each out of ``done`` as it passes it.
        counting = (args.dir, stop, frozenset(done), total)
        threading.Thread(target=_count, args=counting, daemon=True, name="score-count").start()
    interrupted: KeyboardInterrupt | None = None
    lost: OutputLost | None = None
    failure: StopRun | None = None
    # What the output holds of whole rows, in bytes, and the rows being written after them: where a write fails,
    # they say which of those rows the file holds.
    kept = output_size(out, args.out)
    writing: list[Row] = []

    def count(rows: list[Row]) -> None:
        for row in rows:
            if row.error is None:
                summary.scored += 1
                if args.min_confidence is not None and not confident(row, args.min_confidence):
                    summary.unconfident += 1
            else:
                summary.failed += 1
                if len(summary.failures) < 3:
                    summary.failures.append(f"{shown(row.path)}: {row.error}")
            if accuracy is not None:
                accuracy.add(row)
            if fmt.name == "csv":
                check_csv_cell(row.path, summary)

    start = time.perf_counter()
    rows_of = backend.rows(chunks(entries, backend.batch_size, done))
    try:
        for rows in rows_of:
            writing = rows
            write(out, fmt.format(rows))
            if replacement is not None:
                replacement.commit()
            # A stop before this finds the rows in ``writing``, and the file read back for them; from here on,
            # counted.
            with interrupts_held():
                count(rows)
                writing = []
                kept = output_size(out, args.out)
            if bar.total is None and total and total[0] is not None:
                # The rows the output holds once the walk has ended: the bar starts at the resumed ones, and those
                # whose files are gone stay in it.
                images, named = total[0]
                bar.total = images + summary.resumed - named
            bar.update(len(rows))
            if summary.failed:
                bar.set_postfix(failed=summary.failed, refresh=False)
        # The walk has ended: what is left of the resumed rows names files it did not find ("dir/": a folder
        # that could not be listed then, whose files it has now scored).
        gone = [rel for rel in done if not rel.endswith("/")]
        summary.resumed_gone = len(gone)
        summary.resumed_gone_first = heapq.nsmallest(3, gone)
    except KeyboardInterrupt as exc:
        stopping.enter_context(stops_dropped())
        interrupted = exc
        failure = failure_before(exc)
    except OutputLost as exc:
        lost = exc
    except StopRun as exc:  # here, not in run(): the summary knows whether there are rows to resume
        failure = exc
    finally:
        # Closed here, on this thread, however the loop ended: a stop or a failed write between two rows has the
        # engine end its requests now, and say so, before the summary (left to the garbage collector, the engine's
        # generator could be closed on one of its own threads, which cannot join itself).
        ended = _end_rows(rows_of, interrupted)
        if ended is not None:  # a stop while the engine waited for its requests after a failed write
            stopping.enter_context(stops_dropped())
            interrupted = ended
        summary.elapsed = time.perf_counter() - start
        stop.set()
        bar.close()
        close_output(out, args.out)
        if replacement is not None:
            replacement.abandon()
    if lost is not None and isinstance(lost.error, BrokenPipeError):
        raise lost
    if (lost is not None or interrupted is not None) and writing:
        # The closed file holds whatever of the failed or stopped write reached the disk (the close flushes once
        # more): its whole rows are counted as written, and a row cut short is cut off, so the file and the summary
        # agree.
        target = replacement.target if replacement is not None else args.out
        whole = 0
        if (replacement is None or replacement.done) and kept is not None:
            whole = settle(target, kept, [fmt.format([row]).encode(**ENCODING) for row in writing])
        count(writing[:whole])
        if lost is not None:
            summary.lost = len(writing) - whole
    if lost is not None:
        print(f"error: cannot write {output_name(args.out)}: {lost}", file=sys.stderr)
    if failure is not None:
        print(f"error: {failure}", file=sys.stderr)
    stopped = f"{stopped_by(interrupted)}interrupted" if interrupted else "stopped" if lost or failure else None
    replaced = replacement is None or replacement.done
    resumable = os.path.isfile(args.out)
    print(summary.text(args.out, stopped, args.min_confidence, replaced, resumable), file=sys.stderr)
    if accuracy is not None:
        print(accuracy.report(), file=sys.stderr)
    if interrupted:
        return interrupted_status(interrupted)
    if lost:
        return OUTPUT_LOST
    # A file that failed before an interruption is as unscored as one that failed now: a resumed run's status
    # must not depend on where the first run stopped.
    return 1 if failure or (args.fail_on_error and (summary.failed or summary.resumed_failed)) else 0


def _end_rows(rows_of: Iterator[list[Row]], stop: KeyboardInterrupt | None) -> KeyboardInterrupt | None:
    """Close the engine's rows; ``stop``, the one that stopped the run between two rows, is thrown into them
    first, so that an engine that says its wait for the requests in flight says what abandons them after it (a
    SIGTERM's run may have no terminal for a Ctrl-C). Returns the stop that ended that wait where none had stopped
    the run (a failed write closed the rows): the run's stop, for its message and status."""
    throw = getattr(rows_of, "throw", None)
    if stop is not None and throw is not None:
        try:
            throw(stop)
        except StopIteration:  # rows that ended on it
            pass
        except KeyboardInterrupt as raised:  # the stop, through the engine's cleanup
            if raised is not stop:
                raise
    close = getattr(rows_of, "close", None)
    if close is not None:
        try:
            close()
        except KeyboardInterrupt as ended:
            if stop is not None:
                raise
            return ended
    return None


def failure_before(stop: KeyboardInterrupt) -> StopRun | None:
    """The failure that had stopped the run when ``stop`` came, while the engine waited for its requests in flight
    (the stop was raised as the failure was handled): said too, though the stop decides how the run ends."""
    failure = stop.__context__
    return failure if isinstance(failure, StopRun) else None
