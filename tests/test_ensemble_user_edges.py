"""`ensemble` and `ablate` as a user meets them: inputs that would give a silently wrong result or a misleading
message."""

from __future__ import annotations

import re

import pytest
import torch

import training.reports.ablate as ablate_mod
from conftest import tiny_overrides
from inference.errors import UsageError
from training.__main__ import main as training_main
from training.checkpoint import load_checkpoint, save_checkpoint
from training.ensemble import join_checkpoints
from training.models import create_model


def test_a_member_with_the_weights_of_another_is_refused_under_any_file_name(tiny_run, tmp_path):
    """Only the same path was refused: a copy of best.pt, or a last.pt of the best epoch, was joined with it into
    'an ensemble' that is the one network, and its card and reports said two members."""
    ckpt = load_checkpoint(tiny_run / "best.pt")
    copy, last_of_best = tmp_path / "copy.pt", tmp_path / "last.pt"
    save_checkpoint(ckpt, copy)
    save_checkpoint(dict(ckpt, epoch=(ckpt.get("epoch") or 0) + 1, optimizer={"state": {}}), last_of_best)
    for twin in (copy, last_of_best):
        with pytest.raises(UsageError, match=f"{tiny_run / 'best.pt'} and {twin} hold the same weights"):
            join_checkpoints([tiny_run, twin], tmp_path / "pair.pt")
    assert not (tmp_path / "pair.pt").exists()

    # the same network with other weights is a member
    torch.manual_seed(3)
    meta = ckpt["meta"]
    other = create_model(meta["arch"], meta["num_classes"], meta["mean"], meta["std"], **meta["model_args"])
    retrained = tmp_path / "retrained.pt"
    save_checkpoint({"meta": meta, "model": other.state_dict(), "best": {"val_top1": 0.5}}, retrained)
    assert len(join_checkpoints([tiny_run, retrained], tmp_path / "pair.pt")["members"]) == 2


@pytest.fixture
def no_training(monkeypatch):
    def refuse(run_dir, config):
        raise AssertionError(f"{run_dir} trained: the ablation should have been refused first")

    monkeypatch.setattr(ablate_mod, "run_variant", refuse)


@pytest.mark.parametrize(
    ("vary", "steps", "said"),
    [
        # the same value spelt twice
        (["lr=0.1,0.10"], None, "variant 'lr=0.10': it trains the same run as variant 'lr=0.1'"),
        # a step setting what the row above already has: its row would read as the method's +0.00
        (None, [["base", "lr=0.1"], ["+same", "lr=0.1"]], "step '+same': its settings change nothing from step 'base'"),
        (None, [["base"], ["+none"]], "step '+none': its settings change nothing from step 'base'"),
        (None, [["a", "lr=0.1"], ["b", "lr=0.2"], ["c", "lr=0.1"]], "step 'c': it trains the same run as step 'a'"),
        # labels whose folders are the ablation's own, the one above it, or one another's
        (None, [[".", "lr=0.1"], ["b", "lr=0.2"]], "step label '.' names no folder of its own"),
        (None, [["a", "lr=0.1"], ["..", "lr=0.2"]], "step label '..' names no folder of its own"),
        (None, [["+a b", "lr=0.1"], ["+a_b", "lr=0.2"]], "steps '+a b' and '+a_b' would share the run folder '_a_b'"),
    ],
    ids=["same_value", "step_repeats_the_row_above", "empty_step", "step_back", "dot", "dot_dot", "same_folder"],
)
def test_ablation_variants_that_repeat_a_run_or_share_a_folder_are_refused_before_any_trains(
    vary, steps, said, image_folder, tmp_path, no_training
):
    sets = [s for s in tiny_overrides(image_folder, tmp_path / "cache") if not s.startswith("lr=")]
    with pytest.raises(UsageError, match=re.escape(said)):
        ablate_mod.ablate("resnet9_half_cpu", vary or [], sets, out=tmp_path / "ab" / "x", device="cpu", steps=steps)
    assert not (tmp_path / "ab").exists()


@pytest.mark.parametrize(
    ("extra", "val_size", "said", "unsaid"),
    [
        # the dataset's own advice, to point --data at a test folder, names an option ablate does not have
        (["--split", "test"], 15, "a folder dataset has no separate test split", "--data"),
        # and runs that held out nothing were sent to that test split
        ([], 0, "the ablation's runs have no validation split (val_size=0): set val_size", "--split test"),
    ],
    ids=["test_split", "nothing_held_out"],
)
def test_ablating_a_folder_dataset_names_only_splits_it_has(
    extra, val_size, said, unsaid, image_folder, tmp_path, capsys, no_training
):
    sets = tiny_overrides(image_folder, tmp_path / "cache", **{"data.val_size": val_size})
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--set", *sets, "--vary", "dropout=0,0.1", *extra]
    assert training_main([*argv, "--out", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}"), err
    assert unsaid not in err and "Traceback" not in err, err
