"""ClassMatcher.suggestion with a thousand classes and a thousand left-out folders (ImageNet's folders named by
WordNet id, scored against a model's class names): difflib is given only the classes that may be near, not every
class for every folder, and finds the same matches as difflib over all of them."""

from __future__ import annotations

import difflib
import random

import pytest

from inference.classes import CLOSE_NAME, SHORTEST_GUESSED, ClassMatcher, folded


def _counting_real_quick_ratio(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = difflib.SequenceMatcher.real_quick_ratio

    def counted(self):
        calls[0] += 1
        return original(self)

    monkeypatch.setattr(difflib.SequenceMatcher, "real_quick_ratio", counted)
    return calls


def test_a_thousand_left_out_folders_are_not_each_compared_with_every_class(monkeypatch):
    matcher = ClassMatcher([f"class_{i:04d}_name" for i in range(1000)])
    calls = _counting_real_quick_ratio(monkeypatch)
    assert [matcher.suggestion(f"n{i:08d}") for i in range(1000)] == [None] * 1000
    assert calls[0] < 1000, f"difflib compared {calls[0]} class names for 1,000 folders"


def test_the_same_suggestions_as_difflib_over_every_class():
    rng = random.Random(7)
    letters = "abcdeéfgh_ 猫"
    classes = sorted({"".join(rng.choices(letters, k=rng.randint(1, 8))) for _ in range(300)})
    matcher = ClassMatcher(classes)
    keys = {folded(c): c for c in reversed(classes)}
    for _ in range(600):
        base = rng.choice(classes)
        name = base[: rng.randint(0, len(base))] + "".join(rng.choices(letters, k=rng.randint(0, 2)))
        if matcher.index(name) is not None or name.endswith("s") or len(folded(name)) < SHORTEST_GUESSED:
            continue
        close = difflib.get_close_matches(folded(name), list(keys), n=2, cutoff=CLOSE_NAME)
        expected = keys[close[0]] if len(close) == 1 else None
        assert matcher.suggestion(name) == (None if expected is None else matcher.label(expected)), name


def test_no_class_no_suggestion():
    assert ClassMatcher([]).suggestion("cats") is None
    assert ClassMatcher([]).suggestion("") is None
