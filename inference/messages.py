"""One line for a user out of a library's exception, whose text may run over many lines of advice."""

from __future__ import annotations


def exception_summary(exc: BaseException, after: str | None = None, lines: int = 1, limit: int = 200) -> str:
    """The first ``lines`` non-blank lines of ``exc``'s text (from ``after`` on, where it occurs), joined and cut
    to ``limit`` characters; the exception's type name where the text is empty."""
    text = str(exc)
    if after and after in text:
        text = text.split(after, 1)[1]
    kept = [line.strip() for line in text.splitlines() if line.strip()][:lines]
    return "; ".join(kept)[:limit] or type(exc).__name__
