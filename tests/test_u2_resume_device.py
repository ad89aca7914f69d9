"""`resume --set device=cuda` on a machine without CUDA: refused before the run is said to continue there."""

import logging
import shutil

import pytest
import torch

from training.config import ConfigError
from training.resume import resume


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_resume_onto_a_missing_gpu_is_refused_before_it_says_the_run_continues(tiny_run, tmp_path, no_cuda, caplog):
    """It logged 'the run continues elsewhere: train.device: auto -> cuda' and a not-bit-for-bit warning, then
    refused the device."""
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
