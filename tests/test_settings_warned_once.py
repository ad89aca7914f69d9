"""A command that builds several configurations (an ablation's variants, an ensemble recipe's members) says each
distinct settings warning once: said once per variant, three to ten identical lines buried the one that differed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from conftest import tiny_overrides
from test_preflight_all import _folder
from training.__main__ import main as training_main

TINY = ["model.name=resnet9", "model.args={width: 8}", "warmup_epochs=0"]
MIX = "augment.mix_prob 0.5 is unused: augment.mixup_alpha and cutmix_alpha are 0 (no images are mixed)"
PAD = "augment.pad_mode reflect is unused: augment.crop_padding is 0 (nothing is padded)"


def _said(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def test_an_ablations_shared_warning_is_said_once_and_one_some_variants_get_names_them(tmp_path, caplog):
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "lr=0.1,0.2", "--vary", "optim.name=sgd,adamw"]
    argv += ["--set", *TINY, "mix_prob=0.5", "pad_mode=reflect", "crop_padding=0", "momentum=0.8"]
    argv += ["data.root=" + str(tmp_path / "no-images"), "--out", str(tmp_path / "ablation")]
    with caplog.at_level(logging.WARNING):
        assert training_main(argv) == 2  # refused for its data, after the checks
    assert _said(caplog, MIX) == [MIX]
    assert _said(caplog, PAD) == [PAD]
    assert _said(caplog, "optim.momentum 0.8 is unused") == [
        "variants 'lr=0.1 optim.name=adamw' and 'lr=0.2 optim.name=adamw': optim.momentum 0.8 is unused: the adamw "
        "optimizer does not read it (only sgd and muon do); leave it out, or choose one of those"
    ]
    assert all(r.name == "training.config" for r in caplog.records if "is unused" in r.getMessage())


def _ensemble(tmp_path: Path, members: list[list[str]]) -> str:
    path = tmp_path / "trio.yaml"
    sets = [{"recipe": "resnet9_half_cpu", "set": [*TINY, *given]} for given in members]
    path.write_text(yaml.safe_dump({"ensemble": {"members": sets}}))
    return str(path)


def test_an_ensemble_recipes_shared_warning_is_said_once_and_one_member_says_its_own(tmp_path, caplog):
    recipe = _ensemble(tmp_path, [["seed=1"], ["seed=2", "prune_until=0.5"], ["seed=3"]])
    argv = ["train", "--recipe", recipe, "--set", "mix_prob=0.5", f"data.root={tmp_path / 'no-images'}"]
    with caplog.at_level(logging.WARNING):
        assert training_main([*argv, "--out", str(tmp_path / "run")]) == 2
    assert _said(caplog, MIX) == [MIX]
    # one member's, named as before
    assert _said(caplog, "prune_until") == [
        "ensemble member 2 (resnet9_half_cpu): train.prune_until 0.5 is unused: train.prune_ratio is 0 (no pruning)"
    ]


def test_a_data_warning_every_member_meets_before_training_is_said_once(tmp_path, caplog, capsys, monkeypatch):
    """The checks that read the images (preflight.check_run_lengths) warn per member as well: data.val_size 0 was
    said once for each, before the refusal of a batch larger than the images."""
    import training.ensemble_recipe as runner

    def no_training(*args, **kwargs):
        raise AssertionError("a member trained")

    monkeypatch.setattr(runner, "train", no_training)
    pets = _folder(tmp_path / "pets", ["cat", "dog", "fox"])
    data = tiny_overrides(pets, tmp_path / "cache", **{"data.val_size": 0, "batch_size": 512})
    recipe = _ensemble(tmp_path, [["seed=1"], ["seed=2"], ["seed=3"]])
    with caplog.at_level(logging.WARNING):
        assert training_main(["train", "--recipe", recipe, "--set", *data, "--out", str(tmp_path / "run")]) == 2
    assert "batch_size 512 exceeds the 30 training images" in capsys.readouterr().err
    said = _said(caplog, "data.val_size 0: no validation split")
    assert len(said) == 1 and said[0].startswith("data.val_size 0"), said


def test_a_split_warning_every_variant_meets_is_said_once(tmp_path, caplog, capsys):
    """An ablation reads each variant's evaluation split, then checks its training split, before the first trains:
    both split the data, and a split warning every variant met was said by each read."""
    pets = _folder(tmp_path / "pets", ["cat", "dog", "fox"], per_class=12)
    # val_size 2 of 3 classes: one class has no validation image, whichever the seed
    data = tiny_overrides(pets, tmp_path / "cache", **{"data.val_size": 2, "batch_size": 512})
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "split_seed=0,1", "--set", *data]
    with caplog.at_level(logging.WARNING):
        assert training_main([*argv, "--out", str(tmp_path / "ablation")]) == 2  # the batch, before training
    assert "batch_size 512 exceeds the 34 training images" in capsys.readouterr().err
    said = [r.getMessage() for r in caplog.records if "no validation image for class" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith("no validation image for class"), said  # every variant's: said bare
    assert not logging.getLogger("training.data").filters and not logging.getLogger("training").filters


def test_a_stepped_ablations_warnings_name_its_runs_steps(tmp_path, caplog, capsys):
    """--step's runs are steps, as its other refusals call them: a warning one step got named it "variant"."""
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--step", "base", "lr=0.1", "--step", "pruned", "prune_until=0.5"]
    argv += ["--set", *TINY, "data.root=" + str(tmp_path / "no-images"), "--out", str(tmp_path / "ablation")]
    with caplog.at_level(logging.WARNING):
        assert training_main(argv) == 2  # refused for its data, after the checks
    assert _said(caplog, "prune_until") == [
        "step 'pruned': train.prune_until 0.5 is unused: train.prune_ratio is 0 (no pruning)"
    ]
    assert "variant" not in capsys.readouterr().err


