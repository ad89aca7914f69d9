"""A run's checkpoints record what its device and thread settings resolved to, and a resume warns that the run goes
on "not bit for bit" only where those now resolve otherwise: `--set device=cpu threads=2` on the CPU a run started
with device auto ran on warned, though the weights came out identical. A checkpoint without the record is judged by
its settings, as before."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from training.checkpoint import BEST_FILE, LAST_FILE, load_checkpoint
from training.config import build_config
from training.engine import Trainer, train
from training.resume import resume

NOT_BIT_FOR_BIT = "not bit for bit as it would have where it started"


@pytest.fixture(scope="module")
def cpu_runs(image_folder, tmp_path_factory) -> Path:
    """A tiny run started with device auto on a machine whose only device is the CPU, stopped after the first of its
    two epochs (as Ctrl-C would), and the same run trained straight through (``straight``)."""
    out = tmp_path_factory.mktemp("numerics")
    overrides = tiny_overrides(image_folder, out / "cache", epochs=2, device="auto", threads=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        train(build_config("resnet9_half_cpu", overrides), out / "straight")
        original = Trainer._end_epoch

        def interrupt(self, record):
            stop = original(self, record)
            if record["epoch"] == 1:
                raise KeyboardInterrupt
            return stop

        patch.setattr(Trainer, "_end_epoch", interrupt)
        with pytest.raises(KeyboardInterrupt):
            train(build_config("resnet9_half_cpu", overrides), out / "stopped")
    return out


@pytest.fixture
def stopped_run(cpu_runs, tmp_path, monkeypatch) -> Path:
    """A copy of the stopped run, to be resumed on the same CPU-only machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    shutil.copytree(cpu_runs / "stopped", run)
    return run


def _numerics_warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and NOT_BIT_FOR_BIT in r.getMessage()
    ]


def test_a_checkpoint_records_what_the_run_ran_on(stopped_run):
    """Plain values, read back with weights_only: auto as the device it resolved to."""
    assert load_checkpoint(stopped_run / LAST_FILE)["numerics"] == {"train.device": "cpu", "train.threads": 2}


def test_a_resume_set_to_what_the_run_ran_on_does_not_warn(cpu_runs, stopped_run, caplog):
    """`resume RUN --set device=cpu threads=2` where auto had resolved to the CPU: nothing changes, and the weights
    are those of the run trained straight through."""
    with caplog.at_level(logging.INFO):
        resume(stopped_run, placement=["device=cpu", "threads=2"])
    assert "continues elsewhere (started -> now): train.device: auto -> cpu" in caplog.text, caplog.text
    assert _numerics_warnings(caplog) == [], caplog.text
    resumed = torch.load(stopped_run / LAST_FILE, weights_only=True)
    straight = torch.load(cpu_runs / "straight" / LAST_FILE, weights_only=True)
    assert resumed["epoch"] == 2
    for name, tensor in straight["model"].items():
        assert torch.equal(resumed["model"][name], tensor), name
    assert resumed["numerics"] == {"train.device": "cpu", "train.threads": 2}


def test_a_resume_on_another_thread_count_still_warns(stopped_run, caplog):
    with caplog.at_level(logging.INFO):
        resume(stopped_run, placement=["device=cpu", "threads=1"])
    assert _numerics_warnings(caplog) == [
        "train.threads: 2 -> 1: other kernels or another order of floating-point sums from here on, so the run "
        "continues, but not bit for bit as it would have where it started"
    ], caplog.text
    assert load_checkpoint(stopped_run / LAST_FILE)["numerics"] == {"train.device": "cpu", "train.threads": 1}


def test_a_run_that_ran_elsewhere_warns_though_its_settings_did_not_change(stopped_run, caplog):
    """auto resolved to a GPU where it started, and to the CPU here: the settings alone said nothing had moved."""
    for name in (LAST_FILE, BEST_FILE):
        state = torch.load(stopped_run / name, weights_only=True)
        state["numerics"]["train.device"] = "cuda:0"
        torch.save(state, stopped_run / name)
    with caplog.at_level(logging.INFO):
        resume(stopped_run)
    assert _numerics_warnings(caplog) == [
        "train.device: cuda:0 -> cpu (auto both times): other kernels or another order of floating-point sums from "
        "here on, so the run continues, but not bit for bit as it would have where it started"
    ], caplog.text


def test_a_checkpoint_without_the_record_is_judged_by_its_settings(stopped_run, caplog):
    """One written before the record: device auto -> cpu warns, as it did."""
    for name in (LAST_FILE, BEST_FILE):
        state = torch.load(stopped_run / name, weights_only=True)
        state.pop("numerics", None)  # a checkpoint written before the record has none
        torch.save(state, stopped_run / name)
    with caplog.at_level(logging.INFO):
        resume(stopped_run, placement=["device=cpu", "threads=2"])
    assert _numerics_warnings(caplog) == [
        "train.device: auto -> cpu: other kernels or another order of floating-point sums from here on, so the run "
        "continues, but not bit for bit as it would have where it started"
    ], caplog.text
