"""Ensemble recipes: one `train --recipe` trains each member from its own recipe, then joins them; an
interrupted run resumes without retraining finished members."""

from __future__ import annotations

import json
import re
import shlex
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, tiny_overrides
from inference.manifest import sha256_file
from training.__main__ import main as training_main
from training.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from training.config import ConfigError
from training.config_recipes import build_config, list_ensemble_recipes, list_recipes
from training.ensemble_recipe import load_ensemble_recipe, member_configs

MEMBERS = [
    {"recipe": "resnet9_half_cpu", "set": ["model.name=resnet9", "model.args={width: 8}", "epochs=2"], "tta": "flip"},
    {
        "recipe": "airbench94_muon",
        "set": ["model.name=airbench94", "model.args={widths: [8, 8, 8]}", "epochs=1", "micro_batch_size=null"],
        "tta": "none",
    },
]


def _recipe(tmp_path, members=None, **section) -> str:
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump({"ensemble": {"members": members or MEMBERS, **section}}))
    return str(path)


def _shared_overrides(image_folder, tmp_path) -> list[str]:
    """The tiny settings for every member, less what the members set for themselves."""
    own = ("model.name=", "model.args=", "epochs=")
    return [s for s in tiny_overrides(image_folder, tmp_path / "cache") if not s.startswith(own)]


