"""An export checked on fewer images (--max-val-images) records its figures on those. `export verify` without
the checkpoint can compare only on the same images: its refusal said it had no figure on the full split, not
that one was recorded on fewer, nor the flag that makes the check comparable. And that refusal came after the ONNX
pass over the images: minutes for a shipped multi-crop FP16 graph on a CPU (`verify wrn-16-4-cifar10-fp16
--max-val-images 1000`: 2 min 19 s, then the refusal); it is said before that pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import export.verify
from export.__main__ import main as export_main
from export.pipeline import export_checkpoint


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
