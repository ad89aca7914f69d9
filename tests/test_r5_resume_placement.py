"""A resume's refusals point only to what a resume takes (a mistyped epochs to --epochs, a mistyped lr to another
run), and a finished run started on a GPU still gives its summary on a machine without one."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from training.checkpoint import LAST_FILE
from training.config import ConfigError, build_config, with_placement
from training.resume import resume


def _refusal(given: str) -> str:
    with pytest.raises(ConfigError) as refused:
        with_placement(build_config("resnet9_half_cpu", []), [given])
    return str(refused.value)


@pytest.mark.parametrize("given", ["epohcs=3", "train.epohcs=3"])
def test_a_mistyped_epochs_points_to_the_epochs_option(given):
    """It said "did you mean train.epochs?: a resumed run takes new values only for where it runs", and
    --set train.epochs=3 is refused next."""
    said = _refusal(given)
    assert said.endswith("a resumed run's epoch budget is changed with --epochs, not --set: --epochs 3"), said
    assert "did you mean train.epochs?" in said, said


@pytest.mark.parametrize(
    ("given", "meant"),
    [("ler=0.1", "optim.lr"), ("batch_sise=8", "train.batch_size"), ("model.dropout=0.1", "model.args.dropout")],
)
def test_a_mistyped_setting_that_is_no_placement_is_still_another_run(given, meant):
    """It was said as a typo only, "did you mean optim.lr?", as if the resume would take optim.lr."""
    said = _refusal(given)
    key = given.split("=")[0]
    assert f"{key!r} (no setting; did you mean {meant}?) would make it another run" in said, said


def test_a_finished_gpu_run_gives_its_summary_on_a_machine_without_one(tiny_run, tmp_path, monkeypatch):
    """Nothing is trained, so no device is needed: it was refused as "device 'cuda': this machine has no usable
    CUDA GPU"."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = torch.load(run / LAST_FILE, weights_only=True)
    state["config"]["train"]["device"] = "cuda"  # as a run started on a GPU records it
    torch.save(state, run / LAST_FILE)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    summary = resume(run)
    recorded = json.loads((run / "summary.json").read_text())  # written where the run was trained
    assert {**summary, "run": None} == {**recorded, "run": None}, summary
    with pytest.raises(ConfigError, match="device 'cuda': this machine has no usable"):
        resume(run, epochs=4)  # one that trains on is still refused
