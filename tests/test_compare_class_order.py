"""`compare` of two models (or reports) that list the same classes in other orders: paired by class name."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.__main__ import main
from training.data import ImageArrays
from training.reports.compare import compare
from training.reports.predictions import METRICS_FILE, PREDICTIONS_FILE, save_predictions
from training.reports.samples import fingerprint_by_name, sample_fingerprint

# tests/test_ensemble_estimate_class_order.py uses these and the helpers below that write reports and checkpoints.
CLASSES = ["alpha", "beta", "gamma"]
ORDER = [2, 0, 1]  # the permuted model's class i is the original's ORDER[i]: gamma, alpha, beta (not its own inverse)


def _figures(result: dict) -> dict:
    """What a comparison measures, without the paths and notes that tell the two sides apart."""
    return {
        "top1": (result["a"]["top1"], result["b"]["top1"]),
        "correct": (result["a"]["correct"], result["b"]["correct"]),
        "num_samples": result["num_samples"],
        "difference_points": result["difference_points"],
        "difference_interval_points": result["difference_interval_points"],
        "mcnemar": result["mcnemar"],
    }


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


# -- reports written by hand ------------------------------------------------------------------------------------


def _images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def _report(
    folder: Path, images: np.ndarray, labels: np.ndarray, logits: np.ndarray, classes: list[str], by_name: bool = True
) -> Path:
    """A report as ``evaluate`` writes one of these samples (labels and logits' columns in ``classes``' order);
    without ``by_name``, one an earlier version wrote."""
    folder.mkdir()
    data = ImageArrays(images, labels, classes)
    save_predictions(
        folder / PREDICTIONS_FILE,
        logits.astype(np.float32),
        labels,
        classes,
        sample_fingerprint(data),
        fingerprint_by_name(data, classes) if by_name else None,
    )
    (folder / METRICS_FILE).write_text('{"tta": "none"}')
    return folder


def _permuted(folder: Path, images: np.ndarray, labels: np.ndarray, logits: np.ndarray, **kw) -> Path:
    """The report of the same predictions by a model listing its classes in ``ORDER``."""
    position = np.argsort(ORDER)  # where each original class sits in the permuted order
    return _report(folder, images, position[labels], logits[:, ORDER], [CLASSES[i] for i in ORDER], **kw)


@pytest.fixture
def pair(tmp_path):
    """Reports A and B of 60 samples whose predictions disagree on some, and B's twin in another class order."""
    rng = np.random.default_rng(0)
    images, labels = _images(60, 1), rng.integers(0, 3, 60)
    logits_a, logits_b = rng.normal(size=(60, 3)), rng.normal(size=(60, 3))
    logits_a[np.arange(60), labels] += 1.5
    a = _report(tmp_path / "a", images, labels, logits_a, CLASSES)
    b = _report(tmp_path / "b", images, labels, logits_b, CLASSES)
    b_permuted = _permuted(tmp_path / "b-permuted", images, labels, logits_b)
    return a, b, b_permuted, (images, labels, logits_b)


def test_reports_in_another_class_order_compare_as_the_same_order_does(pair, capsys):
    a, b, b_permuted, _ = pair
    plain, permuted = compare(a, b), compare(a, b_permuted)
    assert plain["mcnemar"]["a_right_b_wrong"] + plain["mcnemar"]["a_wrong_b_right"] > 0  # a test of something
    assert _figures(permuted) == _figures(plain)
    assert permuted["notes"] and "matched to A's classes by name" in permuted["notes"][0]
    assert not plain["notes"]
    # either way round, and as the command prints it
    assert _figures(compare(b_permuted, a)) == _figures(compare(b, a))
    assert main(["compare", str(a), str(b_permuted), "--json"]) == 0
    assert _figures(json.loads(capsys.readouterr().out)) == _figures(plain)


def test_the_fingerprint_by_name_is_the_same_for_the_same_samples_in_any_class_order():
    images, labels = _images(12, 3), np.arange(12) % 3
    permuted_classes = [CLASSES[i] for i in ORDER]
    position = np.argsort(ORDER)
    same = ImageArrays(images, position[labels], permuted_classes)
    original = ImageArrays(images, labels, CLASSES)
    assert sample_fingerprint(same) != sample_fingerprint(original)  # indices into each order
    assert fingerprint_by_name(same, permuted_classes) == fingerprint_by_name(original, CLASSES)
    # Case and Unicode form as a folder's class folders are matched to a model's classes
    assert fingerprint_by_name(original, ["Alpha", "BETA", "gamma"]) == fingerprint_by_name(original, CLASSES)
    relabelled = ImageArrays(images, (labels + 1) % 3, CLASSES)
    assert fingerprint_by_name(relabelled, CLASSES) != fingerprint_by_name(original, CLASSES)
    other_images = ImageArrays(_images(12, 4), labels, CLASSES)
    assert fingerprint_by_name(other_images, CLASSES) != fingerprint_by_name(original, CLASSES)


