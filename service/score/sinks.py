"""Batch-scoring output: CSV or JSON Lines, written a chunk of whole lines at a time, and read back to resume.

CSV columns: ``path, label_1, confidence_1, ..., label_k, confidence_k, error``
(labels and confidences empty on an error row, error empty otherwise).
JSON Lines: ``{"path": ..., "top_k": [{"label", "index", "confidence"}, ...], "error": null|"..."}``
(``top_k`` empty on an error row). Paths are POSIX and relative to the scored folder.
With a ``min_confidence`` threshold, a ``confident`` column before ``error`` (``true``/``false``,
empty on an error row), or a ``"confident"`` key after ``top_k`` (``null`` on an error row); without
one, the output has neither.

A file name that is not valid UTF-8 holds a surrogate escape (U+DC80 to U+DCFF) for each byte that does not
decode. JSON Lines writes each as the JSON escape ``\\udcXX`` (as ``json.dumps`` does with ``ensure_ascii``):
the file stays UTF-8, and ``json.loads`` reads the same key back when resuming. CSV has no escapes: such a
name's bytes are written as they are on disk (``surrogateescape``), so that line of the file is not valid UTF-8,
and reading it back with ``surrogateescape`` gives the same key when resuming. All else is UTF-8.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple, TypedDict

from ..confidence import is_confident


class _Encoding(TypedDict):  # so that ``**ENCODING`` checks as the keywords of open(), str.encode, bytes.decode
    encoding: str
    errors: str


ENCODING: _Encoding = {"encoding": "utf-8", "errors": "surrogateescape"}
FORMATS = ("csv", "jsonl")
# Written as JSON escapes: a lone surrogate has no UTF-8 encoding, and written as its byte it would make the line
# no JSON text. Each is inside a string of the record (JSON's own syntax is ASCII), where an escape reads back as it.
_SURROGATE = re.compile("[\ud800-\udfff]")


class OutputError(ValueError):
    """An existing output file cannot be resumed (another format, another k, or not a score file)."""


class Prediction(NamedTuple):  # a tuple: k are made per image
    label: str
    # Shadows tuple.index, which nothing calls on a Prediction; mypy refuses any field that overrides a method.
    index: int  # type: ignore[assignment]
    confidence: float


@dataclass
class Row:
    path: str
    top_k: list[Prediction] = field(default_factory=list)
    error: str | None = None


def whole(rows: list[Row | None]) -> list[Row]:
    """A chunk's rows, once its engine has given every entry one (a prediction or an error)."""
    given = [row for row in rows if row is not None]
    if len(given) < len(rows):  # an engine's bug: a file without a row would be lost from the output
        raise RuntimeError(f"{len(rows) - len(given)} of {len(rows)} files were given no row")
    return given


def confident(row: Row, min_confidence: float) -> bool:
    return bool(row.top_k) and is_confident(row.top_k[0].confidence, min_confidence)


def _threshold_mismatch(found: bool, what: str) -> str:
    """Why an existing output cannot be resumed when only its ``confident`` column or key differs."""
    if found:
        return f"it has a {what} but this run writes none: rerun with --min-confidence"
    return f"it has no {what} but this run writes one: rerun without --min-confidence"


# Confidences are written to 6 decimals, and marked by their unrounded value: one written this close to the
# threshold may be marked either way.
_ROUNDING = 1e-6


def _other_threshold(row: Row, marked: object, min_confidence: float) -> str | None:
    """Why a resumed row's ``confident`` mark is not this run's threshold's (the file was written with another
    --min-confidence, and its column would mix the two), or None."""
    if row.error is not None or not row.top_k:
        return None
    top = row.top_k[0].confidence
    if (marked is True and top < min_confidence - _ROUNDING) or (
        marked is not True and top >= min_confidence + _ROUNDING
    ):
        return (
            f"it marks confidence {top:g} {'confident' if marked is True else 'not confident'}, which "
            f"--min-confidence {min_confidence:g} does not: it was written with another --min-confidence; rerun "
            "with that, or --overwrite"
        )
    return None


