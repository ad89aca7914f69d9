"""`export verify --max-val-images N` without the checkpoint (a fresh clone) can only compare with a figure the card
recorded on the same N images. Its refusal came after the ONNX pass over those images: minutes for a shipped
multi-crop FP16 graph on a CPU (`verify wrn-16-4-cifar10-fp16 --max-val-images 1000`: 2 min 19 s, then the
refusal). It is now said before that pass."""

from __future__ import annotations

import shutil

import export.pipeline as pipeline
from export.__main__ import main as export_main
from export.pipeline import export_checkpoint


def test_verify_without_checkpoint_refuses_other_image_count_before_running_the_graph(
    tiny_run, tmp_path, capsys, monkeypatch
):
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run / "best.pt", checkpoint)
    models = tmp_path / "models"
    export_checkpoint(checkpoint, "quick", "fp32", models, cache_dir=None, max_val_images=8)
    checkpoint.unlink()  # a fresh clone
    capsys.readouterr()

    passes: list[int] = []
    real_onnx_logits = pipeline.onnx_logits

    def counting_onnx_logits(classifier, images):
        passes.append(len(images))
        return real_onnx_logits(classifier, images)

    monkeypatch.setattr(pipeline, "onnx_logits", counting_onnx_logits)
    verify = ["verify", "quick", "--models-dir", str(models), "--cache-dir", ""]
    assert export_main(verify) == 2
    err = capsys.readouterr().err
    assert err.rstrip().endswith(": it was recorded on 8, pass --max-val-images 8"), err
    assert passes == [], f"the graph ran on {passes} images before the refusal"

    assert export_main([*verify, "--max-val-images", "8"]) == 0  # the advice, followed, still runs the graph
    assert passes == [8]
