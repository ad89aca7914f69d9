"""`python -m training train/resume`: a recipe, a --set value or a flag given wrong is refused in one line naming
the fix, before any data is read or any network built."""

from __future__ import annotations

import pytest

from training.__main__ import main as training_main
from training.config import ConfigError
from training.config_recipes import build_config
from training.config_validation import validate_config


def _no_data(tmp_path) -> list[str]:
    """Where a refusal that is missed would start reading the dataset (minutes): it fails at once instead."""
    return ["--set", f"data.root={tmp_path / 'no-images'}"]


def _refused(argv: list[str], capsys) -> str:
    assert training_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _usage_error(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        training_main(argv)
    assert exit_.value.code == 2, argv
    return capsys.readouterr().err


def test_a_key_given_twice_in_a_recipe_or_a_value_is_refused(tmp_path, capsys):
    """YAML keeps the last of two equal keys without a word: a second `train:` section dropped the first's
    epochs, and the run trained the default 100."""
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: {name: resnet9, args: {width: 8}}\ntrain: {epochs: 3}\ntrain: {batch_size: 16}\n")
    out = ["--out", str(tmp_path / "run"), *_no_data(tmp_path)]
    err = _refused(["train", "--recipe", str(recipe), *out], capsys)
    assert "'train' is given twice (lines 2 and 3)" in err and "keep one" in err
    err = _refused(["train", "--recipe", "resnet9_half_cpu", "--set", "augment={cutout: 8, cutout: 4}", *out], capsys)
    assert "'cutout' is given twice" in err
    assert not (tmp_path / "run").exists()
    # a merge key's fields overridden after it are meant, not a mistake
    recipe.write_text("base: &b {epochs: 3, batch_size: 16}\nmodel: {name: resnet9}\ntrain: {<<: *b, epochs: 2}\n")
    with pytest.raises(ConfigError, match="base: no such setting"):  # read, then judged as settings
        build_config(str(recipe))


@pytest.mark.parametrize(
    "value, said",
    [
        ("model.args={width:8}", "'width:8' is a key without a value: put a space after its colon, {width: 8}"),
        # 1:16 is YAML 1.1's base-60 76: it was refused as "augment.progressive_sizes.76"
        ("progressive_sizes={1:16}", "'1:16' is a key without a value: put a space after its colon, {1: 16}"),
    ],
)
def test_a_mapping_without_a_space_after_its_colon_is_said_so(value, said, tmp_path, capsys):
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", value, "--out", str(tmp_path / "r"), *_no_data(tmp_path)]
    err = _refused(argv, capsys)
    assert said in err
    assert build_config("resnet9_half_cpu", ["model.args={norm: null}"]).model.args == {"norm": None}


def test_a_value_the_shell_split_at_its_spaces_is_said_so(tmp_path, capsys):
    """README's `augment={cutout: 8, color_jitter: 0.2}` typed unquoted: '8,' was said to be a run folder or
    model given after --set."""
    out = ["--out", str(tmp_path / "run")]
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", "augment={cutout:", "8,", "color_jitter:", "0.2}"]
    err = _usage_error([*argv, "epochs=3", *out], capsys)
    assert "quote it as one word: --set 'augment={cutout: 8, color_jitter: 0.2}'" in err and "run folder" not in err
    # an unclosed bracket before the next setting is YAML's to refuse, not a split value
    err = _refused(["train", "--recipe", "resnet9_half_cpu", "--set", "model.args={width: 8", "epochs=3", *out], capsys)
    assert "close its brackets" in err


@pytest.mark.parametrize(
    "argv, said",
    [
        (["train", "--config", "mine.yaml"], "is given with --recipe: --recipe mine.yaml"),
        # was: "settings are given with --set: --set recipe=se_resnet18", which a resume refuses
        (["resume", "RUN", "--recipe", "se_resnet18"], "to train another, start a run: python -m training train"),
        (["resume", "RUN", "--lr", "0.1"], "takes new values only for where it runs, with --set: data.root"),
        (["resume", "RUN", "--device", "cpu"], "settings are given with --set: --set device=cpu"),
    ],
)
def test_a_flag_the_command_lacks_points_to_what_it_takes(argv, said, tmp_path, capsys):
    err = _usage_error([word.replace("RUN", str(tmp_path)) for word in argv], capsys)
    assert said in err and "--set recipe=" not in err


@pytest.mark.parametrize(
    "settings, said",
    [
        (["crop_padding=8", "image_size=8"], "augment.crop_padding 8 is not below data.image_size 8"),
        (["pad_mode=reflect", "crop_padding=40"], "augment.crop_padding 40 is not below data.image_size 32"),
        (["cutout=40"], "augment.cutout 40 is larger than data.image_size 32"),
    ],
)
def test_augmentation_larger_than_the_image_is_refused_before_the_data_is_read(settings, said, tmp_path, capsys):
    """Reflect padding of the side or more failed at the first batch with torch's error; zeros padding that large
    gave all-black crops, and a cutout past the side blacks out whole images."""
    err = _refused(
        [
            "train",
            "--recipe",
            "resnet9_half_cpu",
            "--set",
            *settings,
            "--out",
            str(tmp_path / "r"),
            *_no_data(tmp_path),
        ],
        capsys,
    )
    assert said in err
    assert build_config("resnet9_half_cpu", ["crop_padding=7", "image_size=8", "cutout=8"]).augment.cutout == 8


def test_a_step_schedule_that_never_steps_is_refused(tmp_path, capsys):
    """As a multistep schedule's milestones past the run's end are: the learning rate would stay constant."""
    argv = ["train", "--recipe", "wrn_28_10", "--set", "schedule.name=step", "step_size=30", "epochs=20"]
    err = _refused([*argv, "--out", str(tmp_path / "run"), *_no_data(tmp_path)], capsys)
    assert "schedule.step_size 30 is not below train.epochs 20" in err
    assert not (tmp_path / "run").exists()
    assert build_config("wrn_28_10", ["schedule.name=step", "step_size=30", "epochs=31"]).schedule.step_size == 30
    # a run already under way is warned about, not stranded
    started = {"schedule": {"name": "step", "step_size": 30}, "train": {"epochs": 20}}
    assert validate_config(started, started=True).schedule.step_size == 30


def test_a_recipe_named_half_as_a_file_half_as_a_built_in_is_pointed_to_the_right_form(tmp_path, capsys, monkeypatch):
    """Both were "no recipe" and the list of built-ins: the first name is in it, the second is a file here."""
    monkeypatch.chdir(tmp_path)
    out = ["--out", "run", *_no_data(tmp_path)]
    err = _refused(["train", "--recipe", "resnet9_half_cpu.yaml", *out], capsys)
    assert "the built-in recipe is --recipe resnet9_half_cpu" in err
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "mine.yaml").write_text("model: {name: resnet9}\n")
    err = _refused(["train", "--recipe", "recipes/mine", *out], capsys)
    assert "a recipe file is named whole, --recipe recipes/mine.yaml" in err