def test_an_ensemble_recipe_trains_its_members_resumes_after_an_interruption_and_joins_them(
    image_folder, tmp_path, monkeypatch, capsys
):
    import training.ensemble_recipe as runner

    recipe, out = _recipe(tmp_path, fit="center_crop"), tmp_path / "run"
    sets = _shared_overrides(image_folder, tmp_path)

    def cli(*extra, overrides=sets):
        return training_main(["train", "--recipe", recipe, "--set", *overrides, "--out", str(out), *extra])

    real_train = runner.train

    def machine_lost_during_member_2(config, folder):
        if folder.name.startswith("2-"):
            raise KeyboardInterrupt
        return real_train(config, folder)

    monkeypatch.setattr(runner, "train", machine_lost_during_member_2)
    assert cli() == 130
    first = out / "1-resnet9_half_cpu"
    assert (first / "summary.json").is_file() and not (out / "best.pt").exists()
    finished_at = (first / "last.pt").stat().st_mtime_ns
    monkeypatch.setattr(runner, "train", real_train)

    assert cli() == 2  # the folder holds a run: neither silently continued nor overwritten
    assert "--resume" in capsys.readouterr().err
    other = [s for s in sets if not s.startswith("lr=")] + ["lr=0.01"]
    assert cli("--resume", overrides=other) == 2  # another configuration is refused
    assert "another recipe or other overrides" in capsys.readouterr().err

    assert training_main(["resume", str(out)]) == 2  # `resume` takes one run: it names the command that continues
    named = re.search(r"`python -m training (train [^`]+)`", capsys.readouterr().err)
    assert named and f"--recipe {tmp_path.resolve() / 'pair.yaml'} --set " in named[1], named
    assert named[1].endswith(f"--out {out} --resume"), named
    with pytest.raises(FileNotFoundError, match="members have not all finished") as unfinished:
        load_checkpoint(out)  # what evaluate, compare and export read: the finished member is named instead
    assert str(first / "best.pt") in str(unfinished.value)
    assert training_main(shlex.split(named[1])) == 0  # the command named, as given: the run's own overrides
    assert (first / "last.pt").stat().st_mtime_ns == finished_at  # the finished member was not trained again
    second = out / "2-airbench94_muon"
    histories = [json.loads((f / "history.json").read_text()) for f in (first, second)]
    assert [len(h) for h in histories] == [2, 1]  # the member's own `set` (epochs=1) over the recipe's

    ckpt = load_checkpoint(out / "best.pt")
    meta = ckpt["meta"]
    assert meta["arch"] == "ensemble" and meta["fit"] == "center_crop"
    assert [(m["arch"], m["tta"]) for m in meta["members"]] == [("resnet9", "flip"), ("airbench94", "none")]
    assert [m["checkpoint_sha256"] for m in meta["members"]] == [sha256_file(f / "best.pt") for f in (first, second)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train_time_s"] == pytest.approx(sum(m["train_time_s"] for m in summary["members"]))
    # The joined network is the members' average, each with its own TTA: the flip member averages the logits
    # of its two views (as `evaluate --tta flip` does), then the members' probabilities are averaged.
    members = [model_from_checkpoint(load_checkpoint(f / "best.pt")).eval() for f in (first, second)]
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        flip = (members[0](x) + members[0](x.flip(3))) / 2
        expected = (torch.softmax(flip, 1) + torch.softmax(members[1](x), 1)) / 2
        joined = torch.softmax(model_from_checkpoint(ckpt)(x), 1)
    assert torch.allclose(joined, expected, atol=1e-5)

    # Finished: nothing to continue, and neither message says to continue it.
    assert cli() == 2
    assert f"holds a finished ensemble run, joined into {out / 'best.pt'}" in capsys.readouterr().err
    assert training_main(["resume", str(out)]) == 2
    said = capsys.readouterr().err
    assert "is a finished ensemble run" in said and f"evaluate --checkpoint {out / 'best.pt'}" in said

    # A run of the other kind in the folder is refused, not overwritten: each kind's best.pt stays its own.
    joined_sha, member_sha = sha256_file(out / "best.pt"), sha256_file(first / "best.pt")
    single = ["train", "--recipe", "resnet9_half_cpu", "--set", *sets]
    assert training_main([*single, "--out", str(out)]) == 2
    assert "holds an ensemble recipe's run" in capsys.readouterr().err
    assert training_main(["train", "--recipe", recipe, "--set", *sets, "--out", str(first), "--resume"]) == 2
    assert "holds a single network's run" in capsys.readouterr().err
    assert (sha256_file(out / "best.pt"), sha256_file(first / "best.pt")) == (joined_sha, member_sha)

    # where it runs is not what it is: the same run goes on from a copy of its data elsewhere
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    elsewhere = [s for s in sets if not s.startswith("data.root=")] + [f"data.root={moved}"]
    assert cli("--resume", overrides=elsewhere) == 0
    assert cli("--resume", overrides=[*elsewhere, "lr=0.01"]) == 2

    # Started over and stopped during member 2: nothing of the old run passes for the new one's (a resume would
    # have taken the old member 2 for finished).
    monkeypatch.setattr(runner, "train", machine_lost_during_member_2)
    assert cli("--force") == 130
    assert not (out / "best.pt").exists() and not (out / "summary.json").exists()
    assert (first / "summary.json").is_file() and not (second / "summary.json").exists()


def test_an_ensemble_run_lost_mid_way_goes_on_from_a_copy_of_its_data_elsewhere(
    image_folder, tmp_path, monkeypatch, capsys
):
    """Member 1 trained on the data where it was, member 2 trains on the copy: the join accepts the two roots
    by the images' fingerprint; a copy that differs by one image is refused, and the record keeps the old place."""
    from PIL import Image

    import training.ensemble_recipe as runner

    recipe, out = _recipe(tmp_path), tmp_path / "run"
    sets = _shared_overrides(image_folder, tmp_path)
    real_train = runner.train

    def machine_lost_during_member_2(config, folder):
        if folder.name.startswith("2-"):
            raise KeyboardInterrupt
        return real_train(config, folder)

    def cli(overrides):
        return training_main(["train", "--recipe", recipe, "--set", *overrides, "--out", str(out), "--resume"])

    monkeypatch.setattr(runner, "train", machine_lost_during_member_2)
    assert cli(sets) == 130
    monkeypatch.setattr(runner, "train", real_train)
    record = (out / "ensemble.yaml").read_text()

    edited = tmp_path / "edited"
    shutil.copytree(image_folder, edited)
    one = sorted(edited.glob("*/*.png"))[0]
    pixels = np.asarray(Image.open(one)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(one)
    assert cli([s for s in sets if not s.startswith("data.root=")] + [f"data.root={edited}"]) == 2
    assert "other images, or another split of them" in capsys.readouterr().err
    assert (out / "ensemble.yaml").read_text() == record  # the refused place is not recorded

    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    assert cli([s for s in sets if not s.startswith("data.root=")] + [f"data.root={moved}"]) == 0
    roots = [
        load_checkpoint(out / f / "best.pt")["meta"]["data_root"] for f in ("1-resnet9_half_cpu", "2-airbench94_muon")
    ]
    assert roots == [str(image_folder), str(moved)]
    assert load_checkpoint(out / "best.pt")["meta"]["arch"] == "ensemble"
    assert f"data.root={moved}" in (out / "ensemble.yaml").read_text()


def test_force_over_a_single_networks_run_trains_the_ensemble_into_its_folder(
    image_folder, tiny_run, tmp_path, monkeypatch, capsys
):
    """The refusal of an ensemble over a single network's run says to start over with --force: that run's last.pt
    made the join, after every member had trained, refuse to write best.pt beside it."""
    import training.ensemble_recipe as runner

    def trained_as_the_tiny_run(config, folder):  # each member's training, in no time: the run is what is tested
        shutil.copytree(tiny_run, folder, dirs_exist_ok=True)
        # members of one recipe's ensemble differ in weights; the join refuses one network twice
        ckpt = load_checkpoint(folder / "best.pt")
        for weights in (ckpt["model"], ckpt.get("ema") or {}):
            for tensor in weights.values():
                if tensor.is_floating_point():
                    tensor.add_(int(folder.name.split("-")[0]))
        save_checkpoint(ckpt, folder / "best.pt")
        return json.loads((folder / "summary.json").read_text())

    monkeypatch.setattr(runner, "train", trained_as_the_tiny_run)
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    command = ["train", "--recipe", _recipe(tmp_path), "--set", *_shared_overrides(image_folder, tmp_path)]
    assert training_main([*command, "--out", str(out)]) == 2
    assert "start over with --force" in capsys.readouterr().err
    assert training_main([*command, "--out", str(out), "--force"]) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "best.pt")["meta"]["arch"] == "ensemble"
    left = {"last.pt", "config.yaml", "history.json"} & {p.name for p in out.iterdir()}
    assert not left, left  # the single network's run is gone, not passed off as the ensemble's


@pytest.mark.parametrize(
    ("members", "section", "said"),
    [
        (MEMBERS[:1], {}, "at least 2"),
        ([MEMBERS[0], {**MEMBERS[1], "tta": "sideways"}], {}, "unknown test-time augmentation 'sideways'"),
        ([MEMBERS[0], {"recipe": "resnet9_airbench94"}], {}, "itself an ensemble recipe"),
        (MEMBERS, {"fit": "stretch"}, "fit"),
        ([MEMBERS[0], {**MEMBERS[1], "epochs": 3}], {}, "no such setting"),
        (MEMBERS, {"name": "other"}, "must hold `members`"),  # was a TypeError's traceback
    ],
)
def test_invalid_ensemble_recipes_are_refused_naming_the_problem(tmp_path, members, section, said):
    with pytest.raises(ConfigError, match=said):
        load_ensemble_recipe(_recipe(tmp_path, members, **section))


def test_a_member_setting_no_network_takes_is_refused_before_any_member_trains(tmp_path, capsys):
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    assert training_main(["train", "--recipe", recipe, "--set", "no_such_knob=1", "--out", str(out)]) == 2
    assert "member 1 (resnet9_half_cpu)" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("data.split_seed=7", "differ in split_seed (42 against 7)"),
        ("data.val_size=10", "differ in val_size (5000 against 10)"),
        ("data.dataset=cifar10", "differ in dataset ('folder' against 'cifar10')"),
        ("data.image_size=40", "differ in input_size (32 against 40)"),
        ("data.root=/elsewhere", "against '/elsewhere')"),
        ("data.fit=pad", "fit images differently ('center_crop' against 'pad'): give the ensemble's `fit`"),
    ],
)
def test_members_the_join_would_refuse_are_refused_before_any_member_trains(
    tmp_path, monkeypatch, capsys, setting, said
):
    import training.ensemble_recipe as runner

    def no_training(*args, **kwargs):
        raise AssertionError("a member trained")

    monkeypatch.setattr(runner, "train", no_training)
    other = {**MEMBERS[0], "set": [*MEMBERS[0]["set"], setting]}
    recipe, out = _recipe(tmp_path, [MEMBERS[0], other]), tmp_path / "run"
    # the recipes' own data, which is never read: the command line's settings would override the members'
    assert training_main(["train", "--recipe", recipe, "--set", "warmup_epochs=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "member 1 (resnet9_half_cpu) and member 2 (resnet9_half_cpu)" in err and said in err, err
    assert not out.exists()


def test_two_members_that_would_train_the_same_network_are_refused_before_any_trains(tmp_path):
    """The same recipe and settings twice (a second seed forgotten) trained one network twice, bit for bit on a
    CPU, and joined it with itself: an ensemble that is that network, at twice its cost."""
    twins = load_ensemble_recipe(_recipe(tmp_path, [MEMBERS[0], {**MEMBERS[0], "tta": "none"}]))
    with pytest.raises(ConfigError, match=r"member 2 \(resnet9_half_cpu\) has the recipe and settings of member 1"):
        member_configs(twins, ["warmup_epochs=0"])
    seeded = {**MEMBERS[0], "set": [*MEMBERS[0]["set"], "seed=1"]}
    configs = member_configs(load_ensemble_recipe(_recipe(tmp_path, [MEMBERS[0], seeded])), ["warmup_epochs=0"])
    assert [c.train.seed for c in configs] == [0, 1]


def test_a_members_teacher_that_cannot_teach_is_refused_before_any_member_trains(tmp_path, monkeypatch, capsys):
    """Member 2's missing teacher was found once member 1 had trained (its whole run, lost to the refusal)."""
    import training.ensemble_recipe as runner

    def trains(config, folder):
        raise KeyboardInterrupt  # stands for the first member's training, reached

    monkeypatch.setattr(runner, "train", trains)
    out = tmp_path / "run"

    def taught_by(teacher):
        student = {**MEMBERS[1], "set": [*MEMBERS[1]["set"], f"distill_from={teacher}"]}
        command = ["train", "--recipe", _recipe(tmp_path, [MEMBERS[0], student]), "--set", "warmup_epochs=0"]
        return training_main([*command, "--out", str(out)])

    assert taught_by(tmp_path / "missing.pt") == 2
    err = capsys.readouterr().err
    assert "ensemble member 2 (airbench94_muon): train.distill_from: no checkpoint at" in err, err
    assert not out.exists()
    assert taught_by("models/x.onnx") == 2
    err = capsys.readouterr().err
    assert "ensemble member 2 (airbench94_muon): teacher models/x.onnx is an exported ONNX model" in err, err
    # taught by the member trained before it: its run is there by then
    assert taught_by(out / "1-resnet9_half_cpu") == 130


def test_members_of_different_fits_are_joined_with_the_ensembles_fit(tmp_path):
    other = {**MEMBERS[0], "set": [*MEMBERS[0]["set"], "data.fit=pad"]}
    recipe = load_ensemble_recipe(_recipe(tmp_path, [MEMBERS[0], other], fit="squash"))
    configs = member_configs(recipe, ["warmup_epochs=0"])
    assert [c.data.fit for c in configs] == ["center_crop", "pad"]


def test_resume_names_a_users_recipe_file_from_anywhere_and_old_records_still_resume(
    image_folder, tmp_path, monkeypatch, capsys
):
    """The record holds the recipe file as resolved: the command `resume` names works from any folder. A record
    from before, of its name only, still names that and is still continued."""
    import training.ensemble_recipe as runner

    def machine_lost_during_member_1(config, folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "train", machine_lost_during_member_1)
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    recipe, out = "../pair.yaml", tmp_path / "run"
    _recipe(tmp_path)
    command = ["train", "--recipe", recipe, "--set", *_shared_overrides(image_folder, tmp_path), "--out", str(out)]
    assert training_main(command) == 130
    record = yaml.safe_load((out / "ensemble.yaml").read_text())
    assert record["file"] == str((tmp_path / "pair.yaml").resolve())

    monkeypatch.chdir(tmp_path.parent)
    assert training_main(["resume", str(out)]) == 2
    named = re.search(r"`python -m training (train [^`]+)`", capsys.readouterr().err)
    assert named and f"--recipe {record['file']} --set " in named[1], named
    assert training_main(shlex.split(named[1])) == 130  # continued (and lost again), not refused

    del record["file"]
    (out / "ensemble.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    assert training_main(["resume", str(out)]) == 2
    assert "--recipe pair.yaml --set " in capsys.readouterr().err
    assert training_main(shlex.split(named[1])) == 130  # the same run, though its record lacks the file
    assert "another recipe" not in capsys.readouterr().err


def test_an_ensemble_recipe_is_not_a_network_config_and_sections_beside_it_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="is an ensemble recipe"):
        build_config("resnet9_airbench94")
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"ensemble": {"members": MEMBERS}, "train": {"epochs": 3}}))
    with pytest.raises(ConfigError, match="belong in the members"):
        load_ensemble_recipe(str(path))


