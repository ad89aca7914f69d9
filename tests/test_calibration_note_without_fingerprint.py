"""A model that records no fingerprint of its held-out images (an older checkpoint), its data moved and scored with
--data where it lies now: the report said to evaluate "with --data where its data is now", which the user had just
done; no fingerprint can tell its images there from another folder's."""

from __future__ import annotations

import json
import shutil

import torch

from training.__main__ import main


def test_moved_data_of_a_model_without_a_fingerprint_is_not_advised_the_data_option_given(
    tiny_run, image_folder, tmp_path
):
    ckpt = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    gone = tmp_path / "was-here"
    ckpt["meta"]["data_root"] = str(gone)
    ckpt["meta"].pop("data_fingerprint", None)  # as a checkpoint from before it was recorded
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "best.pt")
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    out = tmp_path / "r"
    argv = ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--data", str(moved), "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--no-sample-figures"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "calibration" not in metrics
    said = [note for note in metrics["notes"] if note.startswith("No calibration section")]
    assert len(said) == 1, metrics["notes"]
    assert "evaluate with --data where its data is now" not in said[0], said
    assert "cannot be read now" in said[0] and str(gone) in said[0], said
    assert said[0].endswith(f"the model records no fingerprint of those images to know them by in {moved}."), said
