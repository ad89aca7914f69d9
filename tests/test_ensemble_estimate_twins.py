"""The ensemble estimate from reports refuses one model given as two members: a copied report folder was counted
twice and printed as an ensemble of two."""

import json
import shutil

import numpy as np
import pytest

from training.__main__ import main as training_main

LABELS = [0, 1, 1]


def _report(folder, logits, source=None, tta="none"):
    from training.reports.predictions import METRICS_FILE, save_predictions

    folder.mkdir()
    save_predictions(folder / "predictions.npz", np.asarray(logits, np.float32), np.asarray(LABELS), ["a", "b"], "fp")
    metrics = {"tta": tta, **({"source": source} if source is not None else {})}
    (folder / METRICS_FILE).write_text(json.dumps(metrics))
    return folder


def _checkpoint_source(tmp_path, epoch=3, top1=0.5):
    return {"kind": "checkpoint", "path": str(tmp_path / "run" / "best.pt"), "arch": "resnet9", "epoch": epoch,
            "recorded_top1": top1, "used_ema": True}  # fmt: skip


def test_a_copied_report_folder_is_refused_naming_both(tmp_path, capsys):
    x = _report(tmp_path / "x", [[2, 0], [0, 2], [2, 0]], _checkpoint_source(tmp_path))
    copy = tmp_path / "x-copy"
    shutil.copytree(x, copy)
    assert training_main(["ensemble", str(x), str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{x} and {copy} are reports of one model ({tmp_path / 'run' / 'best.pt'} at epoch 3)" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_one_model_under_two_augmentations_or_devices_is_one_member(tmp_path):
    from training.ensemble import estimate_from_reports

    source = _checkpoint_source(tmp_path)
    plain = _report(tmp_path / "plain", [[2, 0], [0, 2], [2, 0]], source)
    flip = _report(tmp_path / "flip", [[1, 0], [0, 3], [1, 1.5]], source, tta="flip")
    with pytest.raises(ValueError, match="to measure tta none against flip, `python -m training compare` them"):
        estimate_from_reports([plain, flip])
    onnx = {"kind": "onnx", "path": str(tmp_path / "m.onnx"), "name": "m", "precision": "fp16"}
    cpu = _report(tmp_path / "cpu", [[2, 0], [0, 2], [2, 0]], {**onnx, "providers": ["CPUExecutionProvider"]})
    gpu = _report(tmp_path / "gpu", [[2, 0.1], [0, 2], [2, 0]], {**onnx, "providers": ["CUDAExecutionProvider"]})
    with pytest.raises(ValueError, match="are reports of one model"):
        estimate_from_reports([cpu, gpu])


def test_copies_without_a_recorded_model_are_caught_by_their_logits(tmp_path):
    from training.ensemble import estimate_from_reports

    a = _report(tmp_path / "a", [[2, 0], [0, 2], [2, 0]])
    other = _report(tmp_path / "other", [[0, 2], [0, 2], [0, 2]])
    b = tmp_path / "b"
    shutil.copytree(a, b)
    with pytest.raises(ValueError, match=f"{a} and {b} hold the same predictions, logit for logit"):
        estimate_from_reports([a, other, b])


def test_another_state_of_the_same_run_or_another_file_is_another_member(tmp_path):
    from training.ensemble import estimate_from_reports

    early = _report(tmp_path / "early", [[2, 0], [0, 2], [2, 0]], _checkpoint_source(tmp_path, epoch=3))
    late = _report(tmp_path / "late", [[2, 0], [0, 2], [0, 2]], _checkpoint_source(tmp_path, epoch=9, top1=1.0))
    moved = _checkpoint_source(tmp_path)
    moved["path"] = str(tmp_path / "elsewhere" / "best.pt")
    apart = _report(tmp_path / "apart", [[0, 2], [0, 2], [0, 2]], moved)
    result = estimate_from_reports([early, late, apart])
    assert [m["report"] for m in result["members"]] == [str(early), str(late), str(apart)]
