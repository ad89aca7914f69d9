"""The ensemble estimate from reports says, as `compare` does, which reports it paired by class name: each report
listing the classes in another order than the first gets one note naming it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from test_compare_class_order import CLASSES, _images, _permuted, _report
from training.__main__ import main
from training.ensemble import estimate_from_reports


@pytest.fixture
def reports(tmp_path):
    """Reports of three different models on the same 40 samples: A and B in the classes' own order, C's and D's
    models listing them in another."""
    rng = np.random.default_rng(0)
    images, labels = _images(40, 1), rng.integers(0, 3, 40)
    logits = [rng.normal(size=(40, 3)) for _ in range(4)]
    a = _report(tmp_path / "a", images, labels, logits[0], CLASSES)
    b = _report(tmp_path / "b", images, labels, logits[1], CLASSES)
    c = _permuted(tmp_path / "c", images, labels, logits[2])
    d = _permuted(tmp_path / "d", images, labels, logits[3])
    return a, b, c, d


def test_each_report_in_another_class_order_gets_one_note_naming_it(reports):
    a, b, c, d = reports
    result = estimate_from_reports([a, c, b, d])
    assert len(result["notes"]) == 2
    for note, permuted in zip(result["notes"], (c, d)):
        assert note.startswith(f"{permuted} lists the classes in another order (gamma, alpha, beta): "), note
        assert f"matched to the first report's ({a}) classes by name" in note, note


def test_reports_in_the_first_ones_order_get_no_note(reports):
    a, b, c, d = reports
    assert estimate_from_reports([a, b])["notes"] == []
    assert estimate_from_reports([c, d])["notes"] == []  # both permuted alike: the same order


def test_the_note_is_compares_wording(reports):
    from training.reports.compare import another_order_note

    a, b, c, d = reports
    (note,) = estimate_from_reports([a, c])["notes"]
    assert note == another_order_note(str(c), ["gamma", "alpha", "beta"], f"the first report's ({a})")
    assert another_order_note("B", ["gamma", "alpha", "beta"], "A's") == (
        "B lists the classes in another order (gamma, alpha, beta): its labels and predictions are matched to A's "
        "classes by name"
    )


def test_the_command_says_it_and_its_json_holds_it(reports, capsys):
    a, _, c, _ = reports
    assert main(["ensemble", str(a), str(c), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["notes"]) == 1 and printed["notes"][0].startswith(f"{c} lists the classes in another order")
    assert main(["ensemble", str(a), str(c)]) == 0
    said = capsys.readouterr().out.splitlines()
    assert said[-1] == f"note: {printed['notes'][0]}", said