@pytest.mark.parametrize(
    "recipe, setting, said",
    [
        # torch's words alone: "error: out_channels must be divisible by groups"
        ("resnet9_w48_cpu", "model.args.width=8.5", "model 'resnet9' cannot be built from its arguments (width=8.5)"),
        ("vit_small_patch4", "model.args.heads=5", "model 'vit_small_patch4' cannot be built from its arguments ("),
    ],
)
def test_a_model_argument_the_network_refuses_is_said_with_the_model_and_its_arguments(
    recipe, setting, said, tmp_path, capsys
):
    argv = ["train", "--recipe", recipe, "--set", setting, "--out", str(tmp_path / "run"), *_no_data(tmp_path)]
    err = _refused(argv, capsys)
    assert said in err and setting.rpartition(".")[2] in err, err


def _finished_run(run, epochs: int, bad_epochs: int = 0, **train) -> None:
    """A run's last.pt at its end, trained on data that is not there: a resume that reads the data fails."""
    from training.checkpoint import save_checkpoint

    sets = [f"data.root={run.parent / 'no-images'}", f"epochs={epochs}", "warmup_epochs=1"]
    config = build_config("resnet9_half_cpu", sets)
    config = validate_config({**config.model_dump(), "train": {**config.train.model_dump(), **train}})
    meta = {"arch": "resnet9_half", "num_classes": 2, "classes": ["a", "b"], "mean": [0.5] * 3, "std": [0.2] * 3}
    history = [{"epoch": e + 1, "train_time_s": 1.5, "val_top1": 0.5} for e in range(epochs)]
    state = {
        "model": {},
        "meta": {**meta, "model_args": {}, "input_size": 32},
        "config": config.model_dump(mode="json"),
        "epoch": epochs,
        "bad_epochs": bad_epochs,
        "history": history,
        "best": {"val_top1": 0.5, "epoch": 1},
    }
    run.mkdir()
    save_checkpoint(state, run / "last.pt")


