"""Running one scoring job: check the arguments, open the engine, stream the rows to the output, summarise."""

from __future__ import annotations

import argparse
import contextlib
import errno
import heapq
import itertools
import logging
import math
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

from inference.interrupts import (
    Handler,
    give_back,
    interrupted_status,
    interrupts_held,
    say_stopped,
    stopped_by,
    stops_dropped,
    take_over_terminations,
)
from inference.messages import counted
from inference.preprocess import IMAGE_EXTENSIONS, is_image_name
from inference.tree_files import unpack_command

from ..settings import THREADS_MAXIMUM, empty_flag_refusal
from .accuracy import FolderAccuracy
from .engines import ENGINE_ONLY_FLAGS, choose_engine
from .errors import StopRun, UserError
from .lock import OutputLock, lock_output
from .pipeline import Backend, chunks
from .sinks import (
    ENCODING,
    OutputError,
    Row,
    confident,
    drop_records,
    format_from_path,
    holds_no_rows,
    make_format,
    resume_output,
)
from .walk import Entry, WalkStats, count_entries, walk

# The output could not be written (a full disk, a read-only file system): told apart from 1 (the service stopped
# answering, --fail-on-error), since what to do differs: make room, then --resume. sysexits.h's EX_IOERR.
OUTPUT_LOST = 74


