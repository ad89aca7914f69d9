"""What a scoring job says when it ends: the counts, then one line for each thing the user may have to act on
(links not followed, hidden folders, names a spreadsheet would run, rows lost), file names escaped so that
none can forge a line."""

from __future__ import annotations

from dataclasses import dataclass, field

from .walk import WalkStats


@dataclass
class Summary:
    scored: int = 0
    unconfident: int = 0  # scored, with a top-1 confidence below --min-confidence
    failed: int = 0
    lost: int = 0  # rows the engine gave that a failed write left out of the output
    resumed: int = 0
    resumed_failed: int = 0  # error rows among the resumed: --fail-on-error counts them too
    resumed_unconfident: int = 0  # resumed rows below --min-confidence: the file's count, as resumed_failed is
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
            counts = [f"{self.resumed_failed} of them failed"] if self.resumed_failed else []
            if min_confidence is not None and self.resumed_unconfident:
                counts.append(f"{self.resumed_unconfident}{'' if counts else ' of them'} below --min-confidence")
            failed = "".join(f", {count}" for count in counts)
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
            lines.append(f"not entered: {hidden_dirs(self.walk.hidden_dirs_skipped)}")
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


def check_csv_cell(path: str, summary: Summary) -> None:
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


def hidden_dirs(rels: list[str]) -> str:
    """The hidden folders the walk left out (a viewer's .thumbnails/, .git/), as the training reader leaves them."""
    named = ", ".join(f"{shown(rel)}/" for rel in rels[:5]) + (f" and {len(rels) - 5} more" if len(rels) > 5 else "")
    return f"{named}: hidden, as training's folder reader leaves them"
