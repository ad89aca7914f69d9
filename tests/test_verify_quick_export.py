"""An export checked on fewer images (--max-val-images) records its figures on those. `export verify` without
the checkpoint can compare only on the same images: its refusal said it had no figure on the full split, not
that one was recorded on fewer, nor the flag that makes the check comparable. And that refusal came after the ONNX
pass over the images: minutes for a shipped multi-crop FP16 graph on a CPU (`verify wrn-16-4-cifar10-fp16
--max-val-images 1000`: 2 min 19 s, then the refusal); it is said before that pass. Nor is it preceded by the
warning that verify is "comparing NAME with the PyTorch accuracy recorded at export": that comparison never ran.
The warning comes only where it runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import export.verify
from export.__main__ import main as export_main
from export.pipeline import export_checkpoint

COMPARING = "comparing quick with the PyTorch accuracy recorded at export"


def _quick_export_without_its_checkpoint(tiny_run: Path, tmp_path: Path) -> list[str]:
    """`export verify`'s arguments for a model exported on 8 validation images whose checkpoint is gone (a fresh
    clone)."""
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run / "best.pt", checkpoint)
    models = tmp_path / "models"
    export_checkpoint(checkpoint, "quick", "fp32", models, cache_dir=None, max_val_images=8)
    checkpoint.unlink()
    return ["verify", "quick", "--models-dir", str(models), "--cache-dir", ""]


def test_verify_of_a_quick_export_without_its_checkpoint_names_the_images_its_figure_was_recorded_on(
    tiny_run, tmp_path, capsys
):
    verify = _quick_export_without_its_checkpoint(tiny_run, tmp_path)
    capsys.readouterr()

    assert export_main(verify) == 2
    err = capsys.readouterr().err
    assert "no checkpoint and no recorded PyTorch accuracy on the same " in err, err
    assert err.rstrip().endswith(": it was recorded on 8, pass --max-val-images 8"), err
    assert export_main([*verify, "--max-val-images", "8"]) == 0  # the advice, followed


def test_verify_without_checkpoint_refuses_other_image_count_before_running_the_graph(
    tiny_run, tmp_path, capsys, monkeypatch
):
    verify = _quick_export_without_its_checkpoint(tiny_run, tmp_path)
    capsys.readouterr()

    passes: list[int] = []
    real_onnx_logits = export.verify.onnx_logits

    def counting_onnx_logits(classifier, images):
        passes.append(len(images))
        return real_onnx_logits(classifier, images)

    monkeypatch.setattr(export.verify, "onnx_logits", counting_onnx_logits)
    assert export_main(verify) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(": it was recorded on 8, pass --max-val-images 8"), err
    assert passes == [], f"the graph ran on {passes} images before the refusal"

    assert export_main([*verify, "--max-val-images", "8"]) == 0  # the advice, followed, still runs the graph


def _no_recorded_figure(models: Path) -> list[str]:
    manifest = models / "manifest.json"
    raw = json.loads(manifest.read_text())
    raw["models"][0]["metrics"]["parity"] = None
    manifest.write_text(json.dumps(raw))
    return ["--max-val-images", "8"]


def _other_image_count(models: Path) -> list[str]:
    return []  # the whole split, where the figure was recorded on 8 images


@pytest.mark.parametrize("refused", [_other_image_count, _no_recorded_figure])
def test_verify_refuses_without_first_warning_of_a_comparison(tiny_run, tmp_path, capsys, caplog, refused):
    verify = _quick_export_without_its_checkpoint(tiny_run, tmp_path)
    models = tmp_path / "models"
    extra = refused(models)
    capsys.readouterr()
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="export"):
        assert export_main([*verify, *extra]) == 2
    err = capsys.readouterr().err
    assert "error: quick: no checkpoint and no recorded PyTorch accuracy on the same " in err, err
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [m for m in said if m.startswith("comparing")], said
    assert "comparing" not in err, err


def test_verify_still_warns_where_the_comparison_runs(tiny_run, tmp_path, capsys, caplog):
    verify = _quick_export_without_its_checkpoint(tiny_run, tmp_path)
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="export"):
        assert export_main([*verify, "--max-val-images", "8"]) == 0
    assert COMPARING in caplog.text
    assert "no usable checkpoint at" in caplog.text
