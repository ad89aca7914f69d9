"""`python -m training train` as a user meets it: a run's config.yaml given back as its recipe, a recipe of one's own
naming a network, a section or a recipe name written wrong. Each refusal is one line naming the fix, said before
any data is read."""

from __future__ import annotations

import logging

import pytest

from training.__main__ import get_args_parser
from training.__main__ import main as training_main
from training.config import Config, ConfigError
from training.config_overrides import with_placement
from training.config_recipes import build_config
from training.config_yaml import save_config


def _refused(tmp_path, capsys, recipe: str, *settings: str) -> str:
    argv = ["train", "--recipe", recipe, "--out", str(tmp_path / "run")]
    argv += ["--set", *settings, f"data.root={tmp_path / 'no-images'}"]
    assert training_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "no-images" not in err, err  # refused before the data is looked for
    return err


def test_a_runs_config_yaml_given_back_as_its_recipe_rebuilds_the_run_without_warnings(tmp_path, caplog):
    """It sets every field, so each one the run's optimizer or schedule does not read (an SGD run's betas and muon
    settings, a linear schedule's milestones) was warned of as chosen: a dozen warnings for an unchanged run."""
    started = build_config("resnet9_half_cpu", ["epochs=2", "warmup_epochs=1", "batch_size=25", "lr=0.2"])
    save_config(started, tmp_path / "config.yaml")
    with caplog.at_level(logging.WARNING):
        again = build_config(str(tmp_path / "config.yaml"))
    assert [r.getMessage() for r in caplog.records] == []
    assert again == started
    # what the run set away from the defaults is still its choice: said where an override leaves it unused
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        build_config(str(tmp_path / "config.yaml"), ["schedule.name=triangular"])
    assert [r.getMessage().split(" is unused")[0] for r in caplog.records] == ["schedule.warmup_epochs 1.0"]
    # a key mistyped in it is still refused by name, not dropped with the defaults
    edited = tmp_path / "edited.yaml"
    edited.write_text((tmp_path / "config.yaml").read_text().replace("  epochs: 2\n", "  epochs: 2\n  epohcs: 4\n"))
    with pytest.raises(ConfigError, match="train.epohcs: no such setting .*did you mean train.epochs"):
        build_config(str(edited))


@pytest.mark.parametrize("name", ["resnet9_half", "airbench94"])
def test_a_recipe_naming_a_network_without_args_trains_it_with_its_own_defaults(name, tmp_path):
    """The defaults' args are the reference SE-ResNet18's dropout 0.5: resnet9_half trained with it unasked, and
    airbench94, which takes no dropout, was refused for a dropout the recipe never gave."""
    recipe = tmp_path / "mine.yaml"
    recipe.write_text(f"model: {{name: {name}}}\n")
    assert build_config(str(recipe)).model.args == {}
    assert build_config(None, [f"model={{name: {name}}}"]).model.args == {}
    assert Config().model.args == {"dropout": 0.5}  # the reference recipe's own
    recipe.write_text(f"model: {{name: {name}, args: {{}}}}\n")
    assert build_config(str(recipe), ["model.args.dropout=0.1"]).model.args == {"dropout": 0.1}


@pytest.mark.parametrize(
    "setting, said",
    [
        (
            "model=resnet9",
            "model is a section of settings; set one of them as model.SETTING=VALUE; to choose it by "
            "name, model.name=resnet9",
        ),
        ("schedule=cosine", "schedule.name=cosine"),
        ("train=5", "cannot set train=5: train is a section of settings; set one of them as train.SETTING=VALUE"),
    ],
)
def test_a_section_given_one_value_names_the_setting_meant(setting, said, tmp_path, capsys):
    """pydantic said "Input should be a valid dictionary or instance of ModelConfig", naming no setting."""
    err = _refused(tmp_path, capsys, "resnet9_half_cpu", setting)
    assert said in err and "instance of" not in err


