"""How a class name given by a folder is matched to a model's classes, the same way wherever it is."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence


def folded(name: str) -> str:
    """``name`` as class names are compared when they are not equal: Unicode NFC (a folder copied from macOS spells
    "café" decomposed) and case folded (a folder named ``Cat/`` for the class ``cat``)."""
    return unicodedata.normalize("NFC", name).casefold()


class ClassMatcher:
    """A folder's name -> the index of the model's class it holds: the class of that exact name, else the first
    class equal to it once both are ``folded``; None for a folder that names no class."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self._exact = {c: i for i, c in enumerate(self.classes)}
        self._folded: dict[str, int] = {}
        for i, c in enumerate(self.classes):
            self._folded.setdefault(folded(c), i)

    def index(self, name: str) -> int | None:
        found = self._exact.get(name)
        return found if found is not None else self._folded.get(folded(name))

    def label(self, name: str) -> str | None:
        found = self.index(name)
        return None if found is None else self.classes[found]