@pytest.mark.parametrize("name", list_ensemble_recipes())
def test_every_shipped_ensemble_recipe_builds_its_members(name):
    recipe = load_ensemble_recipe(name)
    configs = member_configs(recipe)
    assert len(configs) == len(recipe.members) >= 2
    assert all(c.recipe in list_recipes() for c in configs)


def test_the_default_models_recipe_is_an_ensemble_recipe():
    """The shipped default is reproduced by one command: its recipe trains both members."""
    recipe = load_ensemble_recipe("resnet9_airbench94")
    assert [(m.recipe, m.tta) for m in recipe.members] == [("resnet9_half_cpu", "flip"), ("airbench94_muon", "none")]
    configs = member_configs(recipe)
    assert configs[1].train.epochs == 16 and configs[1].train.whiten_sample == "first"
    # the shipped default's own record: the same members, in the same order, with the same views
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    for default in manifest["defaults"].values():
        (entry,) = [m for m in manifest["models"] if m["name"] == default]
        assert entry["source"]["recipe"] == f"ensemble({', '.join(m.recipe for m in recipe.members)})"
        members = entry["source"]["model_args"]["members"]
        assert [(m["arch"], m["tta"]) for m in members] == [
            (c.model.name, m.tta) for c, m in zip(configs, recipe.members)
        ]


