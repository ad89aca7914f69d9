"""`export verify` without the checkpoint compares a model with the top-1 recorded when it was made. A graph made
from another graph (`export rederive`) was measured against that graph, so its recorded figure is the graph's:
the summary named it PyTorch's. (Where that graph is still there unchanged, verify compares with it image by image
instead: tests/test_verify_derived_graph.py; here it is another file now.)"""

from __future__ import annotations

import json
import logging
import shutil

from export.pipeline import export_checkpoint
from export.rederive import rederive
from export.verify import verify_model


def test_a_derived_graph_is_verified_against_the_recorded_figure_of_the_graph_it_came_from(tiny_run, tmp_path, caplog):
    checkpoint = tmp_path / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copy(tiny_run / "best.pt", checkpoint)
    models = tmp_path / "models"
    export_checkpoint(checkpoint, "raw", "fp32", models, cache_dir=None, calibrate="none")
    rederive("raw", "raw-int8", "int8", models, cache_dir=None)
    checkpoint.unlink()  # a fresh clone: no checkpoint
    raw = json.loads((models / "manifest.json").read_text())
    (entry,) = [e for e in raw["models"] if e["name"] == "raw-int8"]
    entry["source"]["derived_from"]["sha256"] = "0" * 64  # the graph it came from is not the one beside it now
    (models / "manifest.json").write_text(json.dumps(raw))

    with caplog.at_level(logging.WARNING, logger="export"):
        derived, _ = verify_model("raw-int8", models, cache_dir=None)
    assert derived.passed and not derived.compared
    assert derived.summary().startswith("int8: FP32 graph top-1 "), derived.summary()
    assert "with the FP32 graph accuracy recorded at export" in caplog.text, caplog.text

    exported, _ = verify_model("raw", models, cache_dir=None)  # made from the checkpoint: PyTorch's figure
    assert exported.summary().startswith("fp32: PyTorch top-1 "), exported.summary()