@dataclass
class Summary:
    scored: int = 0
    unconfident: int = 0  # scored, with a top-1 confidence below --min-confidence
    failed: int = 0
    lost: int = 0  # rows the engine gave that a failed write left out of the output
    resumed: int = 0
    resumed_failed: int = 0  # error rows among the resumed: --fail-on-error counts them too
    resumed_gone: int = 0  # resumed rows whose files the walk no longer found (deleted or moved since)
    resumed_gone_first: list[str] = field(default_factory=list)
    changed: int = 0  # rows --resume dropped, their files changed since the output was written: scored again
    changed_first: str = ""
    formulas: int = 0  # CSV rows whose path a spreadsheet would take for a formula
    formula_first: str = ""
    not_utf8: int = 0  # CSV rows whose path holds bytes that are not UTF-8, written as they are
    not_utf8_first: str = ""
    elapsed: float = 0.0
    walk: WalkStats = field(default_factory=WalkStats)
    failures: list[str] = field(default_factory=list)  # the first few, for the summary

    def text(
        self,
        out: str,
        stopped: str | None = None,
        min_confidence: float | None = None,
        replaced: bool = True,
        resumable: bool = True,
    ) -> str:
        """``stopped``: why the run ended before the last image ("interrupted", a write error), or None.
        ``replaced``: False when --overwrite stopped before its first rows, so ``out`` still holds the old ones.
        ``resumable``: False when ``out`` is no regular file (a pipe, a device), which --resume refuses."""
        done = self.scored + self.failed
        rate = done / self.elapsed if self.elapsed > 0 else 0.0
        scored = f"scored {self.scored}"
        if min_confidence is not None:
            scored += f" ({self.unconfident} below --min-confidence {min_confidence:g})"
        parts = [scored, f"failed {self.failed}", f"skipped {self.walk.skipped} (not images, or hidden)"]
        if self.changed:
            # dropped before the first row is scored: a run stopped since may not have scored them yet
            again = "their old rows dropped" if stopped else "scored again"
            parts.append(f"{self.changed} changed since {out} was written, {again}")
        if self.resumed:
            failed = f", {self.resumed_failed} of them failed" if self.resumed_failed else ""
            # Error rows count as done: --resume scores one again only where its file changed since.
            again = ": --overwrite scores all again" if self.resumed_failed else ""
            parts.append(f"{self.resumed} already in {out} (resumed{failed}){again}")
        lines = [
            (f"{stopped}: " if stopped else "") + ", ".join(parts) + f"; {self.elapsed:.1f} s, {rate:.0f} images/s"
        ]
        for rel in self.walk.linked_dirs_skipped[:5]:
            walked_as = self.walk.linked_dirs_walked_as.get(rel)
            to = f"the folder scored as {shown(walked_as)}/" if walked_as else "a folder it is in (a symlink loop)"
            lines.append(f"not entered {shown(rel)}/: a link to {to}")
        if len(self.walk.linked_dirs_skipped) > 5:
            lines.append(f"... and {len(self.walk.linked_dirs_skipped) - 5} more such links")
        if self.walk.hidden_dirs_skipped:
            lines.append(f"not entered: {_hidden_dirs(self.walk.hidden_dirs_skipped)}")
        if self.failures:
            lines.append("failed files (first few): " + "; ".join(self.failures))
        if self.resumed_gone:
            names = ", ".join(shown(rel) for rel in self.resumed_gone_first)
            more = ", ..." if self.resumed_gone > len(self.resumed_gone_first) else ""
            files = "s a file" if self.resumed_gone == 1 else " files"
            lines.append(
                f"{self.resumed_gone} of the rows already in {out} name{files} no longer under the folder "
                f"(deleted or moved since: {names}{more}): they stay in it; --overwrite scores the folder afresh"
            )
        if self.formulas:
            they, are, them = ("they", "are", "them as formulas") if self.formulas > 1 else ("it", "is", "it as one")
            where = "the CSV" if out == "-" else out
            lines.append(
                f"{self.formulas} file name{'s begin' if self.formulas > 1 else ' begins'} with =, +, -, @, a tab or "
                f"a carriage return ({_first(self.formulas)}{shown(self.formula_first)}), written as {they} {are}: "
                f"a spreadsheet opening {where} may run {them}; import it as text, or score to JSON Lines"
            )
        if self.not_utf8:
            many = self.not_utf8 > 1
            lines.append(
                f"{self.not_utf8} file name{'s are' if many else ' is'} not UTF-8 ({_first(self.not_utf8)}"
                f"{shown(self.not_utf8_first)}), written as {'their' if many else 'its'} bytes: a reader that asks "
                "for UTF-8 refuses that CSV; Python reads the exact bytes back with errors='surrogateescape', from "
                "it or from JSON Lines (whose \\udcXX escapes other JSON readers take for U+FFFD)"
            )
        if self.lost:
            rows = f"{self.lost} more row{'s' if self.lost > 1 else ''}"
            if out == "-" or not resumable:
                lines.append(f"not written, or only in part: {rows}, lost with the write that failed")
            elif not replaced:
                lines.append(f"not written: {rows}, lost with the write that failed")
            else:
                held = self.scored + self.failed + self.resumed
                lines.append(
                    f"not written: {rows}, lost with the write that failed; {out} holds {held} rows, those counted "
                    "above" + (" and the resumed" if self.resumed else "")
                )
        if stopped and out != "-":
            if not replaced:
                lines.append(f"{out} is as it was: it is replaced only once the new rows begin")
            elif resumable:
                lines.append(f"the rows so far are in {out}: rerun with --resume to continue")
            else:
                lines.append(f"the rows so far went to {out}, which --resume cannot read back: rerun to score all")
        return "\n".join(lines)


def _first(count: int) -> str:
    return "the first: " if count > 1 else ""


def shown(path: str) -> str:
    """A file name as part of one line of the summary: a newline or a terminal's escape sequence in it (a name
    may hold any byte but / and NUL) is shown escaped, as is each byte that is not UTF-8 (``\\xff``)."""
    return path if path.isprintable() else "".join(map(_escaped, path))


def _escaped(ch: str) -> str:
    if ch.isprintable():
        return ch
    if 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that is not UTF-8, as surrogateescape decoded it
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return repr(ch)[1:-1]


# What a spreadsheet takes a cell beginning with for a formula (OWASP's list for CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _check_csv_cell(path: str, summary: Summary) -> None:
    """Count a CSV row's path that a spreadsheet would run, or that is not UTF-8 (the summary warns of both)."""
    if path.startswith(FORMULA_STARTS):
        if not summary.formulas:
            summary.formula_first = path
        summary.formulas += 1
    if not path.isascii():
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # surrogateescape's stand-ins for the bytes of a name that does not decode
            if not summary.not_utf8:
                summary.not_utf8_first = path
            summary.not_utf8 += 1