def test_a_damaged_record_of_an_ensemble_run_is_named_not_a_traceback(tmp_path, capsys):
    """ensemble.yaml cut short or edited: one line naming it and the way out, for train --resume and resume."""
    from training.__main__ import main as training_main

    out = tmp_path / "run"
    out.mkdir()
    for text in (
        "recipe: {name: resnet9_airbench94, members: [",
        "recipe: {name: resnet9_airbench94}\noverrides: [1]",
        "recipe: resnet9_airbench94\noverrides: []",  # `resume` ended in a TypeError traceback
        "overrides: []",  # and in a KeyError one
    ):
        (out / "ensemble.yaml").write_text(text)
        for command in (
            ["train", "--recipe", "resnet9_airbench94", "--out", str(out), "--resume"],
            ["resume", str(out)],
        ):
            assert training_main(command) == 2, command
            err = capsys.readouterr().err
            assert f"{out / 'ensemble.yaml'} is damaged" in err and "--force" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("batch_size=64", "ensemble member 2 (airbench94_muon): batch_size 64 exceeds the 45 training images"),
        ("lookahead_every=100", "ensemble member 2 (airbench94_muon): train.lookahead_every 100 is more than the run"),
    ],
)
def test_a_member_too_long_for_the_data_is_refused_before_any_member_trains(
    image_folder, tmp_path, monkeypatch, capsys, setting, said
):
    """Member 2's batch larger than the training split (or lookahead period longer than its run) was refused by its
    own run, once member 1 had trained: its whole run lost to the refusal."""
    import training.ensemble_recipe as runner

    trained = []

    def trains(config, folder):
        trained.append(folder.name)
        raise KeyboardInterrupt  # stands for the first member's training, reached

    monkeypatch.setattr(runner, "train", trains)
    members = [
        {**MEMBERS[0], "set": [*MEMBERS[0]["set"], "batch_size=16"]},
        # a member's set names a key once: batch_size=64 stands in for its 16
        {
            **MEMBERS[1],
            "set": [*MEMBERS[1]["set"], *([] if setting.startswith("batch_size=") else ["batch_size=16"]), setting],
        },
    ]
    sets = [s for s in _shared_overrides(image_folder, tmp_path) if not s.startswith("batch_size=")]
    out = tmp_path / "run"
    command = ["train", "--recipe", _recipe(tmp_path, members), "--set", *sets, "--out", str(out)]
    assert training_main(command) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err, err
    assert trained == [] and not out.exists()
    members[1]["set"] = [
        *MEMBERS[1]["set"],
        "batch_size=16",
    ]  # the same recipe within the data's size reaches the training
    command[2] = _recipe(tmp_path, members)
    assert training_main(command) == 130 and trained == ["1-resnet9_half_cpu"]


