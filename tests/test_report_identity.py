"""A report names its model's checkpoint by sha256: a checkpoint's report and the report of its ONNX export (whose
card records that sha256) are known for one model's, and the ensemble estimate refuses them as two members."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest

from inference.manifest import METADATA_KEY, sha256_file
from training.__main__ import main
from training.ensemble import estimate_from_reports

LABELS = [0, 1, 1]
SHA = "ab" * 32


def _report(folder, logits, source, tta="none"):
    from training.reports.predictions import METRICS_FILE, save_predictions

    folder.mkdir()
    save_predictions(folder / "predictions.npz", np.asarray(logits, np.float32), np.asarray(LABELS), ["a", "b"], "fp")
    (folder / METRICS_FILE).write_text(json.dumps({"tta": tta, "source": source}))
    return folder


def _checkpoint(tmp_path, sha=SHA):
    source = {"kind": "checkpoint", "path": str(tmp_path / "run" / "best.pt"), "arch": "resnet9", "epoch": 3}
    return {**source, **({"checkpoint_sha256": sha} if sha else {})}


def _onnx(tmp_path, name="m", sha=SHA):
    source = {"kind": "onnx", "path": str(tmp_path / f"{name}.onnx"), "arch": "resnet9", "precision": "fp32"}
    recorded = {"checkpoint_sha256": sha, "checkpoint": str(tmp_path / "run" / "best.pt")} if sha else {}
    return {**source, **recorded}


def test_a_checkpoints_report_and_its_exports_are_one_model(tmp_path):
    ckpt = _report(tmp_path / "ckpt", [[2, 0], [0, 2], [2, 0]], _checkpoint(tmp_path))
    export = _report(tmp_path / "export", [[2, 0.1], [0, 2], [2, 0]], _onnx(tmp_path))
    said = (
        f"{ckpt} and {export} are reports of one model ({tmp_path / 'run' / 'best.pt'} and {tmp_path / 'm.onnx'} "
        f"hold the checkpoint of sha256 {SHA[:12]})"
    )
    with pytest.raises(ValueError, match="^" + re.escape(said)) as caught:
        estimate_from_reports([ckpt, export])
    assert "to measure one file against the other, `python -m training compare` them" in str(caught.value)
    int8 = _report(tmp_path / "int8", [[1, 0], [0, 1], [1, 0.5]], _onnx(tmp_path, "m-int8"))
    with pytest.raises(ValueError, match=f"{export} and {int8} are reports of one model"):
        estimate_from_reports([export, int8])


@pytest.mark.parametrize("source", [_checkpoint, _onnx])
def test_a_report_from_before_reports_named_the_checkpoint_and_a_new_one_of_the_same_file_are_one_model(
    tmp_path, source
):
    """A report written before reports recorded the checkpoint they hold, and one of the same file written since
    (here with another TTA), are one model's: the new keys made their sources differ, and the pair was averaged as
    two members."""
    old = _report(tmp_path / "old", [[2, 0], [0, 2], [2, 0]], source(tmp_path, sha=None))
    new = _report(tmp_path / "new", [[2, 1], [0, 2], [2, 0]], source(tmp_path), tta="flip")
    with pytest.raises(ValueError, match=f"{old} and {new} are reports of one model .*tta none against flip"):
        estimate_from_reports([old, new])


@pytest.mark.parametrize("recorded", ["neither", "checkpoint only", "export only", "other checkpoint"])
def test_without_one_recorded_checkpoint_they_are_two_members_as_before(tmp_path, recorded):
    """An export whose card records no checkpoint, or a checkpoint's report written before reports named it, is
    told apart by its logits alone, as before; an export of another checkpoint is another model."""
    ckpt_sha = SHA if recorded in ("checkpoint only", "other checkpoint") else None
    onnx_sha = {"export only": SHA, "other checkpoint": "cd" * 32}.get(recorded)
    ckpt = _report(tmp_path / "ckpt", [[2, 0], [0, 2], [2, 0]], _checkpoint(tmp_path, ckpt_sha))
    export = _report(tmp_path / "export", [[0, 2], [0, 2], [0, 2]], _onnx(tmp_path, sha=onnx_sha))
    result = estimate_from_reports([ckpt, export])
    assert [m["report"] for m in result["members"]] == [str(ckpt), str(export)]


def _without_checkpoint(graph, out):
    """``graph`` with a card that records no checkpoint, as one exported before cards did."""
    proto = onnx.load(str(graph))
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            card = json.loads(prop.value)
            card["source"] = {k: v for k, v in card["source"].items() if k not in ("checkpoint", "checkpoint_sha256")}
            prop.value = json.dumps(card)
    onnx.save(proto, str(out))
    return out


def test_evaluate_names_the_checkpoint_of_a_checkpoint_and_of_its_export(tiny_run, tiny_models_dir, tmp_path, capsys):
    sha = sha256_file(tiny_run / "best.pt")
    reports = {
        "ckpt": ["--checkpoint", str(tiny_run / "best.pt")],
        "export": ["--onnx", str(tiny_models_dir / "tiny.onnx")],
        "bare": ["--onnx", str(_without_checkpoint(tiny_models_dir / "tiny.onnx", tmp_path / "bare.onnx"))],
    }
    for name, model in reports.items():
        out = tmp_path / name
        assert main(["evaluate", *model, "--out", str(out), "--device", "cpu", "--no-sample-figures"]) == 0
    sources = {name: json.loads((tmp_path / name / "metrics.json").read_text())["source"] for name in reports}
    assert sources["ckpt"]["checkpoint_sha256"] == sha == sources["export"]["checkpoint_sha256"]
    assert "checkpoint_sha256" not in sources["bare"]
    capsys.readouterr()
    assert main(["ensemble", str(tmp_path / "ckpt"), str(tmp_path / "export")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ckpt'} and {tmp_path / 'export'} are reports of one model" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