@pytest.mark.parametrize(
    "bad_epochs, train, said",
    [
        (0, {}, "has trained its 3 epochs: nothing left to train (more: resume --epochs)"),
        (2, {"early_stop_patience": 2}, "stopped early (no better epoch for its patience): nothing left to train"),
    ],
)
def test_resume_of_a_finished_run_says_so_before_reading_its_data(bad_epochs, train, said, tmp_path, capsys, caplog):
    """It read and decoded the whole dataset first (minutes on CIFAR without a cache), only to train nothing."""
    import json
    import logging

    run = tmp_path / "run"
    _finished_run(run, 3, bad_epochs, **train)
    with caplog.at_level(logging.INFO):
        assert training_main(["resume", str(run)]) == 0, capsys.readouterr().err
    assert f"{run} {said}" in caplog.text
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 3 and summary["stopped_early"] == bool(bad_epochs)
    assert summary["train_time_s"] == 4.5 and summary["best"]["val_top1"] == 0.5
    assert json.loads((run / "summary.json").read_text()) == summary  # written where the run stopped before it


def test_a_setting_the_chosen_optimizer_or_schedule_does_not_read_is_warned_once(tmp_path, capsys, caplog):
    """momentum with AdamW, betas with SGD, a warmup with the triangular schedule changed nothing without a word.
    Only what a recipe or --set gives is said: a default was nobody's choice, and no shipped recipe is warned."""
    import logging

    from training.config_recipes import list_recipes

    def unused(recipe: str, overrides: list[str]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            build_config(recipe, overrides)
        return [r.getMessage() for r in caplog.records if "is unused" in r.getMessage()]

    def warned(recipe: str, overrides: list[str]) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            build_config(recipe, overrides)
        return [r.getMessage() for r in caplog.records]

    said = unused("resnet9_half_cpu", ["optim.name=adamw"])
    assert said == [
        "optim.momentum 0.9 is unused: the adamw optimizer does not read it (only sgd and muon do); leave it out, "
        "or choose one of those",
        "optim.nesterov true is unused: the adamw optimizer does not read it (only sgd and muon do); leave it out, "
        "or choose one of those",
    ]
    assert unused("se_resnet18", ["optim.name=sgd", "betas=[0.9, 0.99]"]) == [
        "optim.betas (0.9, 0.99) is unused: the sgd optimizer does not read it (only adamw does); leave it out, or "
        "choose adamw"
    ]
    [warmup] = unused("airbench94", ["warmup_epochs=1"])
    assert warmup.startswith("schedule.warmup_epochs 1.0 is unused: the triangular schedule does not read it")
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("model: {name: resnet9}\noptim: {name: adamw, momentum: 0.8}\n")
    assert [m.split(" is unused")[0] for m in unused(str(recipe), [])] == ["optim.momentum 0.8"]
    assert unused("se_resnet18", ["optim.name=sgd"]) == []  # its defaults' betas: nobody set them
    assert unused("airbench94", ["augment=none"]) == [  # the preset turns flip off under the recipe's alternation
        "augment.alternate_flip true is unused: augment.flip is false, so no image is mirrored",
        "augment.pad_mode reflect is unused: augment.crop_padding is 0 (nothing is padded)",
    ]
    assert unused("resnet9_half_cpu", ["mix_prob=0.5"]) == [  # mixing is off: no image is mixed at any rate
        "augment.mix_prob 0.5 is unused: augment.mixup_alpha and cutmix_alpha are 0 (no images are mixed)"
    ]
    assert unused("resnet9_half_cpu", ["mix_prob=0.5", "cutmix_alpha=1"]) == []
    assert unused("resnet9_half_cpu", ["prune_until=0.5"]) == [
        "train.prune_until 0.5 is unused: train.prune_ratio is 0 (no pruning)"
    ]
    assert unused("resnet9_half_cpu", ["prune_until=0.5", "prune_ratio=0.3"]) == []
    # a delta of 1 meant as one point (it is a fraction): no epoch can beat the best by it
    [never] = [m for m in warned("resnet9_half_cpu", ["early_stop_patience=2", "early_stop_min_delta=1"])]
    assert never.startswith("train.early_stop_min_delta 1 is a fraction of val top-1 (0.01 is one point)"), never
    assert warned("resnet9_half_cpu", ["early_stop_patience=2", "early_stop_min_delta=0.01"]) == []
    assert unused("resnet9_half_cpu", ["distill_from=runs/x", "distill_weight=0"]) == [
        "train.distill_from runs/x is unused: train.distill_weight is 0"
    ]
    assert unused("resnet9_half_cpu", ["distill_temperature=4", "distill_weight=0.7"]) == [
        "train.distill_weight 0.7 is unused: train.distill_from names no teacher",
        "train.distill_temperature 4.0 is unused: train.distill_from names no teacher",
    ]
    assert unused("resnet9_half_cpu", ["momentum=0"]) == [  # optim.py drops Nesterov without momentum
        "optim.nesterov true is unused: SGD's Nesterov step needs optim.momentum above 0 (it is 0)"
    ]
    assert unused("airbench94_muon", ["lookahead_decay=0.9"]) == [
        "train.lookahead_decay 0.9 is unused: train.lookahead_every is 0 (no lookahead)"
    ]
    [both] = unused("airbench94", ["ema_decay=0.99"])  # the average is the result: the slow weights reach nothing
    assert both.startswith("train.lookahead_every 5: lookahead's result, its slow weights, is unused: train.ema_decay")
    assert {name: unused(name, []) for name in list_recipes()} == {name: [] for name in list_recipes()}
    # through the command line: once, though the run is then refused for its data
    caplog.clear()
    argv = ["train", "--recipe", str(recipe), "--out", str(tmp_path / "run"), *_no_data(tmp_path)]
    with caplog.at_level(logging.WARNING):
        assert training_main(argv) == 2
    assert sum("optim.momentum 0.8 is unused" in r.getMessage() for r in caplog.records) == 1
    # where a command builds several configurations (an ensemble's members, an ablation's variants), whose
    from training.preflight import buildable_config, warned_once

    caplog.clear()
    with caplog.at_level(logging.WARNING), warned_once("member") as warned:
        overrides = ["optim.name=adamw", "nesterov=false"]
        buildable_config("resnet9_half_cpu", overrides, "member 2 (resnet9_half_cpu)", warned)
    assert [r.getMessage().split(" is unused")[0] for r in caplog.records] == [
        "member 2 (resnet9_half_cpu): optim.momentum 0.9",
        "member 2 (resnet9_half_cpu): optim.nesterov false",
    ]


def test_a_value_of_none_of_a_union_settings_kinds_is_refused_in_one_plain_line(tmp_path, capsys):
    """It was pydantic's two messages, one per kind: train.bf16.bool: ...; train.bf16.literal['auto']: ..."""
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", "bf16=maybe", "--out", str(tmp_path / "r")]
    err = _refused([*argv, *_no_data(tmp_path)], capsys)
    assert err == "error: invalid configuration: train.bf16: 'maybe' is not one of true, false, auto\n"
    with pytest.raises(ConfigError, match=r"train.bf16: \[1\] is not one of true, false, auto$"):
        build_config("resnet9_half_cpu", ["bf16=[1]"])
    assert build_config("resnet9_half_cpu", ["bf16=auto"]).train.bf16 == "auto"


@pytest.mark.parametrize(
    "recipe, settings, said",
    [
        (
            "vit_small_patch4",
            ["augment.progressive_sizes={1: 16, 5: 32}"],
            "cannot take 16x16 images (augment.progressive_sizes)",
        ),
        ("vit_small_patch4", ["optim.name=muon"], "Muon has no filters to step; use optim.name=sgd"),
        ("vit_small_patch4", ["model.dirac_init=true"], "set model.dirac_init=false"),
    ],
)
def test_an_option_the_network_cannot_take_is_refused_before_the_data_is_read(recipe, settings, said, tmp_path, capsys):
    """Progressive sizes a ViT cannot take failed at the first batch with a traceback, Muon and Dirac init on a
    network without the layers they act on after the data had loaded (or not at all), and whiten_bias_epochs on a
    network without a whitening layer changed nothing: each is tried on a throwaway build of the network first."""
    argv = [
        "train",
        "--recipe",
        recipe,
        "--out",
        str(tmp_path / "run"),
        "--set",
        "epochs=8",
        "warmup_epochs=1",
        *settings,
    ]
    err = _refused([*argv, f"data.root={tmp_path / 'no-images'}"], capsys)
    assert said in err and "no-images" not in err, err


def test_whiten_bias_epochs_on_a_network_without_whitening_is_said(tmp_path, capsys, caplog):
    """It changed nothing without a word; warned, not refused, as an ablation's baseline turns whitening off under
    a recipe that sets it."""
    import logging

    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", "whiten_bias_epochs=2"]
    with caplog.at_level(logging.WARNING):
        err = _refused([*argv, f"data.root={tmp_path / 'no-images'}"], capsys)
    assert "no-images" in err  # refused for its data only, after the warning
    said = "train.whiten_bias_epochs 2 is unused: model 'resnet9_half' has no patch-whitening layer whose bias"
    assert said in caplog.text


def test_training_on_the_serving_install_is_one_line_naming_the_install_that_runs_it():
    """`python -m training models` on `scripts/setup.sh serve` (no torch) was a ModuleNotFoundError traceback."""
    import subprocess
    import sys

    without_torch = (
        "import runpy, sys\n"
        "sys.modules['torch'] = None  # as on the serving install\n"
        "sys.argv = ['training', 'models']\n"
        "runpy.run_module('training', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", without_torch], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: python -m training needs torch, which this install lacks (")
    assert (
        done.stderr.endswith("): the full install (bash scripts/setup.sh) runs it\n") and done.stderr.count("\n") == 1
    )


@pytest.mark.parametrize(
    "broken",
    [
        "sys.modules['training.distributed'] = None",  # a module of its own missing
        "import training.checkpoint; del training.checkpoint.LAST_FILE",  # a name mistyped in its own imports
    ],
)
def test_a_mistake_in_trainings_own_imports_keeps_its_traceback(broken):
    """On the full install, a broken import inside training/ was said as "needs torch, which this install lacks"."""
    import subprocess
    import sys

    program = (
        f"import runpy, sys\n{broken}\nsys.argv = ['training', 'models']\n"
        "runpy.run_module('training', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback (most recent call last)" in done.stderr, done.stderr
    assert "which this install lacks" not in done.stderr