def test_a_members_relative_recipe_file_is_read_beside_the_ensemble_recipe(tmp_path, monkeypatch):
    """A member's recipe file was read from the current folder: the recipe worked only from its own folder, and
    the command `resume` names (the recipe's full path, from anywhere) could not find its members."""
    shipped = ROOT / "training" / "recipes" / "resnet9_half_cpu.yaml"
    (tmp_path / "recipes" / "mine").mkdir(parents=True)
    shutil.copy(shipped, tmp_path / "recipes" / "mine" / "narrow.yaml")
    members = [{**MEMBERS[0], "recipe": "mine/narrow.yaml"}, MEMBERS[1]]
    recipe_file = tmp_path / "recipes" / "pair.yaml"
    recipe_file.write_text(yaml.safe_dump({"ensemble": {"members": members}}))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    recipe = load_ensemble_recipe(str(recipe_file))
    configs = member_configs(recipe, ["warmup_epochs=0"])
    assert [c.recipe for c in configs] == ["narrow", "airbench94_muon"]
    assert recipe.members[0].recipe == "mine/narrow.yaml" and recipe.folder(0) == "1-narrow"  # named as written
    # a path that only the current folder holds is read from there, as before
    monkeypatch.chdir(tmp_path / "recipes")
    moved = tmp_path / "other" / "pair.yaml"
    moved.parent.mkdir()
    shutil.copy(recipe_file, moved)
    assert [c.recipe for c in member_configs(load_ensemble_recipe(str(moved)), ["warmup_epochs=0"])][0] == "narrow"
    # and a member that is itself an ensemble recipe is found (and refused) beside it too
    shutil.copy(recipe_file, tmp_path / "recipes" / "mine" / "nested.yaml")
    nested = tmp_path / "recipes" / "nested-pair.yaml"
    nested.write_text(yaml.safe_dump({"ensemble": {"members": [MEMBERS[0], {"recipe": "mine/nested.yaml"}]}}))
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="'mine/nested.yaml' is itself an ensemble recipe"):
        load_ensemble_recipe(str(nested))