def _hidden_dirs(rels: list[str]) -> str:
    """The hidden folders the walk left out (a viewer's .thumbnails/, .git/), as the training reader leaves them."""
    named = ", ".join(f"{shown(rel)}/" for rel in rels[:5]) + (f" and {len(rels) - 5} more" if len(rels) > 5 else "")
    return f"{named}: hidden, as training's folder reader leaves them"


# Flags whose empty value would be taken for another (dest, flag); --model has its own refusal.
_PATHS = (("out", "--out"), ("models_dir", "--models-dir"), ("url", "--url"), ("address", "--address"))


def _validate(args) -> str:
    """The output format; UserError for bad arguments."""
    # An unset shell variable ("$PHOTOS") would otherwise mean the current folder or the default models folder,
    # or be refused as another engine's flag (an empty --url leaves the local engine chosen).
    if not args.dir.strip():
        raise UserError("DIR is empty: name the folder to score")
    if refused := empty_flag_refusal({flag: getattr(args, dest, None) for dest, flag in _PATHS}):
        raise UserError(refused)
    if not os.path.isdir(args.dir):
        raise UserError(_not_a_folder(args.dir))
    if args.k < 1:
        raise UserError(f"--k must be at least 1, not {args.k}")
    if args.model is not None and not args.model.strip():  # a shell variable never set: not the default, unsaid
        raise UserError("--model is empty: give a model name from the manifest, or leave --model out")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, not {args.workers}")
    if args.workers == 0 and getattr(args, "url", None):  # 0 means decoding in the main process, which --url has not
        raise UserError("--workers with --url is the number of concurrent requests: at least 1, not 0")
    for dest in ("threads", "streams", "actors", "max_pixels"):
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            raise UserError(f"{ENGINE_ONLY_FLAGS[dest].flag} must be at least 1, not {value}")
    if getattr(args, "threads", None) is not None and args.threads > THREADS_MAXIMUM:  # as serve's --threads
        raise UserError(f"--threads must be at most {THREADS_MAXIMUM}, not {args.threads}")
    if getattr(args, "gpus_per_actor", None) is not None and not args.gpus_per_actor > 0:
        raise UserError(f"--gpus-per-actor must be more than 0, not {args.gpus_per_actor}")
    if args.out != "-" and os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a folder")
    named = None if args.out == "-" else format_from_path(args.out)
    if args.format and named and args.format != named:
        raise UserError(f"--format {args.format} contradicts --out {args.out} (a {named} name): drop one of them")
    fmt = args.format or named or ("csv" if args.out == "-" else None)
    if fmt is None:
        raise UserError(f"cannot tell the output format from {args.out!r}: name it .csv or .jsonl, or pass --format")
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < math.inf:
        raise UserError(f"--timeout must be a number of seconds above 0, not {timeout}")
    if args.resume and getattr(args, "overwrite", False):
        raise UserError("--resume keeps the rows in --out, --overwrite replaces them: pass one of them")
    if args.out == "-":
        if args.resume:
            raise UserError("--resume needs --out FILE")
        if sys.stdout is None:  # started with it closed (`>&-`): Python has no standard output to write to
            raise UserError("standard output is closed: give --out FILE")
    else:
        _check_existing_output(args)
        if args.resume and os.path.exists(args.out) and not os.path.isfile(args.out):
            raise UserError(f"--resume needs --out to be a file it can read back; {args.out} is not a regular file")
        _check_writable(args.out, replaces=getattr(args, "overwrite", False) and not holds_no_rows(args.out))
    return fmt