def test_a_network_argument_written_beside_its_name_points_to_model_args(tmp_path, capsys):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: {name: resnet9_half, dropout: 0.1}\n")
    err = _refused(tmp_path, capsys, str(recipe))
    assert "model.dropout: no such setting (got 0.1); did you mean model.args.dropout?" in err
    # a typo of one of the section's own fields is still pointed to that field
    err = _refused(tmp_path, capsys, "resnet9_half_cpu", "model.nmae=resnet9")
    assert "did you mean model.name?" in err


@pytest.mark.parametrize("typed", ["resnet9_half_cup", "resnet9-half-cpu"])
def test_a_mistyped_recipe_name_is_pointed_to_the_recipe_meant(typed, tmp_path, capsys):
    err = _refused(tmp_path, capsys, typed)
    assert f"no recipe {typed!r} (recipes named like it: resnet9_half_cpu)" in err


def test_a_model_given_as_a_recipe_is_told_how_to_train_it(tmp_path, capsys):
    """`--recipe res2net50` (a registered model with no recipe of its own) was refused as an unknown recipe only;
    a model is trained with a recipe and model.name."""
    err = _refused(tmp_path, capsys, "res2net50")
    assert (
        "no recipe 'res2net50': res2net50 is a model, trained with a recipe and --set model.name=res2net50 "
        "(recipes named like it: res2net50_ca_v1b)" in err
    ), err
    err = _refused(tmp_path, capsys, "resnet9_hal")  # no model of that name: the typo's line is unchanged
    assert "no recipe 'resnet9_hal' (recipes named like it: resnet9_half_cpu, resnet9_half_muon)" in err, err


def test_train_resume_help_says_a_run_of_other_settings_is_refused_not_replaced():
    """It said "if the run folder holds a run of this same configuration, continue it, else start it", which reads
    as a run of other settings being started over; it is refused."""
    train = next(action.choices["train"] for action in get_args_parser()._actions if getattr(action, "choices", None))
    help_text = " ".join(next(a.help for a in train._actions if "--resume" in a.option_strings).split())
    assert "refused" in help_text and "else start it" not in help_text


@pytest.mark.parametrize("setting", ["epochs=5", "train.epochs=5"])
def test_resume_given_epochs_with_set_is_pointed_to_its_epochs_flag(setting):
    """It said "'epochs' would make it another run; start one with `python -m training train`", though resume's
    own --epochs changes exactly that."""
    started = build_config("resnet9_half_cpu", ["epochs=3", "warmup_epochs=1"])
    with pytest.raises(ConfigError) as refused:
        with_placement(started, [setting])
    assert str(refused.value) == "a resumed run's epoch budget is changed with --epochs, not --set: --epochs 5"
    assert with_placement(started, ["device=cpu"]).train.device == "cpu"


def test_set_recipe_naming_another_built_in_recipe_is_pointed_to_the_recipe_flag(tmp_path, capsys):
    """recipe= names the run: --set recipe=wrn_16_4_cpu trained resnet9_half_cpu's network and settings into
    runs/wrn_16_4_cpu, recorded (checkpoint, model card) as wrn_16_4_cpu."""
    err = _refused(tmp_path, capsys, "resnet9_half_cpu", "recipe=wrn_16_4_cpu")
    assert "it would train resnet9_half_cpu's settings. To train the recipe wrn_16_4_cpu, give --recipe" in err
    assert build_config("resnet9_half_cpu", ["recipe=pets"]).recipe == "pets"  # a name of one's own is a name
    assert build_config("resnet9_half_cpu", ["recipe=resnet9_half_cpu"]).recipe == "resnet9_half_cpu"


def test_a_mapping_emptied_is_said_by_its_entries_alone():
    """A run started with model.args {dropout: 0.5} against one with {}: the differences said "model.args: (unset)
    -> {}" beside the entry that tells it."""
    from training.config import Config
    from training.config_overrides import config_differences

    before = Config.model_validate({"model": {"name": "wrn_16_4", "args": {"dropout": 0.5}}})
    after = Config.model_validate({"model": {"name": "wrn_16_4", "args": {}}})
    assert config_differences(before, after) == ["model.args.dropout: 0.5 -> (unset)"]
