"""What a resume says of where it runs: a run started on a GPU and moved to a machine without one is refused before
it is said to continue there, whatever else moved; a mistyped placement setting is said as the typo it is."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from training.checkpoint import LAST_FILE
from training.config import ConfigError
from training.resume import resume


def test_a_run_started_on_a_gpu_is_refused_on_a_machine_without_one_before_it_is_said_to_continue(
    tiny_run, tmp_path, monkeypatch, caplog
):
    """Only data.root moved, so the device was not checked until the Trainer, after 'the run continues elsewhere'."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = torch.load(run / LAST_FILE, weights_only=True)
    state["config"]["train"]["device"] = "cuda"  # as a run started on a GPU records it
    torch.save(state, run / LAST_FILE)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root = state["config"]["data"]["root"]
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError, match="device 'cuda': this machine has no usable"):
        resume(run, epochs=4, placement=[f"data.root={root}/."])
    assert "continues elsewhere" not in caplog.text, caplog.text


@pytest.mark.parametrize(("given", "meant"), [("data.rooot=/x", "data.root"), ("devic=cpu", "train.device")])
def test_a_mistyped_placement_setting_is_said_as_a_typo(tiny_run, tmp_path, given, meant):
    """It was refused as "'data.rooot' would make it another run; start one with python -m training train"."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    key = given.split("=")[0]
    with pytest.raises(ConfigError) as refused:
        resume(run, epochs=4, placement=[given])
    said = str(refused.value)
    assert said.startswith(f"{key!r} is no setting (did you mean {meant}?): a resumed run takes new values"), said
    assert "another run" not in said, said


def test_a_setting_that_is_not_a_placement_is_still_refused_as_another_run(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for given in ("lr=0.1", "model.args.width=8"):
        with pytest.raises(ConfigError, match="would make it another run"):
            resume(run, epochs=4, placement=[given])