def _not_a_folder(path: str) -> str:
    """Why ``path``, given as DIR, cannot be scored. An archive, which training reads, is to be unpacked: the walk
    reads folders (worded as `service doctor --folder` refuses one)."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    unpack = unpack_command(path) if os.path.isfile(path) else None
    if unpack:
        return f"{path} is an archive, not a folder: unpack it (mkdir DIR && {unpack}) and score DIR"
    return f"{path} is not a folder"


def _check_writable(out: str, replaces: bool) -> None:
    """UserError, worded as when ``_run`` opens ``out``, unless it can be written; checked before any engine
    opens, since Ray takes seconds to start. Tried, not read from permission bits (``os.access``): root passes
    those, and a read-only mount or a pseudo file system (/proc, /sys) refuses what they allow. ``replaces``:
    --overwrite of a file with rows, whose new rows go to a file beside it (``_Replacement``)."""
    if os.path.exists(out) and not replaces:
        if not os.path.isfile(out):
            # a device or a pipe (/dev/stdout), which opening could block on (a FIFO without a reader): only the
            # bits are asked
            if not os.access(out, os.W_OK):
                raise UserError(f"cannot write {out}: {os.strerror(errno.EACCES)}")
            return
        try:
            os.close(os.open(out, os.O_WRONLY))  # neither truncated nor appended to: it stays as it is
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
        return
    # A new file, or the replacement beside one: in the folder of the file a link names, where either is made.
    folder = os.path.dirname(os.path.realpath(out) if replaces or os.path.islink(out) else os.path.abspath(out))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise UserError(f"cannot write {out}: {folder} is a file, not a folder")
        raise UserError(f"cannot write {out}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _check_existing_output(args) -> None:
    """An existing --out is continued (--resume) or replaced (--overwrite), never silently; and never an
    image the run scores, even with --overwrite."""
    if _under(args.out, args.dir) and is_image_name(args.out):
        # A new file too: the walk lists a folder only when it reaches it, after the output was opened, so it
        # would score the run's own rows as an unreadable image.
        being = "is" if os.path.lexists(args.out) else "would be"
        raise UserError(f"--out {args.out} {being} one of the images under {args.dir}: write the rows elsewhere")
    if not os.path.isfile(args.out):
        return  # a new file, or a device, pipe or /dev/null: nothing of the user's is replaced
    if not args.resume and not getattr(args, "overwrite", False) and not holds_no_rows(args.out):
        raise UserError(f"{args.out} exists: --resume continues it, --overwrite replaces it")


def _under(path: str, root: str) -> bool:
    """Whether ``path`` is under ``root``: by its folder (the walk scores a link by its own name), or where it
    leads (what --overwrite replaces)."""
    real_root = os.path.realpath(root)
    named = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    return any(
        real != real_root and os.path.commonpath([real, real_root]) == real_root
        for real in (named, os.path.realpath(path))
    )


class _OutputLost(Exception):
    """Writing the output failed (a full disk, a pipe whose reader has gone): the run cannot go on."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class _Replacement:
    """--overwrite of a file that holds rows: the new rows go to a hidden file beside it, which takes its place
    once it holds the first of them, so a run stopped before then (Ctrl-C while the first batch decodes, a full
    disk) leaves the old rows where they were. A link is followed: the file it names is replaced."""

    def __init__(self, path: str) -> None:
        self.target = os.path.realpath(path)
        folder, name = os.path.split(self.target)
        fd, self.temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        os.close(fd)
        try:
            shutil.copymode(self.target, self.temp)  # mkstemp's 0600 would otherwise become the output's mode
        except OSError:
            pass
        self.done = False

    def commit(self) -> None:
        if not self.done:
            with interrupts_held():  # a stop between the rename and ``done`` would have the summary deny it
                try:
                    os.replace(self.temp, self.target)
                except OSError as exc:
                    raise _OutputLost(exc) from exc
                self.done = True

    def abandon(self) -> None:
        if not self.done:
            try:
                os.unlink(self.temp)
            except OSError:
                pass


