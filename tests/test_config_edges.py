"""A training setting given wrong at the edges (bytes that are no UTF-8, a number out of range or not finite, a key
with an empty part, an ablation variant's damaged config.yaml): one line naming the setting, what was given and
what is taken, before any data is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference.errors import UsageError
from training.__main__ import main as training_main
from training.checkpoint import CONFIG_FILE, LAST_FILE
from training.config import ConfigError
from training.config_recipes import build_config
from training.config_yaml import save_config
from training.reports.ablate_folders import check_variant_folder


def _refused(argv: list[str], capsys) -> str:
    assert training_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _train(tmp_path: Path, *settings: str) -> list[str]:
    """A train command whose refusal, if missed, would start reading a folder that is not there (fails at once)."""
    no_data = f"data.root={tmp_path / 'no-images'}"
    return ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *settings, no_data]


def test_a_path_whose_bytes_are_not_utf8_is_said_to_be_so(tmp_path, capsys):
    """It was "is not YAML ...: quote it", which no quoting mends: YAML reads UTF-8 text only."""
    root = os.fsdecode(bytes(tmp_path) + b"/caf\xe9")  # as Python hands over a Latin-1 file name from argv
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", f"data.root={root}"]
    err = _refused(argv, capsys)
    assert f"'{tmp_path}/caf\\xe9' is not UTF-8 text" in err, err
    assert "quote it" not in err and "YAML" not in err
    assert not (tmp_path / "run").exists()


def test_a_path_with_a_control_character_is_said_to_hold_it():
    """It was "is not YAML ...: quote it" too; YAML takes such a character only as a double-quoted escape."""
    with pytest.raises(ConfigError) as refused:
        build_config("resnet9_half_cpu", ["data.root=/data/a\x7fb"])
    assert "holds the character #x7f" in str(refused.value) and "quote it" not in str(refused.value)
    assert build_config("resnet9_half_cpu", ['data.root="/data/a\\x7fb"']).data.root == "/data/a\x7fb"


@pytest.mark.parametrize(
    "setting, said",
    [
        ("lr=inf", "optim.lr: Input should be a finite number (valid: a number > 0; got 'inf')"),
        ("lr=-1", "optim.lr: Input should be greater than 0 (valid: a number > 0; got -1)"),
        ("label_smoothing=1.5", "train.label_smoothing: Input should be less than 1 (valid: 0 <= value < 1; got 1.5)"),
        ("bn_momentum=0", "model.bn_momentum: Input should be greater than 0 (valid: 0 < value <= 1; got 0)"),
        (
            "batch_size=64.5",
            "train.batch_size: Input should be a valid integer, got a number with a fractional part (valid: a whole "
            "number >= 1; got 64.5)",
        ),
        ("epochs=1e30", "train.epochs: Unable to parse input string as an integer, exceeded maximum size (valid: a "),
    ],
)
def test_a_number_out_of_its_range_is_said_with_the_range_and_the_value(setting, said, tmp_path, capsys):
    err = _refused(_train(tmp_path, setting), capsys)
    assert said in err, err
    assert "no-images" not in err, err  # refused before the data is looked for


def test_a_whole_number_written_with_an_exponent_is_taken():
    """1e3 is 1000 exactly: taken, as YAML 1.2 reads it, not refused as a float."""
    assert build_config("resnet9_half_cpu", ["epochs=1e3"]).train.epochs == 1000


@pytest.mark.parametrize("setting", [".epochs=3", "train..epochs=3", "epochs.=3"])
def test_a_key_with_an_empty_part_is_named(setting, tmp_path, capsys):
    """It was "invalid configuration: no such setting", naming no key."""
    err = _refused(_train(tmp_path, setting), capsys)
    key = setting.split("=")[0]
    assert f"key {key!r} has an empty part beside a dot" in err, err


@pytest.mark.parametrize(
    "text, said",
    [
        (b"train: {epochs: [1\n", "not YAML: expected ',' or ']'"),
        (b"\xff\xfe damaged", "it is not UTF-8 text"),
    ],
)
def test_a_variant_folder_whose_config_yaml_is_damaged_is_refused_naming_it(text, said, tmp_path):
    """yaml's or the decoder's traceback ended the ablation."""
    config = build_config("resnet9_half_cpu")
    folder = tmp_path / "variant"
    folder.mkdir()
    (folder / LAST_FILE).write_bytes(b"a started run")
    (folder / CONFIG_FILE).write_bytes(text)
    with pytest.raises(UsageError) as refused:
        check_variant_folder(folder, config)
    message = str(refused.value)
    assert message.startswith(f"{folder / CONFIG_FILE} cannot be read ({said}") and "\n" not in message, message
    save_config(config, folder / CONFIG_FILE)  # the variant's own, readable again: taken
    check_variant_folder(folder, config)
    with pytest.raises(UsageError, match="holds a run with a different configuration"):
        check_variant_folder(folder, build_config("resnet9_half_cpu", ["lr=0.5"]))