def test_other_samples_in_another_class_order_are_still_refused(pair, tmp_path, capsys):
    a, _, _, (images, labels, logits_b) = pair
    other = _permuted(tmp_path / "other", _images(60, 9), labels, logits_b)
    assert main(["compare", str(a), str(other)]) == 2
    assert "A and B were evaluated on different samples" in _one_error_line(capsys)


def test_reports_of_an_earlier_version_in_other_orders_are_refused_saying_what_to_do(pair, tmp_path, capsys):
    """A report without its fingerprint by name holds its samples' digest in its own class order only: another
    report in another order cannot be checked against it."""
    a, _, _, (images, labels, logits_b) = pair
    old = _permuted(tmp_path / "old", images, labels, logits_b, by_name=False)
    assert main(["compare", str(a), str(old)]) == 2
    err = _one_error_line(capsys)
    assert "the same 3 classes in different orders (from index 0: A alpha, B gamma)" in err, err
    assert "report B (an earlier version's) holds its labels" in err and "evaluate it again" in err, err


@pytest.mark.parametrize(
    ("classes_b", "said"),
    [
        (["alpha", "beta", "delta"], "A predicts the classes alpha, beta, gamma and B alpha, beta, delta: not the "
         "same task (only A: gamma; only B: delta)"),
        (["cat", "dog", "emu"], "A predicts the classes alpha, beta, gamma and B cat, dog, emu: not the same task"),
        (["gamma", "alpha", "beta", "delta"], "A has 3 classes and B has 4 (only A: none; only B: delta): not the "
         "same task"),
        (["gamma", "alpha", "beta", "ALPHA"], "but one of them has two classes named ALPHA (ignoring case)"),
    ],
)  # fmt: skip
def test_other_class_sets_are_refused_in_one_line_naming_what_differs(pair, tmp_path, capsys, classes_b, said):
    a, _, _, (images, labels, _) = pair
    logits = np.zeros((len(labels), len(classes_b)), np.float32)
    b = _report(tmp_path / "other-classes", images, labels, logits, classes_b)
    assert main(["compare", str(a), str(b)]) == 2
    assert said in _one_error_line(capsys)


# -- checkpoints, as a user compares them -----------------------------------------------------------------------


def _other_model(run: Path, out: Path, order: list[int]) -> Path:
    """A checkpoint of another network than ``run``'s best.pt (its classifier's weights moved), listing its
    classes in ``order``: its logits' columns and its classes' names permuted alike."""
    ckpt = torch.load(run / "best.pt", weights_only=False)
    ckpt["meta"] = {**ckpt["meta"], "classes": [ckpt["meta"]["classes"][i] for i in order]}
    for key in ("model", "ema"):
        if ckpt.get(key):
            weights = dict(ckpt[key])
            fc = next(k for k in weights if k.endswith("fc.weight"))
            noise = torch.randn(weights[fc].shape, generator=torch.Generator().manual_seed(0))
            weights[fc] = (weights[fc] + weights[fc].abs().mean() * 3 * noise)[order]
            ckpt[key] = weights
    torch.save(ckpt, out)
    return out


def test_checkpoints_and_reports_in_another_class_order_compare_as_the_same_order_does(tiny_run, tmp_path, capsys):
    assert load_classes(tiny_run) == CLASSES
    b = _other_model(tiny_run, tmp_path / "b.pt", [0, 1, 2])
    b_permuted = _other_model(tiny_run, tmp_path / "b-permuted.pt", ORDER)
    plain = compare(tiny_run, b, device="cpu")
    assert plain["mcnemar"]["a_right_b_wrong"] + plain["mcnemar"]["a_wrong_b_right"] > 0  # a test of something
    assert _figures(compare(tiny_run, b_permuted, device="cpu")) == _figures(plain)
    assert main(["compare", str(tiny_run), str(b_permuted), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "note: B lists the classes in another order (gamma, alpha, beta)" in printed, printed

    # the permuted model's report against the model, and against an earlier version's report of A (its labels
    # as indices into A's order only, which the model's side digests in that order to pair them)
    report = tmp_path / "b-permuted-report"
    assert main(["evaluate", "--checkpoint", str(b_permuted), "--out", str(report), "--device", "cpu"]) == 0
    assert _figures(compare(tiny_run, report, device="cpu")) == _figures(plain)
    report_a = tmp_path / "a-report"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(report_a), "--device", "cpu"]) == 0
    _drop_fingerprint_by_name(report_a)
    assert _figures(compare(report_a, b_permuted, device="cpu")) == _figures(plain)


def load_classes(run: Path) -> list[str]:
    return list(torch.load(run / "best.pt", weights_only=False)["meta"]["classes"])


def _drop_fingerprint_by_name(report: Path) -> None:
    with np.load(report / PREDICTIONS_FILE) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "fingerprint_by_name"}
    np.savez_compressed(report / PREDICTIONS_FILE, **arrays)