def _write(out, text: str) -> None:
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        raise _OutputLost(exc) from exc


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
        fmt_name = _validate(args)
        engine = choose_engine(args)
        summary = Summary()
        entries = _images(args.dir, summary.walk)
        # before the engine opens (Ray takes seconds to start), held until the last row is written
        lock = lock_output(args.out)
        backend = engine.open(args)
        for s, handler in take_over_terminations().items():  # an engine may have set its own (ray.init does)
            previous.setdefault(s, handler)
        status = _run(args, fmt_name, backend, summary, entries, stopping)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status = 2
    except StopRun as exc:  # before scoring started: while --resume scored some of its rows again
        print(f"error: {exc}\nthe rows so far are kept: rerun with --resume to continue", file=sys.stderr)
        status = 1
    except KeyboardInterrupt as exc:  # before scoring started (loading the model, reading back --resume)
        stopping.enter_context(stops_dropped())
        if (failure := _failure_before(exc)) is not None:
            print(f"error: {failure}", file=sys.stderr)
        status = say_stopped(exc, "interrupted")
    except _OutputLost as exc:
        if isinstance(exc.error, BrokenPipeError):
            # The reader has gone (`score DIR | head`): stop quietly, as Unix tools do, and keep Python from
            # complaining when it flushes standard output at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            status = 128 + signal.SIGPIPE
        else:
            print(f"error: cannot write {_output_name(args.out)}: {exc}", file=sys.stderr)
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


# Rows of a resumed file scored again, and how far their top-1 confidence may move: the file holds 6 decimals, and
# another batch size or engine moves a confidence by far less than another model or fit does.
RESUME_CHECK_ROWS = 8
RESUME_TOLERANCE = 1e-3


def _check_same_scoring(backend: Backend, args, written: list[Row], absent: int = 0, first_absent: str = "") -> None:
    """A resumed file must not mix two models' or fits' rows: a few of its rows whose files are still there are
    scored again and compared (their file names and order say nothing of the model that scored them).
    ``absent``: how many scored rows read back before those name files that are not there (the first:
    ``first_absent``); all of them when none is."""
    if not written and absent:
        raise UserError(
            f"cannot resume {args.out}: none of its {absent} scored rows names a file under {args.dir} "
            f"(the first: {first_absent!r}): it was written for another folder, or all its files were moved or "
            "deleted since: rerun with that folder, or score to a new --out (--overwrite would drop its rows)"
        )
    if not written:
        return
    entries = [Entry(row.path, os.path.join(args.dir, row.path)) for row in written]
    # paired by path, not position: an engine may give a chunk's rows in its own order
    again = {row.path: row for rows in backend.rows(chunks(iter(entries), backend.batch_size, set())) for row in rows}
    differ = [
        (old, new)
        for old, new in ((old, again.get(old.path)) for old in written)
        if new is not None
        and new.error is None
        and (
            new.top_k[0].label != old.top_k[0].label
            or abs(new.top_k[0].confidence - old.top_k[0].confidence) > RESUME_TOLERANCE
        )
    ]
    if differ:
        old, new = differ[0]
        raise UserError(
            f"cannot resume {args.out}: {len(differ)} of {len(written)} of its rows scored again differ "
            f"({old.path!r}: {old.top_k[0].label} {old.top_k[0].confidence:.4f} there, {new.top_k[0].label} "
            f"{new.top_k[0].confidence:.4f} now); it was written with another --model, --fit or model file: "
            "rerun with those, or --overwrite"
        )


def _changed_since(path: str, written_ns: int, now_ns: int) -> bool:
    """Whether the file at ``path`` was modified after the output was last written (at ``written_ns``): its row,
    written once it was scored, is then of the file before. A link's own time counts too: one pointed elsewhere
    since names another image. A file no longer there is not (the summary names those rows as gone). Nor is a time
    still to come (``now_ns``): no edit's, but an archive's unpacked in another time zone, or a skewed clock's,
    which would have each resume score such files again from the start."""

    def edited(mtime_ns: int) -> bool:
        return written_ns < mtime_ns <= now_ns

    try:
        st = os.lstat(path)
        return edited(st.st_mtime_ns) or (stat.S_ISLNK(st.st_mode) and edited(os.stat(path).st_mtime_ns))
    except OSError:
        return False


