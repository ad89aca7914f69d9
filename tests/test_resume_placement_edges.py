"""What a resume says of where it runs: a run started on a GPU and moved to a machine without one is refused before
it is said to continue there, whatever else moved, and a finished one still gives its summary there; a mistyped
placement setting is said as the typo it is, and a mistyped other setting points only to what a resume takes (a
mistyped epochs to --epochs, a mistyped lr to another run)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from training.checkpoint import LAST_FILE
from training.config import ConfigError
from training.config_overrides import with_placement
from training.config_recipes import build_config
from training.resume import resume


def _gpu_run_here(tiny_run, tmp_path, monkeypatch) -> tuple[Path, dict]:
    """A copy of the tiny run as a run started on a GPU records itself, on a machine without one; and its state."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    state = torch.load(run / LAST_FILE, weights_only=True)
    state["config"]["train"]["device"] = "cuda"
    torch.save(state, run / LAST_FILE)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return run, state


def test_a_run_started_on_a_gpu_is_refused_on_a_machine_without_one_before_it_is_said_to_continue(
    tiny_run, tmp_path, monkeypatch, caplog
):
    """Only data.root moved, so the device was not checked until the Trainer, after 'the run continues elsewhere'."""
    run, state = _gpu_run_here(tiny_run, tmp_path, monkeypatch)
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
    run, _ = _gpu_run_here(tiny_run, tmp_path, monkeypatch)
    summary = resume(run)
    recorded = json.loads((run / "summary.json").read_text())  # written where the run was trained
    assert {**summary, "run": None} == {**recorded, "run": None}, summary
    with pytest.raises(ConfigError, match="device 'cuda': this machine has no usable"):
        resume(run, epochs=4)  # one that trains on is still refused


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_resume_onto_a_missing_gpu_is_refused_before_it_says_the_run_continues(tiny_run, tmp_path, no_cuda, caplog):
    """`resume --set device=cuda` on a machine without CUDA logged 'the run continues elsewhere: train.device: auto
    -> cuda' and a not-bit-for-bit warning, then refused the device."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError, match="no usable CUDA GPU"):
        resume(run, epochs=4, placement=["device=cuda"])
    assert "continues elsewhere" not in caplog.text and "bit for bit" not in caplog.text, caplog.text


def test_a_finished_run_is_not_said_to_continue_on_a_missing_gpu(tiny_run, tmp_path, no_cuda, caplog):
    """A finished run took the missing device without a word and said it continued there."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    with caplog.at_level(logging.INFO), pytest.raises(ConfigError, match=r"device 'cuda:1'.*no usable CUDA GPU"):
        resume(run, placement=["train.device=cuda:1"])
    assert "continues elsewhere" not in caplog.text, caplog.text
