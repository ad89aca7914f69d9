"""`export verify` of a model re-derived from an FP32 graph (the shipped default's INT8 and FP16 files) in a fresh
clone, where the checkpoint is gone but the graph it was converted from is still listed beside it: the parity the
card records was measured against that graph, so verify measures it again, image by image and on any number of
validation images, instead of refusing a quick check or comparing the top-1 alone."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture(scope="module")
def derived_models(tiny_run, tmp_path_factory):
    """raw (uncalibrated FP32), cal-int8 (rederived from raw, T appended) and cal-copy (rederived from the
    calibrated cal, T inherited), exported from a checkpoint that is then deleted."""
    from export.pipeline import export_checkpoint
    from export.rederive import rederive

    tmp = tmp_path_factory.mktemp("derived")
    checkpoint = tmp / "run" / "best.pt"
    checkpoint.parent.mkdir()
    shutil.copyfile(tiny_run / "best.pt", checkpoint)
    models = tmp / "models"
    export_checkpoint(checkpoint, "raw", "fp32", models, cache_dir=None, calibrate="none")
    rederive("raw", "cal", "fp32", models, cache_dir=None)
    rederive("raw", "cal-int8", "int8", models, cache_dir=None)
    rederive("cal", "cal-copy", "fp32", models, calibrate="none", cache_dir=None)
    checkpoint.unlink()
    return models


@pytest.mark.parametrize("name", ["cal-int8", "cal-copy"])
def test_a_derived_model_is_compared_with_its_graph_image_by_image_without_the_checkpoint(derived_models, name):
    from export.verify import verify_model

    parity, _ = verify_model(name, derived_models, cache_dir=None)
    assert parity.compared  # a per-image agreement, not the top-1 recorded at export alone
    assert parity.passed, parity.failures
    if name == "cal-copy":  # the same graph: the inherited T is not divided a second time
        assert parity.top1_agreement == 1.0 and parity.max_abs_prob_diff < 1e-5


def test_a_quick_check_of_a_derived_model_runs_without_the_checkpoint(derived_models):
    from export.verify import verify_model

    parity, _ = verify_model("cal-int8", derived_models, cache_dir=None, max_val_images=10)
    assert parity.samples == 10 and parity.compared and parity.passed, parity.failures


def test_a_changed_reference_graph_is_not_compared_with(derived_models, tmp_path):
    """A graph of that name that is not the one recorded (its sha256 differs) is not the reference: verify falls
    back to the figures recorded at export, which cannot judge a quick check."""
    from export.verify import verify_model
    from inference.errors import UsageError

    models = tmp_path / "models"
    shutil.copytree(derived_models, models)
    raw = json.loads((models / "manifest.json").read_text())
    (entry,) = [e for e in raw["models"] if e["name"] == "cal-int8"]
    entry["source"]["derived_from"]["sha256"] = "0" * 64
    (models / "manifest.json").write_text(json.dumps(raw))
    parity, _ = verify_model("cal-int8", models, cache_dir=None)
    assert not parity.compared
    with pytest.raises(UsageError, match="no recorded FP32 graph accuracy on the same 10 images"):
        verify_model("cal-int8", models, cache_dir=None, max_val_images=10)


def test_a_model_named_as_its_own_reference_graph_is_not_compared_with_itself(derived_models, tmp_path):
    """A manifest edited by hand so that derived_from names the model's own file and sha256: compared with itself,
    any file passed, at 100% agreement; it falls back to the figure recorded at export instead."""
    from export.verify import verify_model

    models = tmp_path / "models"
    shutil.copytree(derived_models, models)
    raw = json.loads((models / "manifest.json").read_text())
    (entry,) = [e for e in raw["models"] if e["name"] == "cal-int8"]
    entry["source"]["derived_from"].update(file=f"../elsewhere/{entry['file']}", sha256=entry["sha256"])
    (models / "manifest.json").write_text(json.dumps(raw))
    parity, _ = verify_model("cal-int8", models, cache_dir=None)
    assert not parity.compared
