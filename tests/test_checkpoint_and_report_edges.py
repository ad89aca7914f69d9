"""Review of a41156a..3aa66b8: a refused object is named in a legacy-format checkpoint too, and from the bytes a
hashed load read; airbench's bn_momentum None (PyTorch's cumulative average) still builds, and a checkpoint
recorded with a value now refused is told in one line; a checkpoint kept in a report's folder is still one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import training.checkpoint as checkpoint
from inference.errors import UsageError
from training.checkpoint import CheckpointError, load_checkpoint, load_checkpoint_and_sha256, model_from_checkpoint
from training.models import create_model
from training.reports.compare import classify


class _Odd:
    pass


def test_a_legacy_format_checkpoint_names_the_object_it_holds(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"meta": {"x": _Odd()}, "model": {}}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(path)
    assert f"it holds a {__name__}._Odd object, which loading with weights_only refuses" in str(refused.value)


def test_a_hashed_load_names_the_object_in_the_bytes_it_read_not_in_the_file_now_there(tmp_path, monkeypatch):
    path = tmp_path / "best.pt"
    torch.save({"meta": {"x": _Odd()}, "model": {}}, path)
    real_load = torch.load

    def replaced_meanwhile(source, *args, **kwargs):
        torch.save({"meta": {}, "model": {}}, path)  # a run still training renames a new best.pt over it
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "load", replaced_meanwhile)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint_and_sha256(path)
    assert f"it holds a {__name__}._Odd object" in str(refused.value), str(refused.value)


def test_airbench_bn_momentum_none_is_pytorchs_cumulative_average():
    model = create_model("airbench94", 10, widths=(8, 8, 8), bn_momentum=None)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum is None for m in norms)


def test_a_checkpoint_recorded_with_a_bn_momentum_now_refused_is_told_in_one_line():
    meta = {
        "arch": "airbench94",
        "num_classes": 10,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "model_args": {"widths": [8, 8, 8], "bn_momentum": 0},
    }
    with pytest.raises(CheckpointError) as refused:
        model_from_checkpoint({"meta": meta, "model": {}})
    said = str(refused.value)
    assert said.startswith("the network its meta describes (airbench94) cannot be built"), said
    assert "bn_momentum 0 must be above 0 and at most 1" in said and "\n" not in said, said


@pytest.mark.parametrize("name", ["ensemble.pth", "model.PT", "copy-of-best"])
def test_a_checkpoint_kept_in_a_report_folder_is_read_as_a_checkpoint(name, tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    (report / "predictions.npz").write_bytes(b"")
    (report / "metrics.json").write_text("{}")
    (report / name).write_bytes(b"PK")
    assert classify(report / name) == "checkpoint"
    with pytest.raises(UsageError, match="is a file of the report in"):
        classify(report / "metrics.json")
