"""early_stop_min_delta: the best epoch (best.pt, the one exported) is the highest score, whatever min_delta; the
patience count resets only on a gain of more than min_delta over the score at its last reset (Keras's
EarlyStopping), a reference an exact resume keeps (training/engine.py, training/config.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from training.checkpoint import load_checkpoint
from training.config import ConfigError
from training.config_recipes import build_config
from training.engine import Trainer, train
from training.resume import resume

RECIPE = "resnet9_half_cpu"


def _scored(monkeypatch, scores: list[float]) -> None:
    """Each epoch's validation top-1 as given (epoch 1 first), whatever the tiny network learns."""

    def scripted(self):
        return {"val_loss": 1.0, "val_top1": scores[self.epoch - 1], "val_top5": None}

    monkeypatch.setattr(Trainer, "_evaluate", scripted)


def _overrides(image_folder: Path, tmp_path: Path, **extra) -> list[str]:
    return tiny_overrides(image_folder, tmp_path / "cache", max_batches_per_epoch=1, **extra)


def test_best_is_the_highest_score_whatever_min_delta(image_folder, tmp_path, monkeypatch):
    """No early stopping, min_delta 0.5: every epoch after the first gained less than that, and best.pt stayed
    the first, the worst epoch, which export would have shipped."""
    _scored(monkeypatch, [0.10, 0.10, 0.12, 0.14])
    config = build_config(RECIPE, _overrides(image_folder, tmp_path, epochs=4, early_stop_min_delta=0.5))
    summary = train(config, tmp_path / "run")
    assert summary["best"]["epoch"] == 4 and summary["best"]["val_top1"] == 0.14
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 4
    assert summary["epochs_run"] == 4 and not summary["stopped_early"]


def test_patience_resets_only_above_min_delta_over_its_last_reset(image_folder, tmp_path, monkeypatch):
    """Epoch 3 gains more than min_delta over epoch 1 and resets the count; epochs 4 and 5 are better, but not by
    min_delta over epoch 3: patience 2 stops the run there, and best.pt is epoch 5, its highest score."""
    _scored(monkeypatch, [0.10, 0.13, 0.17, 0.19, 0.20, 0.5, 0.5])
    overrides = _overrides(image_folder, tmp_path, epochs=7, early_stop_patience=2, early_stop_min_delta=0.05)
    summary = train(build_config(RECIPE, overrides), tmp_path / "run")
    assert summary["stopped_early"] and summary["epochs_run"] == 5
    assert summary["best"]["epoch"] == 5 and load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 5


SCORES = [0.10, 0.13, 0.17, 0.19, 0.23, 0.24, 0.25, 0.9]


@pytest.mark.parametrize("older_checkpoint", [False, True])
def test_the_patience_reference_survives_an_exact_resume(image_folder, tmp_path, monkeypatch, older_checkpoint):
    """Stopped after epoch 4 (best 0.19, patience reference 0.17), the run goes on as it would have: epoch 5's
    0.23 beats the reference by more than min_delta, and patience 2 stops it at epoch 7. A checkpoint written
    before the reference was kept takes best's score for it, and stops at epoch 5 (0.23 is not 0.19 + 0.05)."""
    _scored(monkeypatch, SCORES)
    overrides = _overrides(image_folder, tmp_path, epochs=8, early_stop_patience=2, early_stop_min_delta=0.05)
    straight = train(build_config(RECIPE, overrides), tmp_path / "straight")
    assert straight["stopped_early"] and straight["epochs_run"] == 7 and straight["best"]["epoch"] == 7

    real_epoch = Trainer.train_epoch

    def stopped_at_five(self):
        if self.epoch == 4:
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", stopped_at_five)
    run = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(build_config(RECIPE, overrides), run)
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    last = torch.load(run / "last.pt", weights_only=True)
    assert last["epoch"] == 4 and last["best"]["val_top1"] == 0.19
    if older_checkpoint:
        del last["patience_top1"]
        torch.save(last, run / "last.pt")
    summary = resume(run)
    assert summary["stopped_early"]
    if older_checkpoint:
        assert summary["epochs_run"] == 5 and summary["best"]["epoch"] == 5
    else:
        assert {k: summary[k] for k in ("epochs_run", "best")} == {k: straight[k] for k in ("epochs_run", "best")}
        assert load_checkpoint(run / "best.pt")["epoch"] == 7


def test_min_delta_without_early_stopping_is_said_to_be_unused(caplog):
    def unused(overrides: list[str]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            build_config(RECIPE, overrides)
        return [r.getMessage() for r in caplog.records if "is unused" in r.getMessage()]

    assert unused(["early_stop_min_delta=0.5"]) == [
        "train.early_stop_min_delta 0.5 is unused: train.early_stop_patience is 0 (no early stopping)"
    ]
    assert unused(["early_stop_min_delta=0.5", "early_stop_patience=2"]) == []
    assert unused(["early_stop_patience=2"]) == []


def test_an_early_stop_under_min_delta_is_not_said_to_have_had_no_better_epoch(image_folder, tmp_path, monkeypatch):
    """Epochs 4 and 5 are better than epoch 3, by less than min_delta: patience 2 stops the run at epoch 5, its
    best. The refusal of `resume --epochs` said "no better epoch", which was untrue."""
    _scored(monkeypatch, [0.10, 0.13, 0.17, 0.19, 0.20, 0.5, 0.5])
    overrides = _overrides(image_folder, tmp_path, epochs=7, early_stop_patience=2, early_stop_min_delta=0.05)
    run = tmp_path / "run"
    summary = train(build_config(RECIPE, overrides), run)
    assert summary["stopped_early"] and summary["best"]["epoch"] == 5
    with pytest.raises(ConfigError) as caught:
        resume(run, epochs=9)
    said = str(caught.value)
    assert "no better epoch" not in said, said
    assert "(early_stop_patience 2: no epoch better by early_stop_min_delta 0.05 in its last 2)" in said, said
