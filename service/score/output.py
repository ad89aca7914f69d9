"""Writing the rows to --out so that a failed or stopped write leaves a file and a summary that agree:
--overwrite's new rows beside the old until the first are written, a failed write as one exception, and the
file cut back to its whole rows."""

from __future__ import annotations

import os
import shutil
import tempfile

from inference.interrupts import interrupts_held

# The output could not be written (a full disk, a read-only file system): told apart from 1 (the service stopped
# answering, --fail-on-error), since what to do differs: make room, then --resume. sysexits.h's EX_IOERR.
OUTPUT_LOST = 74


class OutputLost(Exception):
    """Writing the output failed (a full disk, a pipe whose reader has gone): the run cannot go on."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class Replacement:
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
                    raise OutputLost(exc) from exc
                self.done = True

    def abandon(self) -> None:
        if not self.done:
            try:
                os.unlink(self.temp)
            except OSError:
                pass


def write(out, text: str) -> None:
    try:
        out.write(text)
        out.flush()
    except OSError as exc:
        raise OutputLost(exc) from exc


def output_size(out, path: str) -> int | None:
    """The size of the output file, all of it written; None for standard output, a pipe or a device, whose
    rows cannot be counted back."""
    if path == "-" or not out.seekable():
        return None
    try:
        return os.fstat(out.fileno()).st_size
    except OSError:
        return None


def settle(path: str, kept: int, rows: list[bytes]) -> int:
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


def output_name(path: str) -> str:
    return "standard output" if path == "-" else path


def close_output(out, path: str) -> None:
    """Close a file output, flush standard output; a write that fails here was reported by the one before."""
    try:
        if path != "-":
            out.close()
        else:
            out.flush()
    except OSError:
        pass
