"""How a class name given by a folder is matched to a model's classes, the same way wherever it is."""

from __future__ import annotations

import unicodedata


def folded(name: str) -> str:
    """``name`` as class names are compared when they are not equal: Unicode NFC (a folder copied from macOS spells
    "café" decomposed) and case folded (a folder named ``Cat/`` for the class ``cat``)."""
    return unicodedata.normalize("NFC", name).casefold()
