"""A parity verdict on too few validation images: with --max-val-images 24 one image is 4.17 points, so INT8's
0.5-point top-1 tolerance fails on any single image that differs, and the FAILED line did not say that the sample
was too small to judge by, nor how many images would be. The pass/fail decision itself is unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import export.parity
import export.pipeline
import export.verify
from export.__main__ import main as export_main
from export.parity import judge

CLASSES = 3


def _parity(images: int, flipped: int, split_images: int | None = None, precision: str = "int8"):
    """``images`` images all right in the reference, ``flipped`` of them given another class by the graph."""
    labels = np.zeros(images, int)
    reference = np.tile([0.8, 0.15, 0.05], (images, 1))
    graph = reference.copy()
    graph[:flipped] = [0.15, 0.8, 0.05]
    return judge(precision, reference, graph, labels, 1.0, 1.0, 1.0, split_images=split_images)


def test_one_image_over_the_limit_is_said_with_the_images_that_would_judge_it():
    parity = _parity(24, 1, split_images=5000)
    assert not parity.passed  # the verdict stands: only what it says is added
    assert parity.too_few_images() == (
        "on 24 images one image is 4.17 points, more than the 0.5-point top-1 tolerance for int8: too few to judge; "
        "check on at least 200 images (--max-val-images 200, or the whole split)"
    )
    failures, note = parity.verdict().split("\n")
    assert failures == "; ".join(parity.failures) and note == parity.too_few_images()


def test_a_split_smaller_than_the_images_needed_is_not_advised_a_larger_sample_of_itself():
    parity = _parity(24, 1, split_images=24)
    assert parity.too_few_images() == (
        "on 24 images one image is 4.17 points, more than the 0.5-point top-1 tolerance for int8: too few to judge, "
        "and the validation split holds only 24 images; judging this limit takes a split of at least 200 "
        "(data.val_size)"
    )


@pytest.mark.parametrize(
    ("precision", "needed"),
    [("fp32", 2000), ("fp16", 1000)],  # 100 / 0.05 and 100 / 0.1, computed from the precision table
)
def test_the_images_needed_follow_the_limit_that_failed(precision, needed):
    parity = _parity(24, 1, precision=precision)
    assert f"check on at least {needed:,} images (--max-val-images {needed}," in (parity.too_few_images() or "")


def test_only_the_agreement_failing_names_its_own_limit():
    # the graph's top-1 accuracy equal to the reference's (one image moved each way), 2 of 40 ranked differently
    labels = np.array([0] * 20 + [1] * 20)
    reference = np.array([[0.8, 0.15, 0.05]] * 40)
    reference[20:] = [0.15, 0.8, 0.05]
    reference[0] = [0.15, 0.8, 0.05]  # wrong
    graph = reference.copy()
    graph[0] = [0.8, 0.15, 0.05]  # right now
    graph[20] = [0.8, 0.15, 0.05]  # wrong now
    top1 = float((reference.argmax(1) == labels).mean())
    parity = judge("int8", reference, graph, labels, top1, 1.0, 1.0, split_images=5000)
    assert parity.failures == ["top-1 agreement 95.00% is below 98% for int8"]
    assert parity.too_few_images() == (
        "on 40 images one image is 2.50 points, more than the 2-point agreement limit (98%) for int8: too few to "
        "judge; check on at least 50 images (--max-val-images 50, or the whole split)"
    )


def test_nothing_is_added_where_one_image_is_within_the_limit():
    assert _parity(200, 1).passed  # 0.5 points: at the tolerance
    failed = _parity(200, 3, split_images=5000)  # 1.5 points: a difference this sample can measure
    assert not failed.passed and failed.too_few_images() is None
    assert failed.verdict() == "; ".join(failed.failures)
    assert set(failed.as_dict()) == set(_parity(200, 0).as_dict())  # the card's parity record keeps its keys
    assert "failed_limits" not in failed.as_dict() and "split_images" not in failed.as_dict()


def _one_image_flipped(monkeypatch) -> None:
    """The graph gives one image the reference gets right another class: an INT8 graph that differs on one image."""
    seen: dict = {}
    parity_against, onnx_logits = export.pipeline.parity_against, export.parity.onnx_logits

    def keeping_labels(reference, speed, classifier, images, labels, *args, **kwargs):
        seen["labels"], seen["reference"] = labels, reference
        return parity_against(reference, speed, classifier, images, labels, *args, **kwargs)

    def flipping(classifier, images, *args, **kwargs):
        logits, speed = onnx_logits(classifier, images, *args, **kwargs)
        right = np.flatnonzero(seen["reference"].argmax(1) == seen["labels"])
        assert right.size, "the tiny run gets no validation image right"
        i = right[0]
        logits[i, (seen["labels"][i] + 1) % logits.shape[1]] = logits[i].max() + 10
        return logits, speed

    monkeypatch.setattr(export.pipeline, "parity_against", keeping_labels)
    monkeypatch.setattr(export.verify, "parity_against", keeping_labels)
    monkeypatch.setattr(export.parity, "onnx_logits", flipping)


# conftest's tiny run holds out 15 validation images, fewer than the 200 that INT8's 0.5-point tolerance needs
SMALL_SPLIT_NOTE = (
    "on 8 images one image is 12.50 points, more than the 0.5-point top-1 tolerance for int8: too few to judge, "
    "and the validation split holds only 15 images; judging this limit takes a split of at least 200 (data.val_size)"
)


def test_verify_says_its_failure_is_on_too_few_images(tiny_models_dir, monkeypatch, capsys):
    _one_image_flipped(monkeypatch)
    argv = ["verify", "tiny-int8", "--models-dir", str(tiny_models_dir), "--cache-dir", "", "--max-val-images", "8"]
    assert export_main([*argv, "--no-reference-cache"]) == 1
    lines = capsys.readouterr().err.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAILED: "))
    assert "accuracy differs by -12.500 points (tolerance 0.5 for int8)" in lines[failed], lines
    assert lines[failed + 1] == SMALL_SPLIT_NOTE, lines
    assert not any("Traceback" in line for line in lines)


def test_export_says_its_failure_is_on_too_few_images(tiny_run, tmp_path, monkeypatch, capsys):
    _one_image_flipped(monkeypatch)
    argv = ["--checkpoint", str(tiny_run / "best.pt"), "--name", "quick", "--precision", "int8"]
    models = tmp_path / "models"
    argv += ["--models-dir", str(models), "--cache-dir", "", "--max-val-images", "8", "--no-reference-cache"]
    assert export_main(argv) == 1
    lines = capsys.readouterr().err.splitlines()
    failed = next(i for i, line in enumerate(lines) if line.startswith("FAILED: quick (int8) failed verification: "))
    assert lines[failed + 1] == SMALL_SPLIT_NOTE, lines
    assert not (models / "manifest.json").exists()  # still refused
