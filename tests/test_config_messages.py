"""The lines a refused configuration is said in: a typo's hint beside the key it is for, a section's name said
long hinted at, and a recipe that is not YAML named with its problem and line. Each is refused before any data is
read, so no training runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.__main__ import main as training_main


def _refused(argv: list[str], capsys) -> str:
    assert training_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def _train(tmp_path: Path, *settings: str, recipe: str = "resnet9_half_cpu") -> list[str]:
    """A train command whose refusal, if missed, would start reading a folder that is not there (fails at once)."""
    no_data = f"data.root={tmp_path / 'no-images'}"
    return ["train", "--recipe", recipe, "--out", str(tmp_path / "run"), "--set", *settings, no_data]


@pytest.mark.parametrize(
    "settings, said",
    [
        # it ended "...; train.zzz: no such setting (got 1); did you mean optim.lr?", as if meant for train.zzz
        (
            ("optim.lrr=0.1", "train.zzz=1"),
            "error: invalid configuration: optim.lrr: no such setting (got 0.1); train.zzz: no such setting (got 1); "
            "optim.lrr: did you mean optim.lr?",
        ),
        # one key refused: its hint can be for no other, and is said as before
        (
            ("optim.lrr=0.1",),
            "error: invalid configuration: optim.lrr: no such setting (got 0.1); did you mean optim.lr?",
        ),
    ],
)
def test_a_hint_names_the_key_it_is_for(settings, said, tmp_path, capsys):
    assert _refused(_train(tmp_path, *settings), capsys) == said


@pytest.mark.parametrize(
    "setting, said",
    [
        ("optimizer.lr=0.1", "error: invalid configuration: optimizer: no such setting; did you mean optim?"),
        ("augmentation.cutout=8", "error: invalid configuration: augmentation: no such setting; did you mean augment?"),
    ],
)
def test_a_section_named_long_is_hinted_at(setting, said, tmp_path, capsys):
    """It was "optimizer: no such setting", with no hint: optimizer is too far from optim for difflib's cutoff."""
    assert _refused(_train(tmp_path, setting), capsys) == said


@pytest.mark.parametrize(
    "setting, meant",
    [
        ("dataroot", "data.root"),
        ("train_epochs", "train.epochs"),
        ("optimlr", "optim.lr"),
        ("augmentcutout", "augment.cutout"),
    ],
)
def test_a_section_and_its_setting_run_together_are_hinted_at_as_the_setting(setting, meant, tmp_path, capsys):
    """It was "did you mean data?" for dataroot (the section only, leaving the setting to be found), and no hint
    at all for train_epochs."""
    said = _refused(_train(tmp_path, f"{setting}=1"), capsys)
    assert said.endswith(f"; did you mean {meant}?"), said


def test_a_word_after_a_sections_name_is_not_taken_for_it(tmp_path, capsys):
    """data_dir is not the data section said long: no hint is better than a wrong one."""
    said = _refused(_train(tmp_path, "data_dir.x=1"), capsys)
    assert said == "error: invalid configuration: data_dir: no such setting", said


@pytest.mark.parametrize(
    "text, problem",
    [
        # a bracket left open is found past the last line: the line it was opened on is the one to mend
        ("lr: {0.1\n", "expected ',' or '}', but got '<stream end>': the flow mapping begun at line 1 is never closed"),
        ("model: {name: resnet9}\noptim: {lr: 0.1, momentum: [0.9}\n", "expected ',' or ']', but got '}' at line 2"),
    ],
)
def test_a_recipe_that_is_not_yaml_says_its_problem_and_line(text, problem, tmp_path, capsys):
    """It was "is not a YAML file: while parsing a flow mapping; in "<unicode string>", line 1, column 5:", naming
    no file, ending on a colon and dropping the problem."""
    recipe = tmp_path / "unclosed.yaml"
    recipe.write_text(text)
    said = _refused(_train(tmp_path, recipe=str(recipe)), capsys)
    assert said == f"error: recipe {str(recipe)!r} is not a YAML file: {problem}", said


def test_a_typo_passed_to_the_model_is_hinted_at_when_the_setting_it_meant_is_refused(tmp_path, capsys):
    """warmup_epoch=0 (for warmup_epochs) went to the model, built only after the config is valid: the refusal
    said only "schedule.warmup_epochs 5 is not below train.epochs 2: set warmup_epochs below 2", which the user
    believed they had done."""
    said = _refused(_train(tmp_path, "epochs=2", "warmup_epoch=0"), capsys)
    assert said.startswith("error: invalid configuration: schedule.warmup_epochs 5 is not below train.epochs 2"), said
    assert said.endswith(
        "; 'warmup_epoch' is no setting (a --set key that is none is passed to the model): did you mean "
        "schedule.warmup_epochs?"
    ), said
