"""The page says a model's confidences are calibrated only when its card says so (GET /models' `calibrated`).

It had said "Confidences are calibrated: among predictions shown at 80%, about 80 in 100 are right" for every
model, one exported with `--calibrate none` too, whose 80% may be right far less often.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

from conftest import ROOT, open_page, running_service
from inference.manifest import load_manifest
from service.contract import ModelList
from service.loading import LoadedModels, model_list

MODELS = ROOT / "models"


def _loaded(models_dir: Path) -> LoadedModels:
    """The shipped manifest as a worker would list it, without running a model: model_list reads only each
    classifier's placement."""
    manifest = load_manifest(models_dir, verify=False)
    placement = SimpleNamespace(provider="CPUExecutionProvider", fallback=None)
    classifier = SimpleNamespace(on_gpu=False, placement=placement)
    models = {m.name: SimpleNamespace(classifier=classifier) for m in manifest.models}
    default = SimpleNamespace(name=manifest.models[0].name, reason="the manifest's default for cpu hosts")
    return LoadedModels(manifest, models, default)  # type: ignore[arg-type]


def test_models_says_which_models_are_calibrated():
    loaded = _loaded(MODELS)
    first = loaded.manifest.models[0]
    assert first.calibration.method == "temperature"
    # the same model as if exported with --calibrate none: a card without the division
    uncalibrated = first.model_copy(update={"name": "plain", "calibration": type(first.calibration)()})
    loaded.manifest.models.append(uncalibrated)
    loaded.models["plain"] = loaded.models[first.name]
    listed = {m.name: m.calibrated for m in model_list(loaded).models}
    assert listed[first.name] is True
    assert listed["plain"] is False
    # and it reaches the wire (the page reads it from there)
    assert json.loads(model_list(loaded).model_dump_json())["models"][0]["calibrated"] is True


def _models_answer(calibrated: list[bool | None]) -> dict:
    """A /models answer of two models, each calibrated or not as given (None: the field absent)."""
    models = []
    for i, flag in enumerate(calibrated):
        model = {
            "name": f"m{i}",
            "dataset": "folder",
            "arch": "resnet9",
            "classes": ["a", "b", "c"],
            "precision": "fp32",
            "accuracy": 0.9,
            "input_size": [32, 32],
            "fit": "squash",
            "default": i == 0,
        }
        if flag is not None:
            model["calibrated"] = flag
        models.append(model)
    return ModelList.model_validate({"default": "m0", "models": models}).model_dump(mode="json", exclude_none=True)


def test_the_page_claims_calibration_only_for_a_calibrated_model(tmp_path):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    answer = _models_answer([False, True])
    with running_service(MODELS, tmp_path / "server.log", "--threads", "1", env=env) as base:
        with open_page(base, models=lambda route: route.fulfill(json=answer)) as (page, errors):
            header = page.inner_text("header")
            assert "not calibrated" in header, header
            assert "Confidences are calibrated" not in header, header
            page.select_option("#model", "m1")
            header = page.inner_text("header")
            assert "Confidences are calibrated: among predictions shown at 80%" in header, header
            assert not errors
        # a service that does not say claims neither
        silent = _models_answer([None, None])
        with open_page(base, models=lambda route: route.fulfill(json=silent)) as (page, errors):
            header = page.inner_text("header")
            assert "calibrated" not in header, header
            assert not errors