def format_from_path(path: str) -> str | None:
    ext = os.path.splitext(path)[1].lower()
    return {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(ext)


class CsvFormat:
    name = "csv"
    opening = "path,label_1,"  # how every file of this format begins, whatever its k (resume_output)

    def __init__(self, k: int, min_confidence: float | None = None) -> None:
        self.k = k
        self.min_confidence = min_confidence
        self.columns = (
            ["path"]
            + [c for i in range(1, k + 1) for c in (f"label_{i}", f"confidence_{i}")]
            + (["confident"] if min_confidence is not None else [])
            + ["error"]
        )

    def header(self) -> str:
        return self._lines([self.columns])

    def format(self, rows: list[Row]) -> str:
        out = []
        marked = self.min_confidence is not None
        blank = ["", ""] * self.k + ([""] if marked else [])
        for row in rows:
            if row.error is not None:
                out.append([row.path, *blank, row.error])
            else:
                cells = [row.path]
                for p in row.top_k:
                    cells += [p.label, f"{p.confidence:.6f}"]
                cells += ["", ""] * (self.k - len(row.top_k))
                if self.min_confidence is not None:
                    cells.append("true" if confident(row, self.min_confidence) else "false")
                cells.append("")
                out.append(cells)
        return self._lines(out)

    @staticmethod
    def _lines(rows: list[list[str]]) -> str:
        buf = io.StringIO()
        minimal = csv.writer(buf, lineterminator="\n")
        # The writer quotes a field holding its line terminator ("\n") but not a carriage return, which a reader
        # takes as the end of the line: a file name with one is quoted here, so the row reads back whole.
        quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
        for row in rows:
            (quoted if any("\r" in cell for cell in row) else minimal).writerow(row)
        return buf.getvalue()

    def scan(self, lines: Iterator[str]) -> Iterator[Row | None]:
        """Rows of complete ``lines`` (each ending in a newline), after a None for the header.

        OutputError on a foreign or malformed file."""
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            return
        if header != self.columns:
            without = [c for c in header if c != "confident"]
            if without == [c for c in self.columns if c != "confident"]:
                raise OutputError(_threshold_mismatch("confident" in header, "'confident' column"))
            raise OutputError(_header_mismatch(header, self.columns))
        yield None  # the header is whole
        for cells in reader:
            if len(cells) != len(self.columns):
                raise OutputError(f"line {reader.line_num} has {len(cells)} fields, expected {len(self.columns)}")
            error = cells[-1] or None
            top = []
            if error is None:
                for i in range(self.k):
                    label, conf = cells[1 + 2 * i], cells[2 + 2 * i]
                    if label:
                        try:
                            top.append(Prediction(label, -1, float(conf)))
                        except ValueError:
                            raise OutputError(f"line {reader.line_num}: confidence {conf!r} is not a number") from None
            row = Row(cells[0], top, error)
            if self.min_confidence is not None:
                if why := _other_threshold(row, cells[-2] == "true", self.min_confidence):
                    raise OutputError(f"line {reader.line_num}: {why}")
            yield row


def _header_mismatch(found: list[str], expected: list[str]) -> str:
    k_found = sum(c.startswith("label_") for c in found)
    if found[:1] == ["path"] and found[-1:] == ["error"] and k_found:
        k_expected = sum(c.startswith("label_") for c in expected)
        return f"it has top-{k_found} columns but this run writes top-{k_expected}: rerun with --k {k_found}"
    return f"its header {','.join(found)[:120]!r} is not that of a score file"


class JsonlFormat:
    name = "jsonl"
    opening = '{"path": '

    def __init__(self, k: int, exact_k: bool = True, min_confidence: float | None = None) -> None:
        self.k = k
        self.exact_k = exact_k  # False when a service may return fewer than k (it caps k at its class count)
        self.min_confidence = min_confidence

    def header(self) -> str:
        return ""

    def format(self, rows: list[Row]) -> str:
        lines = []
        for row in rows:
            record: dict[str, object] = {
                "path": row.path,
                "top_k": [
                    {"label": p.label, "index": p.index, "confidence": round(p.confidence, 6)} for p in row.top_k
                ],
            }
            if self.min_confidence is not None:
                record["confident"] = None if row.error is not None else confident(row, self.min_confidence)
            record["error"] = row.error
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        return _SURROGATE.sub(lambda found: f"\\u{ord(found[0]):04x}", "".join(lines))

    def scan(self, lines: Iterator[str]) -> Iterator[Row | None]:
        for n, line in enumerate(lines, 1):
            try:
                obj = json.loads(line)
                row = Row(
                    obj["path"],
                    [Prediction(p["label"], p["index"], p["confidence"]) for p in obj["top_k"]],
                    obj["error"],
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise OutputError(f"line {n} is not a score record ({type(exc).__name__}: {exc})") from exc
            marked = self.min_confidence is not None
            if ("confident" in obj) != marked:
                raise OutputError(f"line {n}: " + _threshold_mismatch("confident" in obj, "'confident' field"))
            if self.min_confidence is not None:
                if why := _other_threshold(row, obj["confident"], self.min_confidence):
                    raise OutputError(f"line {n}: {why}")
            if row.error is None and (len(row.top_k) > self.k or self.exact_k and len(row.top_k) != self.k):
                raise OutputError(
                    f"line {n} has top-{len(row.top_k)} predictions but this run writes top-{self.k}: "
                    f"rerun with --k {len(row.top_k)}"
                )
            yield row


def holds_no_rows(path: str) -> bool:
    """An empty file, or only the CSV header (``CsvFormat.header``, any k) that a run stopped before its first
    row leaves: replacing it loses nothing."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:  # unreadable: left alone, as a file with rows is
        return False
    return not head or (head.count(b"\n") == 1 and head.startswith(b"path,label_1,") and head.endswith(b",error\n"))


def make_format(
    name: str, k: int, exact_k: bool = True, min_confidence: float | None = None
) -> CsvFormat | JsonlFormat:
    return CsvFormat(k, min_confidence) if name == "csv" else JsonlFormat(k, exact_k, min_confidence)


def _complete_lines(f, offsets: list[int]) -> Iterator[str]:
    """Decoded lines of a binary file up to its last newline; ``offsets[0]`` tracks the end of the last one read."""
    for raw in f:
        if not raw.endswith(b"\n"):
            return  # a line cut short by a crash or kill: not part of the output
        offsets[0] += len(raw)
        yield raw.decode(**ENCODING)


def resume_output(
    path: str,
    fmt: CsvFormat | JsonlFormat,
    on_row: Callable[[Row], bool | None],
    dropped: list[tuple[int, int]] | None = None,
) -> int:
    """Read an existing output: call ``on_row`` per complete record, drop a trailing partial line.

    Returns the number of records kept. The file is truncated after the last complete
    record (or to nothing when it holds no record, header or not), so appending to it
    continues a valid file. With a ``dropped`` list, a record ``on_row`` returns False for is not kept: where it
    lies in the file, (start, end) in bytes, is added to the list, for ``drop_records``.
    """
    if holds_no_rows(path):
        # A run stopped before its first row: no rows to keep, so none whose --k or --min-confidence must match.
        # Started again, as a file whose first line was cut short is.
        os.truncate(path, 0)
        return 0
    with open(path, "rb") as f:
        other = JsonlFormat.opening if fmt.name == "csv" else CsvFormat.opening
        if f.read(len(other)) == other.encode():
            found, writes = ("JSON Lines", "CSV") if fmt.name == "csv" else ("CSV", "JSON Lines")
            raise OutputError(
                f"it holds {found} rows and this run writes {writes}: resume it with --format "
                f"{'jsonl' if fmt.name == 'csv' else 'csv'} (under a name of that format), or --overwrite it"
            )
    offsets = [0]
    good = count = 0
    with open(path, "rb") as f:
        lines = _complete_lines(f, offsets)
        rows = fmt.scan(lines)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                if next(lines, None) is None:
                    break  # a quoted field cut short at the end of the file
                raise OutputError(f"not a CSV score file ({exc})") from exc
            if row is not None:
                if on_row(row) is False and dropped is not None:
                    dropped.append((good, offsets[0]))
                else:
                    count += 1
            good = offsets[0]
        if good == 0:
            # Not one whole line to tell what the file is: what would be dropped must be the start of a score file
            # (a run stopped in its first write), not the only line of another file given as --out by mistake.
            f.seek(0)
            head = f.read(120).decode(**ENCODING)
            if head[: len(fmt.opening)] != fmt.opening[: len(head)]:
                raise OutputError(f"it is not a score file: it begins {head!r}")
    before = os.stat(path)
    if before.st_size != good:
        os.truncate(path, good)
        # Cutting a half-written line off writes no row: the file keeps the time its rows were written, which a
        # resume stopped or refused before it wrote one would otherwise move past the files changed since.
        with contextlib.suppress(OSError):  # another user's file, group-writable: its time moves, as before
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    return count


def drop_records(path: str, spans: list[tuple[int, int]]) -> None:
    """Write the output at ``path`` again without the records at ``spans`` (``resume_output``'s, in order): to a
    file beside it, which then takes its place, so that a run stopped meanwhile leaves the one or the other whole.
    A link is followed: the file it names is replaced. OSError where that file cannot be made or written."""
    target = os.path.realpath(path)
    folder, name = os.path.split(target)
    fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    try:
        with os.fdopen(fd, "wb") as dst, open(target, "rb") as src:
            at = 0
            for start, end in spans:
                _copy(src, dst, start - at)
                src.seek(end)
                at = end
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())  # the rows it leaves out are gone once it takes the old file's place
        with contextlib.suppress(OSError):
            shutil.copymode(target, temp)  # mkstemp's 0600 would otherwise become the output's mode
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _copy(src, dst, size: int) -> None:
    """``size`` bytes from ``src``'s position to ``dst``, a block at a time (an output may hold millions of rows)."""
    while size > 0:
        block = src.read(min(size, 1 << 20))
        if not block:
            return
        dst.write(block)
        size -= len(block)
