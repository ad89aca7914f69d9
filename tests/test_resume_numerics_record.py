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

from conftest import tiny_overrides, train_straight_and_stopped
from training.checkpoint import BEST_FILE, LAST_FILE, load_checkpoint
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
        train_straight_and_stopped("resnet9_half_cpu", overrides, out, patch, stop_after=1)
    return out


@pytest.fixture
def stopped_run(cpu_runs, tmp_path, monkeypatch) -> Path:
    """A copy of the stopped run, to be resumed on the same CPU-only machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "run"
    shutil.copytree(cpu_runs / "interrupted", run)
    return run


def _record(run: Path, numerics: dict | None) -> None:
    """Rewrites the run's checkpoints with ``numerics`` as their record (None: none, as before the record)."""
    for name in (LAST_FILE, BEST_FILE):
        state = torch.load(run / name, weights_only=True)
        state.pop("numerics", None)
        if numerics is not None:
            state["numerics"] = numerics
        torch.save(state, run / name)


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
    _record(stopped_run, {"train.device": "cuda:0", "train.threads": 2})
    with caplog.at_level(logging.INFO):
        resume(stopped_run)
    assert _numerics_warnings(caplog) == [
        "train.device: cuda:0 -> cpu (auto both times): other kernels or another order of floating-point sums from "
        "here on, so the run continues, but not bit for bit as it would have where it started"
    ], caplog.text


def test_a_checkpoint_without_the_record_is_judged_by_its_settings(stopped_run, caplog):
    """One written before the record: device auto -> cpu warns, as it did."""
    _record(stopped_run, None)  # a checkpoint written before the record has none
    with caplog.at_level(logging.INFO):
        resume(stopped_run, placement=["device=cpu", "threads=2"])
    assert _numerics_warnings(caplog) == [
        "train.device: auto -> cpu: other kernels or another order of floating-point sums from here on, so the run "
        "continues, but not bit for bit as it would have where it started"
    ], caplog.text


def test_a_finished_run_resumed_elsewhere_does_not_warn(cpu_runs, tmp_path, monkeypatch, caplog):
    """It ran with 7 threads (threads unset on a machine of 7 cores, say): its summary, read here, trains nothing."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run = tmp_path / "finished"
    shutil.copytree(cpu_runs / "straight", run)
    _record(run, {"train.device": "cpu", "train.threads": 7})
    with caplog.at_level(logging.INFO):
        resume(run)
    assert "nothing left to train" in caplog.text, caplog.text
    assert _numerics_warnings(caplog) == [], caplog.text


@pytest.mark.parametrize(
    "numerics", [{"train.threads": 2}, {"train.device": None, "train.threads": 2}], ids=["missing", "none"]
)
def test_a_record_without_the_device_is_judged_by_the_setting(stopped_run, numerics, caplog):
    """device auto both times, on this CPU-only machine: not a run said to have moved from "None"."""
    _record(stopped_run, numerics)
    with caplog.at_level(logging.INFO):
        resume(stopped_run)
    assert _numerics_warnings(caplog) == [], caplog.text


def test_a_finished_run_resumed_with_other_placement_is_not_said_to_continue(cpu_runs, tmp_path, caplog):
    """`resume RUN --set device=cpu` of a run that has trained all its epochs only reports it finished: it logged
    "the run continues elsewhere", though nothing continues."""
    run = tmp_path / "finished"
    shutil.copytree(cpu_runs / "straight", run)
    with caplog.at_level(logging.INFO):
        resume(run, placement=["device=cpu"])
    assert "continues elsewhere" not in caplog.text, caplog.text
    assert "the finished run is read elsewhere (started -> now): train.device: auto -> cpu" in caplog.text, caplog.text
    assert "nothing left to train" in caplog.text, caplog.text
