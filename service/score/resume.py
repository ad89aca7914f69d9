"""What --resume may trust in the rows already written: those of a file changed since are scored again, and a
few of the others are scored again so that one file never mixes two models' or fits' rows."""

from __future__ import annotations

import os
import stat

from .errors import UserError
from .pipeline import Backend, chunks
from .sinks import Row
from .walk import Entry

# Rows of a resumed file scored again, and how far their top-1 confidence may move: the file holds 6 decimals, and
# another batch size or engine moves a confidence by far less than another model or fit does.
RESUME_CHECK_ROWS = 8
RESUME_TOLERANCE = 1e-3


def check_same_scoring(backend: Backend, args, written: list[Row], absent: int = 0, first_absent: str = "") -> None:
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


def changed_since(path: str, written_ns: int, now_ns: int) -> bool:
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
