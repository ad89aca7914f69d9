"""`export verify` without the checkpoint warned that it was "comparing NAME with the PyTorch accuracy recorded at
export" and then, on the next line, refused to compare (no figure recorded on the same images): the refusal, which
needs no comparison, is said alone; the warning comes only where the comparison runs."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from export.__main__ import main as export_main
from export.pipeline import export_checkpoint

COMPARING = "comparing quick with the PyTorch accuracy recorded at export"


def _export_without_its_checkpoint(tiny_run: Path, tmp_path: Path) -> tuple[Path, list[str]]:
    """The models folder and `export verify`'s arguments for a model exported on 8 validation images whose
    checkpoint is gone (a fresh clone)."""
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run / "best.pt", checkpoint)
    models = tmp_path / "models"
    export_checkpoint(checkpoint, "quick", "fp32", models, cache_dir=None, max_val_images=8)
    checkpoint.unlink()
    return models, ["verify", "quick", "--models-dir", str(models), "--cache-dir", ""]


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
    models, verify = _export_without_its_checkpoint(tiny_run, tmp_path)
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
    models, verify = _export_without_its_checkpoint(tiny_run, tmp_path)
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="export"):
        assert export_main([*verify, "--max-val-images", "8"]) == 0
    assert COMPARING in caplog.text
    assert "no usable checkpoint at" in caplog.text
