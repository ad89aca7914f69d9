"""Values of settings as users write them in `--set` and in recipes, read as they meant them or refused in one line
naming the setting: YAML 1.1's numbers (base 60, octal), yes/no/on/off, empty values, numbers that are not
finite (in typed settings and in a network's free arguments), and a typed flag that must agree with `--set`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from training.__main__ import main as training_main
from training.cli_types import non_negative_int, positive_int
from training.config import Config, ConfigError
from training.config_overrides import field_owner
from training.config_recipes import build_config
from training.config_validation import validate_config
from training.config_yaml import dump_yaml, read_yaml, save_config
from training.resume import keep_edited_config


def _refused(tmp_path: Path, capsys, *settings: str, recipe: str = "resnet9_half_cpu") -> str:
    """The one-line refusal of a train command, which would otherwise look for a folder that is not there."""
    argv = ["train", "--recipe", recipe, "--out", str(tmp_path / "run"), "--set", *settings]
    if not any(setting.startswith("data.root=") for setting in settings):
        argv.append(f"data.root={tmp_path / 'no-images'}")
    assert training_main(argv) == 2, settings
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no-images" not in err, err  # refused before the data is looked for
    return err


def _setting(config: Config, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


@pytest.mark.parametrize(
    "setting, meant",
    [
        ("train.epochs=010", 10),  # YAML 1.1's octal 8
        ("train.epochs=0o17", 15),  # YAML 1.2's octal: refused as text
        ("train.epochs=0x10", 16),
        ("train.epochs=1_000", 1000),
        ("train.epochs=1e3", 1000),
        ("train.label_smoothing=.5", 0.5),
        ("model.args.dropout=-.5", -0.5),  # the text '-.5' in YAML 1.1, handed to the network as a string
        ("model.args.dropout=+.25", 0.25),
        ("data.root=1:30", "1:30"),  # the base-60 number 90, refused as not text
        ("model.args.dropout=null", None),
        ("train.micro_batch_size=~", None),
    ],
)
def test_a_number_is_read_as_written(setting, meant):
    key, _ = setting.split("=", 1)
    value = _setting(build_config("resnet9_half_cpu", [setting]), key)
    assert value == meant and type(value) is type(meant), value


def test_a_number_in_a_recipe_file_is_read_as_written(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: {name: resnet9_half, args: {dropout: -.5}}\ntrain: {epochs: 010, batch_size: 0x40}\n")
    config = build_config(str(recipe))
    assert (config.train.epochs, config.train.batch_size, config.model.args) == (10, 64, {"dropout": -0.5})


def test_a_base60_number_is_refused_not_taken(tmp_path, capsys):
    """epochs=1:30 trained 90 epochs: YAML 1.1 reads 1:30 as base 60."""
    err = _refused(tmp_path, capsys, "epochs=1:30")
    assert "train.epochs: Input should be a valid integer" in err and "'1:30'" in err, err
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: {name: resnet9_half}\ntrain: {epochs: 1:30}\n")
    with pytest.raises(ConfigError, match=r"train\.epochs: .*'1:30'"):
        build_config(str(recipe))


@pytest.mark.parametrize("text", ["1e3", "1000.0", "1_000", "010", "0x3e8", "0o1750", " 7 "])
def test_a_typed_integer_flag_takes_what_set_takes(text):
    """`training resume RUN --epochs 1e3` was refused as not an integer, where `--set epochs=1e3` took 1000."""
    assert positive_int(text) == non_negative_int(text) == build_config(None, [f"epochs={text}"]).train.epochs


@pytest.mark.parametrize("text", ["1.5", "1:30", "nan", "inf", "1e30", "true"])
def test_a_typed_integer_flag_refuses_what_set_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match="is not an integer"):
        positive_int(text)
    with pytest.raises(ConfigError, match="train.epochs"):
        build_config(None, [f"epochs={text}"])


@pytest.mark.parametrize(
    "setting, said",
    [
        ("model.args.dropout=.nan", "model.args.dropout: Input should be a finite number (got nan)"),
        ("dropout=.inf", "model.args.dropout: Input should be a finite number (got inf)"),
        ("model.args={dropout: -.inf}", "model.args.dropout: Input should be a finite number (got -inf)"),
        ("model.args.widths=[8, [16, .nan]]", "model.args.widths: must hold finite numbers (got [8, [16, nan]])"),
    ],
)
def test_a_model_argument_that_is_not_finite_is_refused_naming_it(setting, said, tmp_path, capsys):
    """A dropout of nan reached the network check and was blamed on the image size."""
    err = _refused(tmp_path, capsys, setting)
    assert said in err and "image" not in err, err


def test_a_model_argument_in_a_recipe_that_is_not_finite_is_refused(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: {name: resnet9_half, args: {dropout: .nan}}\n")
    with pytest.raises(ConfigError, match=r"model\.args\.dropout: Input should be a finite number \(got nan\)"):
        build_config(str(recipe))


def _float_settings() -> list[str]:
    return [
        f"{section}.{name}"
        for section, field in Config.model_fields.items()
        if isinstance(field.default_factory, type) and issubclass(field.default_factory, BaseModel)
        for name, typed in field.default_factory.model_fields.items()
        if "float" in str(typed.annotation)
    ]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_every_float_setting_refuses_a_number_that_is_not_finite(value):
    settings = _float_settings()
    assert {"optim.lr", "optim.betas", "train.ema_decay", "train.label_smoothing"} <= set(settings)
    for dotted in settings:
        given = f"[{value}, 0.9]" if dotted == "optim.betas" else value
        with pytest.raises(ConfigError, match=rf"{dotted}(\.0)?: Input should be a finite number"):
            build_config("resnet9_half_cpu", [f"{dotted}={given}"])


@pytest.mark.parametrize(
    "setting, said",
    [
        ("device=on", "train.device: must be text, not true: YAML reads a bare yes, no, on, off, true or false"),
        ("recipe=no", "recipe: must be text, not false"),
        ("pad_mode=off", "augment.pad_mode: must be text, not false"),
        # [1, 0] was taken without a word
        ("milestones=[on, off]", "schedule.milestones: must hold numbers; YAML reads a bare yes"),
        ("progressive_sizes={1: yes}", "augment.progressive_sizes: must hold numbers"),
    ],
)
def test_a_yaml_boolean_where_text_or_numbers_go_is_said_as_one(setting, said, tmp_path, capsys):
    err = _refused(tmp_path, capsys, setting)
    assert said in err and "got True" not in err and "got False" not in err, err


def test_a_quoted_word_is_text_and_a_bare_one_a_switch():
    assert build_config("resnet9_half_cpu", ["recipe='no'"]).recipe == "no"
    config = build_config("resnet9_half_cpu", ["flip=no", "bf16=on", "model.args.use_se=yes"])
    assert (config.augment.flip, config.train.bf16, config.model.args["use_se"]) == (False, True, True)


@pytest.mark.parametrize(
    "setting, said",
    [
        # no teacher, without a word: `--set distill_from=$TEACHER` with TEACHER unset
        ("distill_from=", "train.distill_from: is empty: give a value, or null for none"),
        ("recipe=", "recipe: is empty: give a value"),  # the run folder was runs/ itself
        ("epochs=", "train.epochs: is empty: give a value"),
        ("data.root=", "data.root: is empty: give the image folder or archive to read (data.root=PATH)"),
    ],
)
def test_an_empty_value_is_refused_as_empty(setting, said, tmp_path, capsys):
    err = _refused(tmp_path, capsys, setting)
    assert said in err and "(got ''" not in err, err


def test_an_empty_cache_dir_is_taken_as_no_cache():
    # documented (docs/own-dataset.md): `--set data.cache_dir=` keeps no cache of a folder's decoded images
    assert build_config("resnet9_half_cpu", ["data.cache_dir="]).data.cache_dir == ""


def test_null_unsets_what_may_be_unset():
    config = build_config("resnet9_half_cpu", ["distill_from=null", "micro_batch_size=null"])
    assert (config.train.distill_from, config.train.micro_batch_size) == (None, None)


@pytest.mark.parametrize(
    "setting, said",
    [
        # "schedule.milestones: Input should be a valid list", naming no way to set it
        ("schedule.milestones.0=30", "schedule.milestones is set whole, as schedule.milestones=[...]"),
        ("optim.betas.1=0.99", "optim.betas is set whole, as optim.betas=[...]"),
        ("data.root.x=1", "data.root is set whole, as data.root=VALUE"),
    ],
)
def test_a_key_inside_a_list_or_a_value_is_refused_saying_how_to_set_it(setting, said, tmp_path, capsys):
    err = _refused(tmp_path, capsys, setting)
    assert f"cannot set {setting.split('=')[0]!r}: {said}" in err, err


def test_a_mapping_setting_takes_a_key_inside_it():
    config = build_config("resnet9_half_cpu", ["augment.progressive_sizes.1=16", "augment.progressive_sizes.3=32"])
    assert config.augment.progressive_sizes == {1: 16, 3: 32}


@pytest.mark.parametrize("setting", ["epochs=null", "device=~", "bf16=null", "flip=null", "milestones=null"])
def test_a_null_where_a_value_is_needed_is_said_as_null(setting, tmp_path, capsys):
    """`epochs=null` was refused as "Input should be a valid integer", not naming the null as the mistake."""
    err = _refused(tmp_path, capsys, setting)
    assert f"{_full(setting)}: is null: give a value" in err, err


@pytest.mark.parametrize("setting", ["data.root=2024", "distill_from=08", "recipe=1e3", "data.cache_dir=-.5"])
def test_a_number_where_text_goes_is_said_as_one(setting, tmp_path, capsys):
    """`distill_from=08` (a folder named 08) was read as the number 8 and refused as "not a valid string"."""
    err = _refused(tmp_path, capsys, setting)
    assert f"{_full(setting)}: must be text, not the number" in err and "quote it" in err, err
    quoted = setting.replace("=", "='", 1) + "'"
    value = setting.split("=", 1)[1]
    assert _setting(build_config("resnet9_half_cpu", [quoted]), _full(setting)) == value


def _full(setting: str) -> str:
    key = setting.split("=", 1)[0]
    return key if "." in key or key == "recipe" else field_owner(key)


def test_a_saved_config_reads_back_as_it_was(tmp_path, caplog):
    """config.yaml was written with YAML 1.1's quoting and read back with YAML 1.2's numbers: a recipe file named
    0912.yaml was read back as the number 912, so each resume said config.yaml had been edited (and kept a copy),
    and an ablation took its finished variant for another's."""
    recipe = tmp_path / "0912.yaml"
    recipe.write_text("model: {name: resnet9_half}\n")
    texts = ["'1e3'", "'-.5'", "'0o17'", "'08'", "'1_000'", "'1:30'", "'010'", "'yes'", "'.inf'"]
    config = build_config(str(recipe), [f"model.args.a{i}={text}" for i, text in enumerate(texts)])
    assert config.recipe == "0912" and config.model.args["a0"] == "1e3"
    save_config(config, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    as_saved = config.model_dump(mode="json")
    assert read_yaml(text) == as_saved and yaml.safe_load(text) == as_saved, text
    keep_edited_config(tmp_path, config)
    assert not (tmp_path / "config.edited.yaml").exists(), caplog.text


def test_a_saved_config_writes_numbers_as_numbers():
    config = build_config("resnet9_half_cpu", ["lr=1e-5", "epochs=10", "model.args.dropout=-.5"])
    text = dump_yaml(config.model_dump(mode="json"))
    assert "lr: 1.0e-05\n" in text and "epochs: 10\n" in text and "dropout: -0.5\n" in text, text


def test_a_run_started_with_an_empty_setting_that_may_be_null_resumes_with_none():
    """A run started with `distill_from=` (no teacher: empty values were taken then) was refused on resume, its
    configuration read back from last.pt as "train.distill_from: is empty", which no resume --set can change."""
    started = build_config("resnet9_half_cpu").model_dump(mode="json")
    started["train"]["distill_from"] = ""
    assert validate_config(started, started=True).train.distill_from is None
    with pytest.raises(ConfigError, match="train.distill_from: is empty"):
        validate_config(started)


def test_an_ensemble_runs_record_reads_back_a_recipe_named_like_a_number(tmp_path):
    """The record was written with yaml.safe_dump, which leaves 0913 bare, and read with read_yaml, which reads
    it as the number 913: `train --resume` then called the record damaged."""
    from training.checkpoint import ENSEMBLE_RUN_FILE
    from training.config_yaml import dump_yaml
    from training.ensemble_recipe import started_run

    record = {"recipe": {"name": "0913", "members": []}, "overrides": ["epochs=1e3"], "file": "0913.yaml"}
    (tmp_path / ENSEMBLE_RUN_FILE).write_text(dump_yaml(record))
    assert started_run(tmp_path) == record


@pytest.mark.parametrize(
    "value, said",
    [("2001-13-45", "is no timestamp (month must be in 1..12)"), ("!!bool maybe", "'maybe' is no bool: quote it")],
)
def test_a_value_whose_tag_builds_nothing_is_refused_in_one_line(value, said, tmp_path, capsys):
    """A date that is none, or an explicit tag on text it cannot take, raised the constructor's ValueError or
    KeyError from inside YAML: a traceback for a --set value or a recipe's."""
    err = _refused(tmp_path, capsys, f"seed={value}")
    assert said in err and "quote it" in err, err
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"model: {{name: resnet9_half}}\ntrain: {{seed: {value}}}\n")
    with pytest.raises(ConfigError, match="quote it"):
        build_config(str(recipe))
