"""Review r10: a YAML error cut short at the end of a recipe is said as what it is (not as a bracket "begun" at
a line past the recipe's last, nor as "the while scanning an alias"), and an early stop under
early_stop_min_delta is not said to have had "no better epoch" when its last epochs were better by less."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_overrides
from training.config import ConfigError
from training.config_recipes import build_config, load_recipe
from training.engine import Trainer, train
from training.resume import resume

RECIPE = "resnet9_half_cpu"


def _refusal(tmp_path: Path, text: str) -> str:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_recipe(str(recipe))
    return str(caught.value)


def test_an_alias_cut_short_at_the_end_is_not_said_to_be_left_open(tmp_path):
    said = _refusal(tmp_path, "model: resnet9\nseed: *")
    assert "never closed" not in said and "the while" not in said, said
    assert "is not a YAML file: expected alphabetic or numeric character" in said, said


def test_a_trailing_comma_in_an_unclosed_bracket_names_no_line_past_the_recipe(tmp_path):
    said = _refusal(tmp_path, "model: resnet9\nschedule: {milestones: [1,\n")
    assert "begun at line 3" not in said and "flow node" not in said, said
    assert said.endswith("expected the node content, but found '<stream end>': a [ or { is never closed"), said


def test_an_early_stop_under_min_delta_is_not_said_to_have_had_no_better_epoch(image_folder, tmp_path, monkeypatch):
    """Epochs 4 and 5 are better than epoch 3, by less than min_delta: patience 2 stops the run at epoch 5, its
    best. The refusal of `resume --epochs` said "no better epoch", which was untrue."""
    scores = [0.10, 0.13, 0.17, 0.19, 0.20, 0.5, 0.5]

    def scripted(self):
        return {"val_loss": 1.0, "val_top1": scores[self.epoch - 1], "val_top5": None}

    monkeypatch.setattr(Trainer, "_evaluate", scripted)
    overrides = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        max_batches_per_epoch=1,
        epochs=7,
        early_stop_patience=2,
        early_stop_min_delta=0.05,
    )
    run = tmp_path / "run"
    summary = train(build_config(RECIPE, overrides), run)
    assert summary["stopped_early"] and summary["best"]["epoch"] == 5
    with pytest.raises(ConfigError) as caught:
        resume(run, epochs=9)
    said = str(caught.value)
    assert "no better epoch" not in said, said
    assert "(early_stop_patience 2: no epoch better by early_stop_min_delta 0.05 in its last 2)" in said, said