def test_a_members_relative_teacher_is_read_from_the_current_folder_and_one_beside_the_recipe_is_named(
    tmp_path, monkeypatch, capsys
):
    """A member's `set` is read as --set is, from the current folder, while its recipe file is read beside the
    ensemble recipe: a teacher written beside it, as a member's recipe would be, was refused as "no checkpoint at
    teacher.pt" without a word of where the setting is read from, or of the file beside the recipe."""
    import training.ensemble_recipe as runner

    def trains(config, folder):
        raise KeyboardInterrupt  # stands for the first member's training, reached

    monkeypatch.setattr(runner, "train", trains)
    student = {**MEMBERS[1], "set": [*MEMBERS[1]["set"], "distill_from=teacher.pt"]}
    recipe = _recipe(tmp_path, [MEMBERS[0], student])
    (tmp_path / "teacher.pt").write_bytes(b"beside the recipe")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    command = ["train", "--recipe", recipe, "--set", "warmup_epochs=0", "--out", str(tmp_path / "run")]
    assert training_main(command) == 2
    err = capsys.readouterr().err
    assert "ensemble member 2 (airbench94_muon): train.distill_from: no checkpoint at teacher.pt" in err, err
    said = f"read as --set is, from the current folder: the ensemble recipe's folder holds {tmp_path / 'teacher.pt'}"
    assert said in err and f"name it distill_from={tmp_path / 'teacher.pt'}" in err and "Traceback" not in err, err
