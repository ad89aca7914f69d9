"""The ways a temperature fitted at export runs off, each said for what it is on the card and in the warning.

A model near chance (15 of 24 validation images wrong, T pushed to the top of its range) was warned of as "no
calibration signal (every one right, or T at an end ...)", with a larger validation split as the way out, and its
card said "every image right": neither is so of a model that gets most images wrong. ``evaluate``'s report said it
right; the card and the report now say it in the same words.
"""

from __future__ import annotations

import numpy as np
import pytest

import export.calibration as export_calibration
from export.calibration import fit_calibration
from training.reports.report_calibration import (
    ALL_RIGHT,
    AT_BOTTOM,
    NEAR_CHANCE,
    fit_caveat,
    fit_runoff,
    runoff_reason,
)


def _near_chance() -> tuple[np.ndarray, np.ndarray]:
    """24 validation images of two classes, 15 of them wrong by as wide a margin as the 9 right: the likelihood is
    best where every class gets the same probability, so T goes to the top of its range."""
    labels = np.arange(24) % 2
    predicted = np.where(np.arange(24) < 15, 1 - labels, labels)
    noise = np.random.default_rng(0).normal(0, 0.3, (24, 2))
    return 2 * np.eye(2)[predicted] + noise, labels


def _fit(logits: np.ndarray, labels: np.ndarray, caplog):
    caplog.clear()
    with caplog.at_level("WARNING", logger="export"):
        calibration = fit_calibration(logits, labels, "temperature", "the checkpoint")
    assert calibration.fitted_on is not None
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 1, warned  # said once, with the way out
    return calibration, warned[0]


def test_a_model_near_chance_is_said_to_be_near_chance_not_every_image_right(caplog):
    logits, labels = _near_chance()
    calibration, warned = _fit(logits, labels, caplog)
    assert calibration.temperature > 90
    card = calibration.fitted_on
    assert "T was pushed to the top of its range (100)" in card and "no better than a uniform guess" in card, card
    assert "every image right" not in card and "every one right" not in card, card
    assert "a model near chance" in warned and "--calibrate none" in warned, warned
    # a larger validation split of the same model would be as near chance: the way out is the training
    assert "every one right" not in warned and "mistakes in it" not in warned, warned
    assert "a model trained past chance" in warned, warned


def test_a_split_with_every_image_right_is_said_to_be_so(caplog):
    labels = np.arange(24) % 4
    easy = np.random.default_rng(1).normal(0, 0.1, (24, 4)) + 0.5 * np.eye(4)[labels]
    calibration, warned = _fit(easy, labels, caplog)
    assert "carry no calibration signal (every image right" in calibration.fitted_on, calibration.fitted_on
    assert "near chance" not in calibration.fitted_on and "top of its range" not in calibration.fitted_on
    assert "its 24 validation images carry no calibration signal (every image right" in warned, warned
    assert "a validation split with more mistakes in it" in warned, warned


def test_a_temperature_at_the_bottom_with_a_mistake_is_not_said_to_be_every_image_right(caplog, monkeypatch):
    """A mistake by a hair among images right by wide margins: the fit sharpens the logits to the range's end."""
    labels = np.zeros(12, dtype=int)
    logits = np.tile([9.0, 0.0], (12, 1))
    logits[0] = [5.0, 5.0001]
    monkeypatch.setattr(export_calibration, "fit_temperature", lambda *args, **kwargs: 0.0105)
    calibration, warned = _fit(logits, labels, caplog)
    assert "bottom of its range, 0.01: nearly every image right" in calibration.fitted_on, calibration.fitted_on
    assert "(every image right" not in calibration.fitted_on and "near chance" not in calibration.fitted_on
    assert "bottom of its range" in warned and "--calibrate none" in warned, warned


@pytest.mark.parametrize("runoff", [NEAR_CHANCE, ALL_RIGHT, AT_BOTTOM])
def test_the_card_and_the_report_give_the_same_reason(runoff, caplog):
    """One wording, so that export and evaluate cannot drift apart again."""
    cases = {
        NEAR_CHANCE: _near_chance(),
        ALL_RIGHT: (4 * np.eye(3)[[0, 1, 2, 0]], np.array([0, 1, 2, 0])),
        AT_BOTTOM: (np.array([[9.0, 0.0], [5.0, 5.0001]]), np.array([0, 0])),
    }
    logits, labels = cases[runoff]
    temperature = {NEAR_CHANCE: 100.0, ALL_RIGHT: 0.5, AT_BOTTOM: 0.0105}[runoff]
    assert fit_runoff(logits, labels, temperature) == runoff
    assert runoff_reason(runoff, "those images") in fit_caveat(logits, labels, temperature)
    card = export_calibration.fit_means_little(logits, labels, temperature)
    assert runoff_reason(runoff, "the validation images") in card, card
