"""Review of 72119e2: a finished run's resume trains nothing, so it does not warn of numerics from what this machine
would compute with; and a checkpoint whose record lacks a key, or holds no plain value for it, is judged by its
settings for that key, not said to have run on "None"."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from test_resume_numerics_record import _numerics_warnings, cpu_runs, stopped_run  # noqa: F401 (fixtures)
from training.checkpoint import BEST_FILE, LAST_FILE
from training.resume import resume


def _record(run, numerics) -> None:
    for name in (LAST_FILE, BEST_FILE):
        state = torch.load(run / name, weights_only=True)
        state["numerics"] = numerics
        torch.save(state, run / name)


def test_a_finished_run_resumed_elsewhere_does_not_warn(cpu_runs, tmp_path, monkeypatch, caplog):  # noqa: F811
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
def test_a_record_without_the_device_is_judged_by_the_setting(stopped_run, numerics, caplog):  # noqa: F811
    """device auto both times, on this CPU-only machine: not a run said to have moved from "None"."""
    _record(stopped_run, numerics)
    with caplog.at_level(logging.INFO):
        resume(stopped_run)
    assert _numerics_warnings(caplog) == [], caplog.text