def test_a_data_warning_the_checks_said_is_not_said_again_as_each_variant_trains(tmp_path, caplog):
    """Each variant's training reads and splits the data the checks before it warned of: a class too small for a
    share of the validation split was said once by the checks, then once more by every variant as it trained."""
    pets = _folder(tmp_path / "pets", ["cat", "dog", "fox"], per_class=12)
    data = tiny_overrides(pets, tmp_path / "cache", **{"data.val_size": 2, "epochs": 1})
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "seed=1,2", "--set", *data]
    with caplog.at_level(logging.WARNING):
        assert training_main([*argv, "--out", str(tmp_path / "ablation")]) == 0
    assert (tmp_path / "ablation" / "seed-2" / "summary.json").is_file()  # both variants trained
    said = _said(caplog, "no validation image for class")
    assert len(said) == 1 and said[0].startswith("no validation image for class"), said
    assert not logging.getLogger("training.data").filters and not logging.getLogger("training").filters


def test_a_data_warning_the_checks_said_is_not_said_again_as_each_member_trains(tmp_path, caplog):
    """Each member's training reads and splits the data the checks before it warned of: a class too small for a
    share of the validation split was said once by the checks, then once more by every member as it trained."""
    pets = _folder(tmp_path / "pets", ["cat", "dog", "fox"], per_class=12)
    data = tiny_overrides(pets, tmp_path / "cache", **{"data.val_size": 2, "epochs": 1})
    recipe = _ensemble(tmp_path, [["seed=1"], ["seed=2"]])
    with caplog.at_level(logging.WARNING):
        assert training_main(["train", "--recipe", recipe, "--set", *data, "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "summary.json").is_file()  # both members trained and were joined
    said = _said(caplog, "no validation image for class")
    assert len(said) == 1 and said[0].startswith("no validation image for class"), said
    assert not logging.getLogger("training.data").filters and not logging.getLogger("training").filters


def test_a_stepped_ablations_progress_names_its_runs_steps(tmp_path, caplog, monkeypatch):
    """Its progress line said "variant 1/2" where its warnings and refusals say "step"."""
    import training.reports.ablate as ablation

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(ablation, "run_variant", stop)
    pets = _folder(tmp_path / "pets", ["cat", "dog", "fox"])
    data = tiny_overrides(pets, tmp_path / "cache", **{"epochs": 1, "batch_size": 8})
    steps = [["base", "lr=0.1"], ["slower", "lr=0.01"]]
    with caplog.at_level(logging.INFO, logger="training.reports"), pytest.raises(Stop):
        ablation.ablate("resnet9_half_cpu", [], data, tmp_path / "ablation", steps=steps)
    assert [r.getMessage() for r in caplog.records if r.name == "training.reports"] == ["step 1/2: base"]


def test_a_data_warning_told_for_one_member_is_said_again_as_another_resumed_one_meets_it(
    tmp_path, caplog, monkeypatch
):
    """A member resumed is not checked before the first trains: a data warning the checks told as the new member's
    ("ensemble member 1 (...): data.val_size 0: ...") was dropped as the resumed one read its data and met it too,
    so nothing said it had."""
    import shutil

    import training.engine as engine

    class Stop(Exception):
        pass

    saving = engine.save_checkpoint

    def stop_after_member_2s_first_epoch(state, path):
        saving(state, path)
        if path.parent.name.startswith("2-") and path.name == "last.pt":
            raise Stop

    pets = _folder(tmp_path / "pets", ["cat", "dog", "fox"], per_class=12)
    data = tiny_overrides(pets, tmp_path / "cache", **{"data.val_size": 0, "epochs": 2})
    recipe = _ensemble(tmp_path, [["seed=1"], ["seed=2"]])
    argv = ["train", "--recipe", recipe, "--set", *data, "--out", str(tmp_path / "run")]
    with monkeypatch.context() as patched, pytest.raises(Stop):
        patched.setattr(engine, "save_checkpoint", stop_after_member_2s_first_epoch)
        training_main(argv)
    shutil.rmtree(tmp_path / "run" / "1-resnet9_half_cpu")  # new again; member 2 started, resumed from its last.pt
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert training_main([*argv, "--resume"]) == 0
    said = _said(caplog, "data.val_size 0: no validation split")
    assert len(said) == 2 and said[0].startswith("ensemble member 1 (resnet9_half_cpu): data.val_size 0"), said
    assert said[1].startswith("data.val_size 0"), said  # as the resumed member reads its data
    assert not logging.getLogger("training.data").filters and not logging.getLogger("training").filters
