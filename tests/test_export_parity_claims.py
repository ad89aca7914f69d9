"""What the export's parity and INT8 claims rest on: INT8 is calibrated on training images only, never the
validation images its parity is then measured on; a parity limit crossed is a refusal, not a figure recorded;
and the figures each shipped model's card records agree with each other and with the limits they passed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from export import pipeline, sources, verify
from export.__main__ import main as export_main
from export.parity import Parity, judge
from export.pipeline import ParityError, convert_variant, publish
from export.sources import calibration_images, validation_split
from export.variants import Converter
from export.verify import RecordedMetrics
from inference.precisions import PRECISIONS
from inference.preprocess import to_model_input

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / "models" / "manifest.json").read_text(encoding="utf-8"))
CLASSES = ["alpha", "beta", "gamma"]  # conftest's image_folder


def _source(folder: Path) -> dict:
    """A run's data source as the checkpoint's meta and the card record it (conftest's 60 images, 15 held out)."""
    return {
        "dataset": "folder",
        "data_root": str(folder),
        "val_size": 15,
        "split_seed": 42,
        "input_size": 32,
        "cache_dir": None,
    }


def _rows(batch: np.ndarray) -> set[bytes]:
    return {image.tobytes() for image in batch}


def test_int8_calibration_images_are_training_images_and_none_of_the_validation_ones(image_folder):
    """Asked for more than there are, calibration takes every training image: each of them, and not one of the
    images parity is measured on (conftest's images are noise, so no two are alike)."""
    source = _source(image_folder)
    val = to_model_input(validation_split(source, None, CLASSES).images)
    calibration = calibration_images(source, 10_000)
    train = to_model_input(sources._split(source, "train").images)
    assert len(val) == 15 and len(calibration) == 45
    assert _rows(calibration) == _rows(train)
    assert not _rows(calibration) & _rows(val)


def test_the_int8_converter_is_handed_training_images_only(image_folder, tmp_path, monkeypatch):
    """convert_variant, which export and rederive both call, gives the quantiser the training split of the
    card's source, and the card records the count it used."""
    handed: list[np.ndarray] = []

    def quantise(src, dst, images, ranges):
        handed.append(images)
        return len(images)

    monkeypatch.setattr(pipeline, "converter", lambda name: Converter(quantise, "training-split images, {ranges}"))
    monkeypatch.setattr(pipeline, "write_card", lambda out, card: None)
    card = SimpleNamespace(name="tiny-int8", precision="int8", source={})
    source = _source(image_folder)
    convert_variant(tmp_path / "fp32.onnx", tmp_path / "model.onnx", card, source, 10_000)  # type: ignore[arg-type]
    (images,) = handed
    val = to_model_input(validation_split(source, None, CLASSES).images)
    assert len(images) == 45 and not _rows(images) & _rows(val)
    assert card.source["calibration"] == "45 training-split images, MinMax"


def _int8_parity(disagreeing: int, images: int = 1000) -> Parity:
    """INT8 against its reference on ``images``, ``disagreeing`` of them given another class while the accuracy
    stays the same (each swap moves one right image to wrong and one wrong to right), so only agreement is judged."""
    labels = np.zeros(images, dtype=int)
    reference = np.tile([0.6, 0.3, 0.1], (images, 1))
    reference[images // 2 :] = [0.3, 0.6, 0.1]  # half right, half wrong
    graph = reference.copy()
    half = disagreeing // 2
    graph[:half] = [0.3, 0.6, 0.1]
    graph[images // 2 : images // 2 + disagreeing - half] = [0.6, 0.3, 0.1]
    top1 = float((reference.argmax(1) == labels).mean())
    return judge("int8", reference, graph, labels, top1, 1.0, 1.0)


def test_int8_parity_below_its_agreement_is_refused_and_its_figures_not_recorded(tmp_path):
    entry = PRECISIONS["int8"]
    allowed = round(1000 * (1 - entry.min_agreement))
    at_limit = _int8_parity(allowed)
    assert at_limit.top1_agreement == entry.min_agreement and abs(at_limit.accuracy_diff_points) <= 0.1
    assert at_limit.passed, at_limit.failures
    crossed = _int8_parity(allowed + 2)
    assert crossed.failures == [f"top-1 agreement 97.80% is below {100 * entry.min_agreement:g}% for int8"]
    card = SimpleNamespace(name="tiny-int8", precision="int8", metrics={"val_top1": 0.0})
    with pytest.raises(ParityError, match=r"tiny-int8 \(int8\) failed verification: top-1 agreement 97\.80%"):
        publish(tmp_path / "model.onnx", card, crossed, np.zeros((1000, 3)), np.zeros(1000, int), "")  # type: ignore[arg-type]
    assert card.metrics == {"val_top1": 0.0}


def test_verify_exits_1_and_names_the_limit_a_model_crossed(monkeypatch, capsys):
    crossed = _int8_parity(22)
    same = {"ece": 0.0, "nll": 0.0, "brier": 0.0, "mean_confidence": 0.5, "accuracy": 0.5}
    report = {"samples": 1000, "temperature": 1.0, "before": same, "after": same}
    monkeypatch.setattr(verify, "verify_model", lambda *args: (crossed, report))
    assert export_main(["verify", "tiny-int8"]) == 1
    out = capsys.readouterr()
    assert "verified" not in out.out
    assert "FAILED: top-1 agreement 97.80% is below 98% for int8" in out.err


@pytest.mark.parametrize("entry", MANIFEST["models"], ids=[m["name"] for m in MANIFEST["models"]])
def test_each_shipped_cards_figures_agree_with_each_other_and_passed_todays_limits(entry):
    """The manifest is not hashed: a figure edited by hand, or left from another file, is found here. Top-1 and
    agreement are counts of images; the difference is the two top-1s'; the calibration report is of the same
    images and temperature; and every recorded parity is within its precision's limits as they stand now."""
    metrics, parity, limits = entry["metrics"], entry["metrics"]["parity"], PRECISIONS[entry["precision"]]
    samples = metrics["val_samples"]
    assert parity["samples"] == samples == entry["source"]["val_size"]
    assert metrics["val_top1"] == parity["onnx_top1"] and metrics["val_top5"] == parity["onnx_top5"]
    for fraction in (parity["onnx_top1"], parity["torch_top1"], parity["top1_agreement"]):
        assert fraction * samples == pytest.approx(round(fraction * samples), abs=1e-6)
    assert parity["accuracy_diff_points"] == pytest.approx(100 * (parity["onnx_top1"] - parity["torch_top1"]))
    assert parity["passed"] and parity["failures"] == []
    assert abs(parity["accuracy_diff_points"]) <= limits.tolerance_points + 1e-9
    assert limits.min_agreement is None or parity["top1_agreement"] >= limits.min_agreement
    assert limits.max_prob_diff is None or parity["max_abs_prob_diff"] <= limits.max_prob_diff
    calibration = metrics["calibration"]
    assert calibration["samples"] == samples
    assert calibration["temperature"] == entry["calibration"]["temperature"]
    assert calibration["after"]["accuracy"] == calibration["before"]["accuracy"] == metrics["val_top1"]
    assert f"validation split ({samples} images)" in entry["calibration"]["fitted_on"]
    if entry["precision"] == "int8":
        assert re.fullmatch(r"\d+ training-split images, .+", entry["source"]["calibration"])


def _card_figures(top1: float, samples: int = 5000) -> RecordedMetrics:
    return RecordedMetrics(val_top1=top1, val_samples=samples)


def _measured(top1: float, samples: int = 5000) -> Parity:
    return Parity("int8", samples, top1, top1, 1.0, float("nan"), float("nan"), float("nan"), 1.0)


def test_a_card_figure_exactly_the_card_tolerance_from_the_measurement_passes():
    """Verify refuses a card whose top-1 is *over* 0.3 points from the file's; 15 images of 5,000 is 0.3 exactly."""
    over = verify._against_card(_measured(4578 / 5000), _card_figures(4562 / 5000))
    assert over.failures and "over 0.3" in over.failures[0]
    exactly = verify._against_card(_measured(4578 / 5000), _card_figures(4563 / 5000))
    assert exactly.failures == []
