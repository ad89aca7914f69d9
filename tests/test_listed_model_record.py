"""verify, rederive and recover read a listed model's card through the record ``listed_model`` checked, never
the entry's free ``source`` and ``metrics`` mappings (../shared/STYLE.md: a type should be the truth)."""

from __future__ import annotations

import json
import shutil

from export.__main__ import main as export_main
from export.verify import RecordedSource, listed_model
from inference.manifest import load_manifest


def test_listed_model_returns_the_record_it_checked(tiny_models_dir, tmp_path):
    from export.verify import ListedModel, RecordedMetrics

    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    raw = json.loads((models / "manifest.json").read_text())
    card = next(m for m in raw["models"] if m["name"] == "tiny")
    card["source"].pop("tta")  # a card from before cards recorded one: none
    (models / "manifest.json").write_text(json.dumps(raw))
    listed = listed_model(models, "tiny")
    entry = load_manifest(models, verify=False).get("tiny")
    assert isinstance(listed, ListedModel) and listed.entry == entry
    assert isinstance(listed.source, RecordedSource) and isinstance(listed.metrics, RecordedMetrics)
    assert listed.source.tta == "none" and listed.source.data_root == entry.source["data_root"]
    assert listed.metrics.val_samples == entry.metrics["val_samples"]


def test_recover_refuses_a_card_whose_model_args_are_null_in_one_line(tiny_models_dir, tmp_path, capsys):
    """``model_args: null`` passed the check for a missing key and ended in a TypeError traceback (``**None``)
    when the network was built."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    raw = json.loads((models / "manifest.json").read_text())
    next(m for m in raw["models"] if m["name"] == "tiny")["source"]["model_args"] = None
    (models / "manifest.json").write_text(json.dumps(raw))
    out = tmp_path / "recovered.pt"
    assert export_main(["recover", "tiny", "--out", str(out), "--models-dir", str(models)]) == 2
    err = capsys.readouterr().err
    assert err == "error: tiny's card lacks model_args: it does not say how to rebuild its network\n"
    assert not out.exists()


def test_verify_reads_a_derived_graph_from_its_typed_record(tiny_models_dir, tmp_path, capsys):
    """A card derived from another graph and without its checkpoint is compared with the recorded FP32 graph's
    figure, as its typed ``derived_from`` says."""
    models = tmp_path / "models"
    shutil.copytree(tiny_models_dir, models)
    raw = json.loads((models / "manifest.json").read_text())
    card = next(m for m in raw["models"] if m["name"] == "tiny")
    card["source"]["checkpoint"] = str(tmp_path / "gone.pt")
    card["source"]["derived_from"] = {"name": "other", "file": "other.onnx", "sha256": "ab" * 32}
    card["metrics"]["parity"] = None
    (models / "manifest.json").write_text(json.dumps(raw))
    assert listed_model(models, "tiny").source.derived_from == card["source"]["derived_from"]
    assert export_main(["verify", "tiny", "--models-dir", str(models)]) == 2
    assert "error: tiny: no checkpoint and no recorded FP32 graph accuracy" in capsys.readouterr().err
