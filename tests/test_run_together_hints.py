"""A section and a setting run together in one word, where the setting is another section's (trainlr) or the section
is said long (optimizer_lr): the hint names the setting, not a section that has no such setting, or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.__main__ import main as training_main


def _refused(tmp_path: Path, setting: str, capsys) -> str:
    """train's one-line refusal of ``setting``; refused before the folder that is not there is read."""
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", f"{setting}=1"]
    assert training_main([*argv, f"data.root={tmp_path / 'no-images'}"]) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize(
    "setting, meant",
    [
        # "did you mean train?": train has no lr, and train: 1 is refused in turn
        ("trainlr", "optim.lr"),
        ("train_lr", "optim.lr"),
        ("optimepochs", "train.epochs"),
        ("trainflip", "augment.flip"),
        # the section said long: "optim?" for optimizerlr, no hint at all for optimizer_lr
        ("optimizerlr", "optim.lr"),
        ("optimizer_lr", "optim.lr"),
        ("augmentationflip", "augment.flip"),
    ],
)
def test_a_setting_run_together_with_a_section_is_hinted_at_as_that_setting(setting, meant, tmp_path, capsys):
    said = _refused(tmp_path, setting, capsys)
    assert said.endswith(f"; did you mean {meant}?"), said


def test_a_setting_close_to_both_the_whole_word_and_its_rest_is_hinted_at_once(tmp_path, capsys):
    said = _refused(tmp_path, "modelimage_size", capsys)
    assert said.endswith("; did you mean data.image_size?"), said


@pytest.mark.parametrize("setting, meant", [("optimizer", "optim"), ("training", "train"), ("dataroot", "data.root")])
def test_the_hints_that_were_right_stay(setting, meant, tmp_path, capsys):
    said = _refused(tmp_path, setting, capsys)
    assert said.endswith(f"; did you mean {meant}?"), said
