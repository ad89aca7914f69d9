"""How a class name given by a folder is matched to a model's classes, the same way wherever it is."""

from __future__ import annotations

import difflib
import unicodedata
from collections import Counter
from collections.abc import Sequence

import numpy as np

# How near a folder's name must be to one class's (difflib's ratio) to be named as the class it likely meant: about
# a letter in five off ("aeroplane" for "airplane", "automobil"), not "car" for "cat".
CLOSE_NAME = 0.8
# Shorter names are not guessed at: within 0.8, "at" would be "cat"'s, and "as" the plural of a class "a".
SHORTEST_GUESSED = 4
PLURAL_ENDINGS = (("ies", "y"), ("es", ""), ("s", ""))  # dropped from a folder's name, and what it becomes


def folded(name: str) -> str:
    """``name`` as class names are compared when they are not equal: Unicode NFC (a folder copied from macOS spells
    "café" decomposed) and case folded (a folder named ``Cat/`` for the class ``cat``)."""
    return unicodedata.normalize("NFC", name).casefold()


def or_listed(names: list[str]) -> str:
    """``names`` as a sentence offers them: "a or b", "a, b or c"."""
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def _digits_apart(name: str, other: str) -> bool:
    """Whether ``name`` and ``other`` are the same once their digits are dropped. Such names count a series
    (WordNet ids ``n01440764`` and ``n01440765``, ``class_1`` and ``class_7``, ``cam01`` and ``cam02``): each is
    likely its own class, and a near one is no typo for it."""
    return [c for c in name if not c.isdigit()] == [c for c in other if not c.isdigit()]


class ClassMatcher:
    """A folder's name -> the index of the model's class it holds: the class of that exact name, else the one class
    equal to it once both are ``folded``; None for a folder that names no class, or that several classes are once
    folded (a model may hold both ``Car`` and ``car``: ``CAR/`` could be either, and is scored as neither)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = list(classes)
        self._exact = {c: i for i, c in enumerate(self.classes)}
        self._folded: dict[str, list[int]] = {}  # more than one: classes that differ only in case or form
        for i, c in enumerate(self.classes):
            self._folded.setdefault(folded(c), []).append(i)
        self._letters: dict[str, np.ndarray] | None = None  # made by the first suggestion (_near)
        self._lengths = np.zeros(0, np.int64)

    def index(self, name: str) -> int | None:
        found = self._exact.get(name)
        if found is not None:
            return found
        alike = self._folded.get(folded(name), [])
        return alike[0] if len(alike) == 1 else None

    def _alike(self, name: str) -> list[str]:
        """The classes ``name``, naming none exactly, equals once both are ``folded``, where there are several
        (``Car`` and ``car`` for ``CAR``); [] otherwise."""
        alike = self._folded.get(folded(name), []) if name not in self._exact else []
        return [self.classes[i] for i in alike] if len(alike) > 1 else []

    def label(self, name: str) -> str | None:
        found = self.index(name)
        return None if found is None else self.classes[found]

    def suggestion(self, name: str) -> str | None:
        """The class a folder that names none most likely meant, for the line that lists it as left out: the one
        class its ``folded`` name is once a plural ending is dropped (``Cats``, ``boxes``, ``cherries``), else the
        one class it is a close match to (``aeroplane`` for ``airplane``); for a folder that several classes are once
        folded, those (``Car or car``). None where it names a class, where no class or more than one is that near,
        or where the near class differs from it only in digits (``cam02`` is no typo for ``cam01``). Said, never
        matched: a dataset may hold both ``cat`` and ``cats``, and a guess would train or score its images on the
        wrong label."""
        key = folded(name)
        alike = self._alike(name)
        if alike:
            return or_listed(alike)
        if self.index(name) is not None or len(key) < SHORTEST_GUESSED:
            return None
        singular = {
            i
            for end, to in PLURAL_ENDINGS
            if key.endswith(end) and (stem := key[: -len(end)] + to) in self._folded
            for i in self._folded[stem]
        }
        if singular:
            return self.classes[singular.pop()] if len(singular) == 1 else None
        close = difflib.get_close_matches(key, self._near(key), n=2, cutoff=CLOSE_NAME)
        # the plural of another of the series is no typo either: class_7s is class_7's, not class_1's
        stems = [key] + [key[: -len(end)] + to for end, to in PLURAL_ENDINGS if key.endswith(end)]
        if len(close) != 1 or len(self._folded[close[0]]) > 1 or any(_digits_apart(stem, close[0]) for stem in stems):
            return None
        return self.classes[self._folded[close[0]][0]]

    def _near(self, key: str) -> list[str]:
        """The folded class names that may be within ``CLOSE_NAME`` of ``key``: those whose letters it shares
        (counted, in any order) are enough, the bound difflib's quick_ratio tests, here for all classes at once.
        difflib alone compares each name with every class in Python: a thousand left-out folders of a thousand
        classes took seconds; what it is then given finds the same matches."""
        names = list(self._folded)
        if self._letters is None:
            self._letters = {}
            for i, name in enumerate(names):
                for letter, count in Counter(name).items():
                    self._letters.setdefault(letter, np.zeros(len(names), np.int32))[i] = count
            self._lengths = np.array([len(name) for name in names], np.int64)
        shared = np.zeros(len(names), np.int64)
        for letter, count in Counter(key).items():
            if letter in self._letters:
                shared += np.minimum(self._letters[letter], count)
        # 2 * matches / total >= CLOSE_NAME, with room for the rounding of difflib's division
        near = 2 * shared >= CLOSE_NAME * (self._lengths + len(key)) - 1e-9
        return [names[i] for i in np.flatnonzero(near)]

    def meant(self, name: str) -> str:
        """`` (did you mean cat?)`` to follow a left-out folder's name in a list of them, or "" (``suggestion``); for
        one that several classes are once folded, `` (it is Car or car but for case: name the folder exactly)``."""
        alike = self._alike(name)
        if alike:
            # casefold alone equates them: only case differs; else NFC was needed too (a form copied from macOS)
            differs = "case" if all(c.casefold() == name.casefold() for c in alike) else "case or Unicode form"
            return f" (it is {or_listed(alike)} but for {differs}: name the folder exactly)"
        meant = self.suggestion(name)
        return "" if meant is None else f" (did you mean {meant}?)"