def _count(root: str, stop: threading.Event, resumed: frozenset[str], total: list) -> None:
    try:
        total.append(count_entries(root, stop, resumed))
    except OSError:
        total.append(None)


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
            + (f"; not entered: {_hidden_dirs(hidden)}" if hidden else "")
        )
    return itertools.chain([first], entries)


def _run(
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
    replacement: _Replacement | None = None
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
                if not row.path.endswith("/") and _changed_since(os.path.join(args.dir, row.path), written_at, now):
                    # Not done, and not checked against this run's scores: a changed file says nothing of the model.
                    summary.changed_first = summary.changed_first or row.path
                    summary.changed += 1
                    return False
                done.add(row.path)
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
            _check_same_scoring(backend, args, written, 0 if summary.changed else absent, first_absent)
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
                replacement = _Replacement(args.out)
            path = replacement.temp if replacement else args.out
            out = open(path, "a" if args.resume else "w", newline="", **ENCODING)
        except OSError as exc:
            if replacement is not None:
                replacement.abandon()
            raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.out == "-" or not out.seekable() or out.tell() == 0:  # a pipe or terminal given as a path
        try:
            _write(out, fmt.header())
        except _OutputLost:
            _close(out, args.out)
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
    lost: _OutputLost | None = None
    failure: StopRun | None = None
    # What the output holds of whole rows, in bytes, and the rows being written after them: where a write fails,
    # they say which of those rows the file holds.
    kept = _size(out, args.out)
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
                _check_csv_cell(row.path, summary)

    start = time.perf_counter()
    rows_of = backend.rows(chunks(entries, backend.batch_size, done))
    try:
        for rows in rows_of:
            writing = rows
            _write(out, fmt.format(rows))
            if replacement is not None:
                replacement.commit()
            # A stop before this finds the rows in ``writing``, and the file read back for them; from here on,
            # counted.
            with interrupts_held():
                count(rows)
                writing = []
                kept = _size(out, args.out)
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
        failure = _failure_before(exc)
    except _OutputLost as exc:
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
        _close(out, args.out)
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
            whole = _settle(target, kept, [fmt.format([row]).encode(**ENCODING) for row in writing])
        count(writing[:whole])
        if lost is not None:
            summary.lost = len(writing) - whole
    if lost is not None:
        print(f"error: cannot write {_output_name(args.out)}: {lost}", file=sys.stderr)
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


def _failure_before(stop: KeyboardInterrupt) -> StopRun | None:
    """The failure that had stopped the run when ``stop`` came, while the engine waited for its requests in flight
    (the stop was raised as the failure was handled): said too, though the stop decides how the run ends."""
    failure = stop.__context__
    return failure if isinstance(failure, StopRun) else None


def _size(out, path: str) -> int | None:
    """The size of the output file, all of it written; None for standard output, a pipe or a device, whose
    rows cannot be counted back."""
    if path == "-" or not out.seekable():
        return None
    try:
        return os.fstat(out.fileno()).st_size
    except OSError:
        return None


def _settle(path: str, kept: int, rows: list[bytes]) -> int:
    """How many of ``rows`` (the failed write's, encoded, in order) the file at ``path`` holds whole after its
    first ``kept`` bytes; the file is cut after them, so that it ends with a whole row."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return 0
    end = kept
    whole = 0
    for row in rows:
        if end + len(row) > size:
            break
        end += len(row)
        whole += 1
    if size > end:
        try:
            os.truncate(path, end)
        except OSError:
            pass  # a row cut short stays: --resume drops it
    return whole


def _output_name(path: str) -> str:
    return "standard output" if path == "-" else path


def _close(out, path: str) -> None:
    """Close a file output, flush standard output; a write that fails here was reported by the one before."""
    try:
        if path != "-":
            out.close()
        else:
            out.flush()
    except OSError:
        pass
