"""A checkpoint refused by weights_only names the object it holds from the pickle itself, not from the wording of
torch's refusal, which torch is free to change."""

from __future__ import annotations

import fractions
import pickle

import pytest
import torch

import training.checkpoint as checkpoint
from training.checkpoint import CheckpointError, load_checkpoint


class _MakesAFraction:
    def __reduce__(self):
        return (fractions.Fraction, (1, 3))


def _reworded_refusal(*args, **kwargs):
    raise pickle.UnpicklingError("Weights only load failed: this object is not on the list of allowed ones")


def test_a_refused_object_is_named_whatever_torch_words_its_refusal(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    torch.save({"meta": _MakesAFraction(), "model": {}}, path)
    monkeypatch.setattr(checkpoint.torch, "load", _reworded_refusal)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert "it holds a fractions.Fraction object, which loading with weights_only refuses" in message, message
    assert "torch said" not in message, message


def test_an_allowed_torch_version_is_not_named_beside_the_refused_object(tmp_path):
    path = tmp_path / "model.pt"
    version = torch.torch_version.TorchVersion("2.0.0")
    torch.save({"meta": {"torch": version, "odd": _MakesAFraction()}, "model": {}}, path)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert "it holds a fractions.Fraction object" in str(refused.value), str(refused.value)
