"""Evaluation reports, Grad-CAM, model comparison and ablations."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_overrides
from training.__main__ import main
from training.checkpoint import load_checkpoint, model_from_checkpoint
from training.reports import figures
from training.reports.ablate_variants import parse_vary, split_values
from training.reports.calibration import calibration_metrics, fit_temperature
from training.reports.evaluate import FIGURES
from training.reports.figures import MIN_BIN_SAMPLES, worst_classes
from training.reports.gradcam import GradCAM
from training.reports.metrics import (
    MCNEMAR_EXACT_BELOW,
    brier_score,
    compute_metrics,
    expected_calibration_error,
    mcnemar,
    negative_log_likelihood,
    paired_difference_interval,
    reliability_bins,
    softmax,
)
from training.reports.predictions import load_predictions, logits_before_temperature

# Every figure a report of a checkpoint writes (the module's own list, which also says what a reused --out loses).
REPORT_FILES = ["metrics.json", "predictions.npz", *FIGURES, "history.json", "report.md"]


def _logits_from(preds: list[int], confidence: list[float], num_classes: int) -> np.ndarray:
    """Logits whose softmax gives ``confidence`` to the predicted class and splits the rest evenly."""
    probs = np.zeros((len(preds), num_classes))
    for i, (p, c) in enumerate(zip(preds, confidence)):
        probs[i] = (1 - c) / (num_classes - 1)
        probs[i, p] = c
    return np.log(probs).astype(np.float32)


# -- metrics ----------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_values_with_a_never_predicted_class():
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    preds = [0, 0, 1, 1, 1, 0, 1]  # class 2 is never predicted
    conf = [0.75 if p == t else 0.55 for p, t in zip(preds, labels)]
    m = compute_metrics(_logits_from(preds, conf, 3), labels, ["a", "b", "c"])

    assert m["num_samples"] == 7
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 1, 0]]
    assert m["top1"] == pytest.approx(4 / 7)
    assert m["top3"] is None and m["top5"] is None  # every label is among 3 classes' top 3: no measure at all
    four = compute_metrics(_logits_from([0, 0], [0.7, 0.7], 4), np.array([3, 1]), ["a", "b", "c", "d"])
    assert four["top3"] == 0.5 and four["top5"] is None  # d is not among a, b, c (ties go to the lower index)
    per = {c["class"]: c for c in m["per_class"]}
    assert per["a"]["precision"] == pytest.approx(2 / 3) and per["a"]["recall"] == pytest.approx(2 / 3)
    assert per["b"]["precision"] == pytest.approx(1 / 2) and per["b"]["recall"] == pytest.approx(1.0)
    assert per["b"]["f1"] == pytest.approx(2 / 3)
    assert per["c"]["precision"] == 0.0 and per["c"]["recall"] == 0.0 and per["c"]["f1"] == 0.0
    assert per["c"]["predicted"] == 0 and per["c"]["support"] == 2 and per["c"]["accuracy"] == 0.0
    assert m["macro_avg"]["precision"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert m["macro_avg"]["f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    assert m["weighted_avg"]["precision"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 2 * 0) / 7)
    assert m["mean_per_class_accuracy"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # Correct samples have p(true) = 0.75; wrong ones give the true class (1 - 0.55) / 2.
    assert m["loss"] == pytest.approx((4 * -math.log(0.75) + 3 * -math.log(0.225)) / 7, rel=1e-5)
    # Four samples at confidence 0.75 all right, three at 0.55 all wrong.
    assert m["ece"] == pytest.approx((4 * 0.25 + 3 * 0.55) / 7)
    pairs = {(p["true"], p["predicted"]): p["count"] for p in m["top_confusions"]}
    assert pairs == {("a", "b"): 1, ("c", "a"): 1, ("c", "b"): 1}
    json.dumps(m)  # everything in it must be JSON-serialisable


def test_class_without_samples_is_left_out_of_macro_averages():
    labels = np.array([0, 0, 1, 1])
    m = compute_metrics(_logits_from([0, 0, 1, 0], [0.9] * 4, 3), labels, ["a", "b", "absent"])
    absent = m["per_class"][2]
    assert absent["accuracy"] is None and absent["support"] == 0
    assert m["macro_avg"]["recall"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["mean_per_class_accuracy"] == pytest.approx(0.75)


def test_a_class_without_samples_has_no_recall_or_f1_and_its_predictions_count_against_precision():
    """A class absent from the labels has nothing to recall: its recall and F1 are null (0.0 read as "never
    finds it"), its precision 0 when predicted; the averages are over the present classes; nothing is NaN."""
    labels = np.array([0, 0, 1, 1, 1])
    preds = [0, 2, 1, 1, 0]  # c has no sample but is predicted once; d neither
    m = compute_metrics(_logits_from(preds, [0.8] * 5, 4), labels, ["a", "b", "c", "d"])
    per = {c["class"]: c for c in m["per_class"]}
    assert m["confusion_matrix"] == [[1, 0, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    # a: 1 of 2 predictions right, 1 of 2 samples found; b: 2 of 2 and 2 of 3
    assert (per["a"]["precision"], per["a"]["recall"], per["a"]["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert (per["b"]["precision"], per["b"]["recall"], per["b"]["f1"]) == pytest.approx((1.0, 2 / 3, 0.8))
    for name, predicted in (("c", 1), ("d", 0)):
        assert per[name]["recall"] is None and per[name]["f1"] is None and per[name]["accuracy"] is None
        assert per[name]["precision"] == 0.0 and per[name]["predicted"] == predicted and per[name]["support"] == 0
    assert m["macro_avg"] == pytest.approx({"precision": 0.75, "recall": (0.5 + 2 / 3) / 2, "f1": 0.65})
    assert m["weighted_avg"] == pytest.approx({"precision": 0.8, "recall": 0.6, "f1": 0.68})  # 2 a, 3 b
    json.dumps(m, allow_nan=False)


def test_top1_agrees_with_the_confusion_matrix_when_logits_tie():
    rng = np.random.default_rng(0)
    logits = rng.integers(0, 3, size=(200, 5)).astype(np.float32)  # coarse values, as int8 outputs give: many ties
    labels = rng.integers(0, 5, size=200)
    m = compute_metrics(logits, labels, list("abcde"))
    assert m["top1"] == pytest.approx(np.trace(np.array(m["confusion_matrix"])) / 200)
    assert m["top1"] == pytest.approx(float((logits.argmax(1) == labels).mean()))


def test_ece_is_zero_for_calibrated_predictions_and_counts_bins():
    labels = np.array([0, 1, 0, 1])
    probs = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    # Bin (0.4, 0.5]: confidence 0.5, argmax picks class 0 for both -> accuracy 0.5; bin (0.9, 1]: both right.
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.0)
    overconfident = np.array([[0.9, 0.1]] * 4)
    assert expected_calibration_error(overconfident, labels, n_bins=10) == pytest.approx(0.4)


def test_calibration_metrics_match_hand_computed_values():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    labels = np.array([0, 1, 1, 0])  # right, wrong, right, right (a tie goes to class 0)
    # Squared distance to the one-hot label, summed over the two classes: 0.08, 0.72, 0.18, 0.5.
    assert brier_score(probs, labels) == pytest.approx((0.08 + 0.72 + 0.18 + 0.5) / 4)
    logits = np.log(probs)
    assert negative_log_likelihood(logits, labels) == pytest.approx(
        -(math.log(0.8) + math.log(0.4) + math.log(0.7) + math.log(0.5)) / 4
    )
    # 15 bins of width 1/15: each confidence lands in a bin of its own, so ECE is the mean |correct - confidence|.
    assert expected_calibration_error(probs, labels) == pytest.approx((0.2 + 0.6 + 0.3 + 0.5) / 4)
    bins = reliability_bins(probs, labels)
    assert sum(bins["count"]) == 4 and bins["count"][7] == 1 and bins["accuracy"][7] == 1.0  # 0.5 in (7/15, 8/15]
    assert bins["confidence"][8] == pytest.approx(0.6) and bins["accuracy"][8] == 0.0 and bins["accuracy"][0] is None
    m = calibration_metrics(logits, labels)
    assert m == pytest.approx(
        {
            "ece": 0.4,
            "nll": negative_log_likelihood(logits, labels),
            "brier": 0.37,
            "mean_confidence": 0.65,
            "accuracy": 0.75,
        }
    )
    assert calibration_metrics(3 * logits, labels, temperature=3.0) == pytest.approx(m)  # T divides the logits


def _ece_reference(confidence: list[float], correct: list[bool], n_bins: int = 15) -> tuple[list[int], float]:
    """Guo et al. (2017), written out: bin k holds lo < confidence <= hi, lo = k / n_bins; returns the counts and
    the ECE."""
    counts, ece = [], 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        members = [i for i, c in enumerate(confidence) if lo < c <= hi]
        counts.append(len(members))
        if members:
            accuracy = sum(correct[i] for i in members) / len(members)
            mean_confidence = sum(confidence[i] for i in members) / len(members)
            ece += len(members) / len(confidence) * abs(accuracy - mean_confidence)
    return counts, ece


def test_ece_bins_are_right_closed_at_every_edge_and_hold_a_confidence_of_one():
    """15 equal-width bins (lo, hi]: a confidence exactly on an edge k/15 belongs to the bin below it, 1.0 to the
    last; counts and ECE match the formula written out, on edges and between them."""
    rng = np.random.default_rng(7)
    confidence = [k / 15 for k in range(2, 16)] + [1.0, 1.0] + rng.uniform(0.12, 1.0, 200).tolist()
    preds = rng.integers(0, 10, len(confidence))
    correct = (rng.random(len(confidence)) < np.asarray(confidence)).tolist()
    labels = np.where(correct, preds, (preds + 1) % 10)
    probs = np.tile(((1 - np.asarray(confidence)) / 9)[:, None], (1, 10))  # the rest shared by 9 classes
    probs[np.arange(len(preds)), preds] = confidence
    counts, expected = _ece_reference(confidence, correct)
    bins = reliability_bins(probs, labels)
    assert bins["count"] == counts and bins["edges"] == pytest.approx([k / 15 for k in range(16)])
    assert expected_calibration_error(probs, labels) == pytest.approx(expected, abs=1e-12)
    edge_only = probs[:14]  # one confidence on each edge 2/15 ... 15/15: bins 1 ... 14, one each
    assert reliability_bins(edge_only, labels[:14])["count"] == [0] + [1] * 14


def test_temperature_fit_finds_the_minimum_a_fine_grid_search_finds():
    """Few samples, so the best T is not the one the labels were drawn with: a grid over T is the reference."""
    rng = np.random.default_rng(11)
    logits = rng.normal(0, 2.5, size=(300, 10))
    probs = softmax(logits / 0.6)
    labels = (probs.cumsum(axis=1) > rng.random((300, 1))).argmax(axis=1)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 8001))  # steps of 0.075% in T
    nll = np.array([negative_log_likelihood(logits / t, labels) for t in grid])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(grid[nll.argmin()], rel=2e-3)
    assert negative_log_likelihood(logits / fitted, labels) <= nll.min() + 1e-9


@pytest.mark.parametrize("true_temperature", [0.4, 1.0, 2.5])
def test_temperature_fit_recovers_the_temperature_labels_were_drawn_with(true_temperature):
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, size=(20000, 10))
    probs = softmax(logits / true_temperature)
    labels = (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)  # one draw per row
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)
    # The fit minimises the NLL: nudging T either way cannot lower it.
    for factor in (0.97, 1.03):
        worse = negative_log_likelihood(logits / (fitted * factor), labels)
        assert worse > negative_log_likelihood(logits / fitted, labels)


def _paired(b: int, c: int, both_right: int = 50, both_wrong: int = 7) -> tuple[np.ndarray, np.ndarray]:
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


def test_a_temperature_fitted_where_every_sample_is_right_by_a_wide_margin_is_flagged(tiny_run, tmp_path, monkeypatch):
    """The NLL of such logits keeps falling as T shrinks, so the fit stops near the bound: the report must say
    the temperature-scaled row means nothing, not show ECE 0 as a result (the bound check missed T = 0.011)."""
    import training.reports.report_calibration as report_calibration
    from training.reports.calibration import meaningless_fit

    logits = np.array([[9.0, 0.0, 0.0], [0.0, 8.0, 0.0], [0.0, 0.0, 7.0]] * 5, dtype=np.float32)
    labels = np.array([0, 1, 2] * 5)
    t = fit_temperature(logits, labels)
    assert meaningless_fit(logits, labels, t)  # every one right: T is wherever the NLL flattened out
    wrong = np.array([0, 1, 0] * 5)  # one in three wrong: a real fit, away from the bounds
    assert not meaningless_fit(logits, wrong, 0.6) and meaningless_fit(logits, wrong, 95.0)
    monkeypatch.setattr(report_calibration, "fit_temperature", lambda *a: 0.0105)
    out = tmp_path / "r"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(out), "--device", "cpu"]) == 0
    assert "where it means little: those images carry no calibration signal" in (out / "report.md").read_text()


def test_a_temperature_pushed_to_its_upper_bound_is_explained_as_logits_no_better_than_uniform():
    """A model at chance is best fitted by flattening its logits to equal odds (T at the top of the range): the
    caveat said "every one right, or wrong by wide margins", neither of which is so."""
    from types import SimpleNamespace

    from training.reports.report_calibration import temperature_for

    labels = np.array([0, 1, 2] * 6)
    predicted = (labels + np.repeat([0, 1, 2, 0, 1, 2], 3)) % 3  # one in three right, each by the same margin
    logits = 2 * np.eye(3)[predicted]
    # a checkpoint scored on its validation split: what temperature_for reads of its model, data and split
    source: Any = SimpleNamespace(kind="checkpoint", info={}, data_defaults={})
    spec: Any = SimpleNamespace(split="val")
    data: Any = SimpleNamespace(labels=labels)
    fitted = temperature_for(source, spec, data, logits, "none", 32)
    assert not isinstance(fitted, str), fitted
    t, origin = fitted.temperature, fitted.origin
    assert t > 90
    assert "no better than a uniform guess" in origin and "top of its range (100)" in origin, origin
    assert "every one right" not in origin and "wide margins" not in origin, origin


def test_mcnemar_exact_binomial_for_few_discordant_pairs():
    result = mcnemar(*_paired(10, 2))
    assert result["method"] == "exact binomial"
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"], result["both_right"]) == (10, 2, 50)
    # Two-sided: 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096.
    assert result["p_value"] == pytest.approx(2 * (1 + 12 + 66) / 2**12)


def test_mcnemar_chi_square_with_continuity_correction():
    result = mcnemar(*_paired(30, 10))
    assert result["method"].startswith("chi-square")
    assert result["statistic"] == pytest.approx((abs(30 - 10) - 1) ** 2 / 40)  # 9.025
    # Chi-square with one degree of freedom: P(X > s) = erfc(sqrt(s / 2)).
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert mcnemar(*_paired(0, 0))["p_value"] == 1.0
    tied = mcnemar(*_paired(30, 30))  # uncorrected for the sign, (0 - 1)^2 / 60 would give p = 0.90
    assert tied["statistic"] == 0.0 and tied["p_value"] == 1.0
    assert mcnemar(*_paired(31, 30))["p_value"] == 1.0  # |b - c| = 1: the correction takes it all


@pytest.mark.parametrize("discordant", [MCNEMAR_EXACT_BELOW - 1, MCNEMAR_EXACT_BELOW])
def test_mcnemar_matches_the_binomial_tail_and_the_corrected_chi_square_for_every_split(discordant):
    """Every split b + c of the discordant pairs on either side of the switch from the exact test to chi-square,
    against the binomial tail summed by hand and the chi-square survival function erfc(sqrt(s / 2))."""
    for b in range(discordant + 1):
        c = discordant - b
        result = mcnemar(*_paired(b, c))
        assert (result["a_right_b_wrong"], result["a_wrong_b_right"], result["discordant"]) == (b, c, discordant)
        if discordant < MCNEMAR_EXACT_BELOW:
            tail = sum(math.comb(discordant, i) for i in range(min(b, c) + 1)) / 2**discordant
            assert result["method"] == "exact binomial"
            assert result["p_value"] == pytest.approx(min(1.0, 2 * tail), rel=1e-9), (b, c)
        else:
            statistic = max(abs(b - c) - 1, 0) ** 2 / discordant
            assert result["method"] == "chi-square with continuity correction"
            assert result["statistic"] == pytest.approx(statistic)
            assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-9), (b, c)
        assert result["p_value"] == mcnemar(*_paired(c, b))["p_value"]  # which model is A does not matter


def test_paired_difference_interval_uses_the_discordant_pairs():
    low, high = paired_difference_interval(*_paired(30, 10))  # 97 samples, B - A = -20/97
    # Agresti-Min: half a sample more in each of the four cells, so 99 samples and 41 discordant ones
    d, half = -20 / 99, 1.959964 * math.sqrt((41 / 99 - (20 / 99) ** 2) / 99)
    assert (low, high) == (pytest.approx(d - half, abs=1e-6), pytest.approx(d + half, abs=1e-6))
    # The same accuracies with fewer disagreements are a surer difference: the interval narrows.
    narrow = paired_difference_interval(*_paired(20, 0, both_right=60, both_wrong=17))
    assert narrow[1] - narrow[0] < high - low
    agree_low, agree_high = paired_difference_interval(*_paired(0, 0))  # agreement on 57 samples is no certainty
    assert agree_low == pytest.approx(-agree_high) and agree_high > 0
    with pytest.raises(ValueError, match=r"paired predictions differ in length: \(3,\) vs \(4,\)"):
        paired_difference_interval(np.ones(3, bool), np.ones(4, bool))


# -- Grad-CAM ---------------------------------------------------------------------------------------


def test_gradcam_map_has_input_size_is_normalised_and_not_constant(tiny_run, image_folder):
    model = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    paths = sorted(image_folder.glob("*/*.png"))[::10][:4]
    images = torch.from_numpy(np.stack([np.asarray(Image.open(p)) for p in paths])).permute(0, 3, 1, 2).float() / 255
    cam = GradCAM(model)
    cams = cam(images)
    assert cams.shape == (len(paths), 32, 32)
    assert cam.map_size == (4, 4)  # ResNet-9's last stage after three poolings: what the figure must admit to
    assert cams.min() >= 0.0 and cams.max() <= 1.0
    assert all(cam.max() - cam.min() > 0.1 for cam in cams), "a trained model's map should vary over the image"
    # Any input size gives a map of that size (bilinear upsampling of the last stage).
    wide = GradCAM(model)(torch.nn.functional.interpolate(images, size=(24, 40)), targets=np.zeros(len(paths), int))
    assert wide.shape == (len(paths), 24, 40)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- evaluate ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "val"
    assert main(["evaluate", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(out), "--device", "cpu"]) == 0
    return out


def test_evaluate_writes_every_report_file(tiny_report, tiny_run):
    for name in REPORT_FILES:
        assert (tiny_report / name).is_file() and (tiny_report / name).stat().st_size > 0, name
    metrics = json.loads((tiny_report / "metrics.json").read_text())
    for key in (
        "loss",
        "top1",
        "top3",
        "top5",
        "per_class",
        "macro_avg",
        "weighted_avg",
        "confusion_matrix",
        "top_confusions",
        "ece",
        "num_samples",
        "wall_time_s",
        "images_per_s",
    ):
        assert key in metrics, key
    assert metrics["num_samples"] == 15  # the run's own validation split by default
    assert len(metrics["per_class"]) == 3
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["num_samples"]
    preds = load_predictions(tiny_report)
    assert preds["logits"].shape == (15, 3)
    assert preds["history"] == json.loads((tiny_run / "history.json").read_text())
    assert metrics["top1"] == pytest.approx(float((preds["predictions"] == preds["labels"]).mean()))
    # The same checkpoint on the same split scores what training recorded for it.
    assert metrics["top1"] == pytest.approx(load_checkpoint(tiny_run / "best.pt")["best"]["val_top1"])
    report = (tiny_report / "report.md").read_text()
    for png in [n for n in REPORT_FILES if n.endswith(".png")]:
        assert f"({png})" in report, png
    for png in ("confusion_matrix.png", "gradcam.png", "reliability.png"):
        assert Image.open(tiny_report / png).size[0] > 200
    # Before/after temperature scaling, T fitted on the validation split (the report's own samples here).
    calibration = metrics["calibration"]
    assert calibration["temperature"] == pytest.approx(fit_temperature(preds["logits"], preds["labels"]), rel=1e-6)
    assert calibration["before"]["ece"] == pytest.approx(metrics["ece"])
    assert calibration["after"]["nll"] < calibration["before"]["nll"]
    assert sum(calibration["reliability"]["after"]["count"]) == 15
    assert "## Calibration" in report and "temperature-scaled (T = " in report
    assert f"| {100 * metrics['top1']:.2f}% | n/a | n/a |" in report  # 3 classes: top-3 and top-5 say nothing


def test_each_figure_says_which_model_views_and_images_it_shows(tiny_run, tmp_path, monkeypatch):
    """A figure is often shared alone: its heading names the model, the views (TTA) and the images; the
    reliability diagram says its after panel is in-sample, the mistakes what their confidence is, Grad-CAM how
    coarse its maps are and that they come from one view while the predictions came from several."""
    import matplotlib.axes
    import matplotlib.figure

    headings, titles = [], []
    real_suptitle, real_title = matplotlib.figure.Figure.suptitle, matplotlib.axes.Axes.set_title

    def suptitle(self, text, *args, **kwargs):
        headings.append(text)
        return real_suptitle(self, text, *args, **kwargs)

    def set_title(self, text, *args, **kwargs):
        titles.append(text)
        return real_title(self, text, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", suptitle)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", set_title)
    out = tmp_path / "flip"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--tta", "flip", "--out", str(out), "--device", "cpu"]) == 0
    model = f"{load_checkpoint(tiny_run)['meta']['arch']} checkpoint {tiny_run.name}/best.pt"
    assert len(headings) == 6 and all(model in h for h in headings), headings
    views = [h for h in headings if "flip TTA · val split, 15 images" in h]
    assert len(views) == 5, headings  # all but the training curves, which say they are the run's
    assert any("its training run, by epoch" in h for h in headings)
    assert any("uncalibrated (T = 1)" in h and "most confident mistakes" in h for h in headings)
    cam = next(h for h in headings if h.startswith("Grad-CAM"))
    assert "4x4 map of the last stage" in cam and "from the image alone, predictions from the TTA views" in cam
    assert "red: wrong, true -> predicted (confidence)" in cam  # which of a mistake's two classes is the truth
    assert any(t.startswith("temperature-scaled") and "in-sample" in t for t in titles), titles


def test_a_confusion_matrix_of_long_and_cjk_class_names_stays_readable_and_says_what_it_could_not_draw(
    tmp_path, caplog
):
    """A 200-character class name is cut in the figure (it squeezed the matrix to a dot); a name the font has no
    glyphs for is one line of the log, not a UserWarning per character."""
    import logging

    classes = ["x" * 200, "猫", "dog"]
    cm = np.array([[3, 1, 0], [0, 4, 0], [1, 0, 2]])
    path = tmp_path / "cm.png"
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        figures.plot_confusion_matrix(cm, classes, path)
        # laid out (tight_layout draws the titles) before it is saved
        figures.plot_misclassified(
            images, np.array([1, 0]), np.array([0, 1]), np.array([0.9, 0.8]), classes, tmp_path / "m.png"
        )
    assert not [w for w in caught if "missing from font" in str(w.message)]
    assert "m.png: the plotting font has no glyphs" in caplog.text
    assert "cm.png: the plotting font has no glyphs for some characters of the class names" in caplog.text
    width, height = Image.open(path).size
    assert width < 1500 and height < 1500, (width, height)  # the 200-character label made it 2,469 x 2,194
    assert figures.short_label("x" * 200) == "x" * 23 + "\u2026" and figures.short_label("dog") == "dog"


@pytest.mark.parametrize("max_classes", [4, 2])
def test_the_confusion_matrix_figure_has_true_classes_as_rows_and_each_label_on_its_own_row(
    max_classes, tmp_path, monkeypatch
):
    """Rows are true classes, columns predicted, each row normalised over its true class; with more classes
    than shown, the worst classes' rows and columns keep their own names and "(other)" holds the rest."""
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig))
    classes = ["a", "b", "c", "d"]
    cm = np.array([[8, 1, 1, 0], [0, 3, 1, 6], [2, 0, 8, 0], [1, 1, 0, 2]])  # true a: 8 right, 1 as b, 1 as c
    figures.plot_confusion_matrix(cm, classes, tmp_path / "cm.png", max_classes=max_classes)
    (fig,) = saved
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    rows = [t.get_text() for t in ax.get_yticklabels()]
    columns = [t.get_text() for t in ax.get_xticklabels()]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("true class", "predicted class")
    keep = [classes.index(r) for r in rows]
    if max_classes == 4:
        assert rows == columns == classes
    else:  # b (3 of 10) and d (2 of 4) are the worst, worst first
        assert rows == ["b", "d"] and columns == ["b", "d", "(other)"]
        assert shown[:, -1] == pytest.approx([1 - (3 + 6) / 10, 1 - (1 + 2) / 4])
    for i, true in enumerate(keep):
        for j, predicted in enumerate(keep):
            assert shown[i, j] == pytest.approx(cm[true, predicted] / cm[true].sum()), (rows[i], columns[j])
    assert shown.sum(axis=1) == pytest.approx(np.ones(len(rows)))


def test_a_figure_stopped_while_it_is_written_leaves_the_one_before_whole(tmp_path, monkeypatch):
    """A run's curves are redrawn every epoch and a reused report folder's figures replaced: Ctrl-C while a PNG
    is written used to leave a truncated one in its place. The earlier figure stays, and no temporary file."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from training.plots import CurveInfo, plot_training_curves

    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "lr": 0.1, "val_loss": 1.1, "val_top1": 0.4}]
    curves, matrix = tmp_path / "training_curves.png", tmp_path / "confusion_matrix.png"
    plot_training_curves(history, curves, CurveInfo())
    figures.plot_confusion_matrix(np.eye(3), ["a", "b", "c"], matrix)
    before = {path: path.read_bytes() for path in (curves, matrix)}
    print_pil = FigureCanvasAgg._print_pil  # what print_png writes the file with

    def stopped_midway(canvas, target, *args, **kwargs):
        if isinstance(target, io.BytesIO):  # matplotlib's own dry run, measuring a tight bounding box
            return print_pil(canvas, target, *args, **kwargs)
        whole = io.BytesIO()
        print_pil(canvas, whole, *args, **kwargs)
        part = whole.getvalue()[:100]
        target.write(part) if hasattr(target, "write") else Path(target).write_bytes(part)
        raise KeyboardInterrupt

    monkeypatch.setattr(FigureCanvasAgg, "_print_pil", stopped_midway)
    with pytest.raises(KeyboardInterrupt):
        plot_training_curves(history * 2, curves, CurveInfo())
    with pytest.raises(KeyboardInterrupt):
        figures.plot_confusion_matrix(2 * np.eye(3), ["a", "b", "c"], matrix)
    assert {path: path.read_bytes() for path in (curves, matrix)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["confusion_matrix.png", "training_curves.png"]


def test_reliability_fades_bins_of_few_samples_and_keeps_its_legend_off_the_bars(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig))
    rng = np.random.default_rng(0)
    confidence = np.concatenate([rng.uniform(0.9, 1.0, 300), [0.15, 0.16]])  # two samples alone in a low bin
    probs = np.concatenate([confidence[:, None], np.repeat((1 - confidence[:, None]) / 9, 9, axis=1)], axis=1)
    bins = reliability_bins(probs, np.zeros(len(confidence), dtype=int))
    figures.plot_reliability([("before", bins), ("after", bins)], tmp_path / "r.png", subtitle="m · no TTA")
    (fig,) = saved
    top = [ax for ax in fig.axes if ax.get_ylabel() == "accuracy in the bin"]
    counts = [ax for ax in fig.axes if ax.get_ylabel() == "samples (log)"]
    assert len(top) == 2 and len(counts) == 2 and all(ax.get_yscale() == "log" for ax in counts)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    for ax in top:
        filled = [p for p in ax.patches if p.get_fill()]
        sparse = [p for p in filled if p.get_x() < 0.2]
        assert sparse and all(p.get_alpha() == 0.3 for p in sparse)  # 2 samples < MIN_BIN_SAMPLES
        assert all(p.get_alpha() in (None, 1.0) for p in filled if p.get_x() >= 0.8)
    assert MIN_BIN_SAMPLES > 2 and fig._suptitle.get_text() == "m · no TTA"


def test_compared_curves_say_which_side_was_validated_with_ema_weights(tmp_path, monkeypatch):
    """A single run's curves name EMA weights; the comparison of two runs drew both validation curves alike."""
    import training.plots as plots

    saved = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **kwargs: saved.append(fig))
    history = [{"epoch": 1, "train_loss": 1.0, "val_top1": 0.4}, {"epoch": 2, "train_loss": 0.8, "val_top1": 0.5}]
    infos = {"A ema": plots.CurveInfo(0.0, "EMA"), "B plain": plots.CurveInfo(0.0)}
    plots.plot_compared_curves({"A ema": history, "B plain": history}, tmp_path / "curves.png", infos)
    validation = [text.get_text() for text in saved[0].axes[0].get_legend().get_texts()]
    assert validation == ["A ema (EMA weights)", "B plain"]


def test_the_help_names_the_default_report_folder_of_a_tta_evaluation(capsys, monkeypatch):
    """evaluate --tta flip writes RUN/report-best-val-tta-flip; the help named only RUN/report-best-val."""
    from training.reports.report_folder import default_out_dir

    # argparse wraps help to the terminal's width and breaks lines at hyphens: a narrow one split the folder's name
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    source = type("Source", (), {"kind": "checkpoint", "run_dir": Path("RUN"), "path": Path("RUN/best.pt")})()
    assert default_out_dir(source, "val", "flip") == Path("RUN/report-best-val-tta-flip")
    assert "RUN/report-<checkpoint>-<split>" in text and "with -tta-<tta> after it where --tta is not none" in text


def test_evaluate_with_flip_tta(tiny_run, tiny_report, tmp_path):
    out = tmp_path / "tta"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--tta", "flip", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "flip" and "flip" in (out / "report.md").read_text()
    plain, flipped = load_predictions(tiny_report), load_predictions(out)
    np.testing.assert_array_equal(plain["labels"], flipped["labels"])
    assert not np.allclose(plain["logits"], flipped["logits"])


@pytest.fixture(scope="module")
def cifar100_run(cifar100_root, tmp_path_factory) -> Path:
    """A barely trained 100-class model: enough to exercise the 100-class figures."""
    from training.config_recipes import build_config
    from training.engine import train

    tmp = tmp_path_factory.mktemp("c100run")
    overrides = tiny_overrides(
        cifar100_root,
        tmp / "cache",
        **{"data.dataset": "cifar100", "data.val_size": 100, "epochs": 1, "max_batches_per_epoch": 2},
    )
    train(build_config("resnet9_half_cpu", overrides), tmp / "run")
    return tmp / "run"


def test_evaluate_100_classes_keeps_plots_readable(cifar100_run, tmp_path):
    out = tmp_path / "c100"
    assert main(["evaluate", "--checkpoint", str(cifar100_run), "--out", str(out), "--device", "cpu"]) == 0
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 100 and len(metrics["per_class"]) == 100
    assert any("20 worst" in note for note in metrics["notes"])
    # A 100x100 labelled matrix would need thousands of pixels per side; the worst-20 view does not.
    for png in ("confusion_matrix.png", "per_class_accuracy.png"):
        width, height = Image.open(out / png).size
        assert width < 1600 and height < 1600, (png, width, height)


def test_worst_classes_skips_classes_without_samples():
    acc = [0.5, None, 0.1, 0.9, 0.3]
    assert worst_classes(acc, 3).tolist() == [2, 4, 0]
    assert worst_classes(acc, 10).tolist() == [2, 4, 0, 3]


def _export_onnx(run: Path, path: Path) -> Path:
    """``run``: a run folder (its best.pt) or a checkpoint file."""
    import onnx

    from inference.manifest import METADATA_KEY, InputSpec, ModelCard

    checkpoint = run if run.is_file() else run / "best.pt"
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is enough for a test model
        torch.onnx.export(
            model,
            torch.rand(1, 3, 32, 32),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    meta = ckpt["meta"]
    card = ModelCard(
        name="tiny",
        arch=meta["arch"],
        dataset=meta["dataset"],
        classes=meta["classes"],
        precision="fp32",
        input=InputSpec(mean=tuple(meta["mean"]), std=tuple(meta["std"])),
        metrics={"val_top1": ckpt["best"]["val_top1"]},
        source={"checkpoint": str(checkpoint)},
    )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, card.model_dump_json()
    onnx.save(proto, str(path))
    return path


def test_evaluate_onnx_with_a_temperature_reports_what_its_checkpoint_does(tiny_models_dir, tiny_report, tmp_path):
    """An exported model divides by T inside its graph: its report undoes that for "before" and uses the
    recorded T, so both rows match the checkpoint's report, whose T is fitted on the same validation split."""
    out = tmp_path / "calibrated"
    assert main(["evaluate", "--onnx", str(tiny_models_dir / "tiny.onnx"), "--out", str(out)]) == 0
    onnx_cal = json.loads((out / "metrics.json").read_text())["calibration"]
    torch_cal = json.loads((tiny_report / "metrics.json").read_text())["calibration"]
    card_t = json.loads((tiny_models_dir / "manifest.json").read_text())["models"][0]["calibration"]["temperature"]
    assert onnx_cal["temperature"] == card_t and "recorded in the model" in onnx_cal["temperature_origin"]
    assert "so the after row is in-sample" in onnx_cal["temperature_origin"]  # fitted on these very images
    # the table's loss and ECE are of the divided answers: the report gives the raw ones beside them
    report = (out / "report.md").read_text()
    assert f"before it: loss {onnx_cal['before']['nll']:.4f}, ECE {onnx_cal['before']['ece']:.4f}" in report
    assert onnx_cal["temperature"] == pytest.approx(torch_cal["temperature"], rel=1e-4)
    for state in ("before", "after"):
        assert onnx_cal[state] == pytest.approx(torch_cal[state], rel=1e-3, abs=1e-4), state


class _EchoGraph:
    """A stand-in for an ONNX session whose logits are its own input: any difference in the pixels it is fed
    shows in its output, bit for bit."""

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), -1)


def test_evaluate_feeds_an_onnx_graph_the_pixels_the_service_and_export_verify_feed_it():
    """An INT8 graph rounds its input to 8 bits, so one float32 step matters: evaluate scaled by x / 255, which
    for 126 of the 256 values is a step from the service's x * float32(1 / 255), and moved 272 of the shipped
    INT8 model's 5,000 validation images, and its ECE after temperature from the card's 0.0178 to 0.0176."""
    from export.parity import onnx_logits
    from inference.preprocess import pixels_to_model_input
    from training.data import ImageArrays
    from training.reports.sources import ModelSource

    images = (np.arange(2 * 16 * 8 * 3) % 256).astype(np.uint8).reshape(2, 16, 8, 3)  # every value 0-255
    served = pixels_to_model_input(images.tobytes(), 2, (16, 8)).reshape(2, -1)  # what the service sends
    assert not np.array_equal(served, images.transpose(0, 3, 1, 2).reshape(2, -1).astype(np.float32) / 255)
    classes = [str(i) for i in range(served.shape[1])]
    source = ModelSource("onnx", Path("echo.onnx"), classes, "echo", 16, model=_EchoGraph())
    for batch_size in (1, 256):
        evaluated, _ = source.predict(ImageArrays(images, np.zeros(2, np.int64), classes), batch_size=batch_size)
        verified, _ = onnx_logits(_EchoGraph(), images, batch_size)  # export verify's and the card's logits
        np.testing.assert_array_equal(evaluated, served)
        np.testing.assert_array_equal(verified, served)


def test_evaluate_onnx_reports_the_calibration_export_verify_and_the_card_record(tiny_models_dir, tmp_path):
    """One graph, one set of images: `evaluate --onnx`, `export verify` and the card give the same before and
    after figures to the last bit (evaluate undid the graph's temperature in float32, verify in float64)."""
    from export.verify import verify_model

    out = tmp_path / "int8"
    assert main(["evaluate", "--onnx", str(tiny_models_dir / "tiny-int8.onnx"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    _, verified = verify_model("tiny-int8", tiny_models_dir, cache_dir=None)
    entry = next(
        m for m in json.loads((tiny_models_dir / "manifest.json").read_text())["models"] if m["name"] == "tiny-int8"
    )
    t = entry["calibration"]["temperature"]
    assert metrics["calibration"]["temperature"] == verified["temperature"] == t
    for state in ("before", "after"):
        assert metrics["calibration"][state] == verified[state] == entry["metrics"]["calibration"][state], state
    # a report's logits before the graph's temperature are the ones calibration was measured on
    loaded = load_predictions(out)
    np.testing.assert_array_equal(
        logits_before_temperature(loaded), loaded["logits"].astype(np.float64) * np.float64(t)
    )


def test_an_onnx_model_runs_on_the_device_asked_for_or_is_refused_in_one_line(tiny_models_dir, monkeypatch, capsys):
    """--device for an ONNX model: cuda:N reaches the runtime as GPU N; a device that is none was run on the CPU
    unsaid, and CUDA that cannot run the model was a traceback."""
    import inference.runtime
    from inference.runtime import CudaPlacementError

    opened = []

    class Refused:
        def __init__(self, path, device="auto", device_id=0, **kwargs):
            opened.append((device, device_id))
            raise CudaPlacementError("tiny", "no CUDA here")

    monkeypatch.setattr(inference.runtime, "OnnxClassifier", Refused)
    model = str(tiny_models_dir / "tiny.onnx")
    for device in ("cuda:3", "cuda"):
        assert main(["evaluate", "--onnx", model, "--device", device]) == 2
    assert opened == [("cuda", 3), ("cuda", 0)]
    assert "error: --device cuda, but model 'tiny' cannot run wholly on CUDA: no CUDA here" in capsys.readouterr().err
    for device in ("tpu", "gpu", "cuda:x", "cpu:1"):
        assert main(["evaluate", "--onnx", model, "--device", device]) == 2
        assert f"error: --device {device!r}: not a device" in capsys.readouterr().err
    assert len(opened) == 2


def test_evaluate_onnx_matches_checkpoint_and_skips_gradcam(tiny_run, tiny_report, image_folder, tmp_path, capsys):
    onnx_path = _export_onnx(tiny_run, tmp_path / "tiny.onnx")
    out = tmp_path / "onnx_report"
    assert (
        main(
            [
                "evaluate",
                "--onnx",
                str(onnx_path),
                "--dataset",
                "folder",
                "--data",
                str(image_folder),
                "--val-size",
                "15",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert not (out / "gradcam.png").exists()
    assert "Grad-CAM skipped" in (out / "report.md").read_text()
    # its curves are its run's: what they measure comes from the checkpoint the card names
    smoothing = load_checkpoint(tiny_run / "best.pt")["config"]["train"]["label_smoothing"]
    curves = json.loads((out / "metrics.json").read_text())["source"]["curves"]
    assert smoothing and curves["label_smoothing"] == smoothing and curves["eval_weights"] == "EMA"
    for name in set(REPORT_FILES) - {"gradcam.png"}:
        assert (out / name).is_file(), name
    onnx_preds, torch_preds = load_predictions(out), load_predictions(tiny_report)
    assert onnx_preds["fingerprint"] == torch_preds["fingerprint"]
    np.testing.assert_allclose(onnx_preds["logits"], torch_preds["logits"], atol=1e-4)
    capsys.readouterr()
    assert main(["compare", str(tiny_report), str(out)]) == 0
    text = capsys.readouterr().out
    assert "difference B - A: +0.00 points, 95% interval -11.53 to +11.53" in text and "p = 1" in text


def test_evaluate_onnx_goes_on_when_the_checkpoint_its_card_names_is_damaged(tiny_run, image_folder, tmp_path, caplog):
    """The card's checkpoint only lends the run's split and history: a damaged file there is a warning."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "best.pt", run / "best.pt")
    onnx_path = _export_onnx(run, tmp_path / "tiny.onnx")
    (run / "best.pt").write_bytes(b"not a checkpoint any more")
    out = tmp_path / "report"
    args = ["evaluate", "--onnx", str(onnx_path), "--dataset", "folder", "--data", str(image_folder)]
    with caplog.at_level("WARNING"):
        assert main([*args, "--val-size", "15", "--out", str(out), "--no-sample-figures"]) == 0
    assert (out / "metrics.json").is_file()
    assert "could not read the source checkpoint" in caplog.text and "not a training checkpoint" in caplog.text


def test_evaluate_onnx_draws_the_curves_of_a_checkpoint_copied_out_of_its_run(tiny_run, image_folder, tmp_path):
    """The report of a model exported from a checkpoint with no history.json beside it (one copied out of its
    run, as a GPU machine's are sent back) had no training curves, though the checkpoint holds its history."""
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(tiny_run / "best.pt", loose / "model.pt")
    onnx_path = _export_onnx(loose / "model.pt", tmp_path / "tiny.onnx")
    out = tmp_path / "report"
    args = ["evaluate", "--onnx", str(onnx_path), "--dataset", "folder", "--data", str(image_folder)]
    assert main([*args, "--val-size", "15", "--out", str(out), "--no-sample-figures"]) == 0
    assert (out / "training_curves.png").is_file()
    own = load_checkpoint(loose / "model.pt")["history"]  # the epochs up to the one best.pt was saved at
    assert own and json.loads((out / "history.json").read_text()) == own


# -- compare ----------------------------------------------------------------------------------------


def test_compare_checkpoint_against_report_and_two_reports(tiny_run, tiny_report, tmp_path):
    from training.reports.compare import compare

    result = compare(tiny_run / "last.pt", tiny_report, device="cpu")
    assert result["num_samples"] == 15 and result["a"]["kind"] == "checkpoint" and result["b"]["kind"] == "report"
    metrics = json.loads((tiny_report / "metrics.json").read_text())
    assert result["b"]["top1"] == pytest.approx(metrics["top1"])
    assert result["difference_points"] == pytest.approx(100 * (result["b"]["top1"] - result["a"]["top1"]))
    low, high = result["difference_interval_points"]
    assert low <= result["difference_points"] <= high and result["interval_confidence"] == pytest.approx(0.95)
    test = result["mcnemar"]
    assert test["a_right_b_wrong"] + test["a_wrong_b_right"] + test["both_right"] + test["both_wrong"] == 15
    assert 0.0 <= test["p_value"] <= 1.0
    assert main(["compare", str(tiny_report), str(tiny_report), "--out", str(tmp_path / "cmp")]) == 0
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["mcnemar"]["discordant"] == 0 and saved["mcnemar"]["p_value"] == 1.0
    assert "histories" not in saved  # they stay in the runs; the figure is drawn from them
    # Reports keep their run's history, so two reports are compared with both learning curves too.
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 1000
    assert "](curves.png)" in (tmp_path / "cmp" / "compare.md").read_text()
    # A report without its run's history (of a model that had none, or from before reports kept it) still
    # compares; only the figure is left out.
    bare = tmp_path / "bare"
    shutil.copytree(tiny_report, bare)
    (bare / "history.json").unlink()
    assert main(["compare", str(bare), str(tiny_report), "--out", str(tmp_path / "cmp-bare")]) == 0
    assert not (tmp_path / "cmp-bare" / "curves.png").exists()
    # Into the folder of the comparison above: its figure (of other runs) does not stay beside these numbers.
    assert main(["compare", str(bare), str(tiny_report), "--out", str(tmp_path / "cmp")]) == 0
    assert (
        not (tmp_path / "cmp" / "curves.png").exists()
        and "curves.png" not in (tmp_path / "cmp" / "compare.md").read_text()
    )
    # someone's folder (a run's, notes) is not a comparison's: its compare.md used to be replaced
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "compare.md").write_text("my notes")
    assert main(["compare", str(bare), str(tiny_report), "--out", str(notes)]) == 2
    assert (notes / "compare.md").read_text() == "my notes"
    # what a comparison stopped midway leaves (its compare.json is written last) is its own, to be rewritten
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "curves.png").write_bytes(b"half a figure")
    assert main(["compare", str(bare), str(tiny_report), "--out", str(stopped)]) == 0


def test_compare_of_two_runs_draws_both_learning_curves(tiny_run, tmp_path):
    from training.reports.compare import CURVES_FILE, compare, write_comparison

    result = compare(tiny_run / "last.pt", tiny_run, device="cpu")
    history = json.loads((tiny_run / "history.json").read_text())
    assert result["histories"]["a"] == history and result["histories"]["b"] == history
    out = write_comparison(result, tmp_path / "cmp")
    with Image.open(out / CURVES_FILE) as figure:
        assert figure.size[0] > 500
    assert f"]({CURVES_FILE})" in (out / "compare.md").read_text()
    assert result["curves"]["a"]["label_smoothing"] == load_checkpoint(tiny_run)["config"]["train"]["label_smoothing"]


def test_the_interval_of_a_comparison_is_named_by_its_own_confidence(tiny_report, capsys):
    """--alpha 0.001 asks for a 99.9% interval: rounded to whole points it was printed as a 100% one."""
    assert main(["compare", str(tiny_report), str(tiny_report), "--alpha", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "99.9% interval" in out and "100% interval" not in out
    assert main(["compare", str(tiny_report), str(tiny_report), "--alpha", "0.05"]) == 0
    assert "95% interval" in capsys.readouterr().out


def test_compare_json_prints_the_whole_result(tiny_run, tiny_report, capsys):
    from training.reports.compare import compare

    capsys.readouterr()
    assert main(["compare", str(tiny_report), str(tiny_run), "--device", "cpu", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["difference_points"] == 0 and printed["num_samples"] == 15
    assert printed == json.loads(json.dumps(compare(str(tiny_report), str(tiny_run), device="cpu")))


def test_an_ablation_stopped_by_sigterm_says_so(monkeypatch, tmp_path, capsys):
    import signal

    from inference.interrupts import Terminated
    from training.reports import ablate

    def preempted(*args, **kwargs):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(ablate, "ablate", preempted)
    status = main(["ablate", "--recipe", "resnet9_half_cpu", "--vary", "lr=0.1,0.2", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert (status, "SIGTERM: interrupted: run the same command again" in err) == (143, True), err


@pytest.mark.parametrize(
    ("runs", "kind"),
    [(["--vary", "lr=0.1,0.2"], "variants"), (["--step", "base", "--step", "lower", "lr=0.05"], "steps")],
    ids=["vary", "step"],
)
def test_an_interrupted_ablation_names_its_runs_as_its_progress_does(runs, kind, monkeypatch, tmp_path, capsys):
    """A --step ablation, whose progress and refusals name its runs steps, was told on Ctrl-C that its finished
    "variants" are not retrained."""
    from training.reports import ablate

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ablate, "ablate", stopped)
    status = main(["ablate", "--recipe", "resnet9_half_cpu", *runs, "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert (status, err) == (
        130,
        f"interrupted: run the same command again to resume; finished {kind} are not retrained\n",
    ), err


def test_compare_refuses_reports_of_different_samples(tiny_run, tiny_report, tmp_path, capsys):
    other = tmp_path / "all"
    assert (
        main(["evaluate", "--checkpoint", str(tiny_run), "--split", "all", "--out", str(other), "--device", "cpu"]) == 0
    )
    capsys.readouterr()
    assert main(["compare", str(tiny_report), str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "different samples" in err and "\n" not in err
    assert "their data settings differ: split val vs all" in err  # what to line up, not only that they differ


def test_compare_refuses_evaluation_settings_when_both_sides_are_reports(tiny_report, capsys):
    """A report's predictions are fixed: --tta or --split cannot apply to it, so asking for them is refused
    instead of being ignored."""
    for extra, named in ((["--tta", "flip"], "--tta"), (["--split", "train", "--data", "x"], "--data and --split")):
        assert main(["compare", str(tiny_report), str(tiny_report), *extra]) == 2
        err = capsys.readouterr().err
        assert f"error: {named} would change how a model is evaluated" in err and "Traceback" not in err, err


def test_compare_refuses_a_side_that_is_no_model_before_evaluating_the_other(tiny_run, tmp_path, monkeypatch, capsys):
    from training.reports.sources import ModelSource

    def evaluated(self, *args, **kwargs):
        raise AssertionError(f"{self.path} was evaluated")

    monkeypatch.setattr(ModelSource, "predict", evaluated)
    notes = tmp_path / "b.pt"
    notes.write_text("not a checkpoint\n")
    assert main(["compare", str(tiny_run), str(notes), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{notes} is not a training checkpoint" in err and "Traceback" not in err
    # a path that is not there is named so; a folder that holds none of them is named for what it is not
    (tmp_path / "empty").mkdir()
    for path, said in ((tmp_path / "gone", "does not exist (give a checkpoint"), (tmp_path / "empty", "is not a")):
        assert main(["compare", str(tiny_run), str(path), "--device", "cpu"]) == 2
        assert f"error: {path} {said}" in capsys.readouterr().err


def test_an_onnx_model_with_tta_in_its_graph_is_described_so_and_not_augmented_twice(
    tiny_run, tiny_report, tmp_path, capsys
):
    from export.pipeline import export_checkpoint

    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "tiny-flip", "fp32", models, cache_dir=None, tta="flip")
    out = tmp_path / "flip"
    assert main(["evaluate", "--onnx", str(models / "tiny-flip.onnx"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tta"] == "none" and metrics["source"]["graph_tta"] == "flip"
    assert "flip test-time augmentation (the image and its mirror) inside the graph" in (out / "report.md").read_text()
    assert "no test-time augmentation" not in (out / "report.md").read_text()
    capsys.readouterr()
    assert (
        main(["evaluate", "--onnx", str(models / "tiny-flip.onnx"), "--tta", "flip", "--out", str(tmp_path / "r")]) == 2
    )
    err = capsys.readouterr().err
    assert "already averages flip views inside its graph" in err and not (tmp_path / "r" / "metrics.json").exists()
    onnx = str(models / "tiny-flip.onnx")
    assert main(["compare", onnx, str(tiny_run), "--tta", "flip", "--out", str(tmp_path / "c")]) == 2
    assert "already averages flip views inside its graph" in capsys.readouterr().err  # compare: not twice either
    # a comparison with it says B saw flipped views too (it said neither side had TTA), as a report or a model
    for b in (str(out), onnx):
        assert main(["compare", str(tiny_report), b, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["b"]["graph_tta"] == "flip"
        assert main(["compare", str(tiny_report), b]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[2].endswith("(tta flip, averaged inside its graph)") and "tta" not in lines[1], lines
    # the ensemble estimate refuses the two as one model's (the graph's card names the checkpoint) ...
    assert main(["ensemble", str(tiny_report), str(out)]) == 2
    assert "are reports of one model" in capsys.readouterr().err
    # ... and says the graph's views (it said "tta none" of them) of a graph whose card names no checkpoint
    by_hand = tmp_path / "by-hand"
    shutil.copytree(out, by_hand)
    metrics = json.loads((by_hand / "metrics.json").read_text())
    del metrics["source"]["checkpoint_sha256"]
    (by_hand / "metrics.json").write_text(json.dumps(metrics))
    assert main(["ensemble", str(tiny_report), str(by_hand)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("(tta none)") and lines[1].endswith("(tta flip, averaged inside its graph)"), lines


def test_a_re_evaluation_stopped_midway_leaves_no_metrics_of_the_previous_one(
    tiny_run, tiny_report, tmp_path, monkeypatch, atomic_writes
):
    """compare reads a report's TTA and data from metrics.json, a person report.md: new predictions beside the
    earlier evaluation's metrics would pass for what they are not. Every report file is written atomically."""
    import training.reports.evaluate as evaluate_module

    out = tmp_path / "report"
    shutil.copytree(tiny_report, out)
    assert json.loads((out / "metrics.json").read_text())["tta"] == "none"

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(evaluate_module, "calibration_section", stopped)  # after the new predictions are saved
        evaluate_module.evaluate(checkpoint=str(tiny_run / "best.pt"), out=str(out), tta="flip", device="cpu")
    assert not (out / "metrics.json").exists()
    assert not (out / "report.md").exists()  # nor the earlier report's text, for a person to read beside them

    synced, replaced = atomic_writes
    assert main(["evaluate", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(out), "--device", "cpu"]) == 0
    for name in ("predictions.npz", "metrics.json", "report.md"):
        assert name in replaced and replaced[name] in synced, name


def test_an_onnx_model_is_evaluated_on_the_images_its_run_saw_not_with_its_serving_fit(tiny_run, tmp_path):
    """export --fit chooses how served photos are fitted; the run's own validation images were fitted as it
    trained (what parity read at export), and evaluate --onnx must read the same."""
    from export.pipeline import export_checkpoint

    models = tmp_path / "models"
    entry, _ = export_checkpoint(tiny_run / "best.pt", "tiny-pad", "fp32", models, cache_dir=None, fit="pad")
    assert (entry.input.fit, entry.source["fit"]) == ("pad", "center_crop")
    out = tmp_path / "pad"
    assert main(["evaluate", "--onnx", str(models / "tiny-pad.onnx"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["fit"] == "center_crop"
    assert metrics["top1"] == pytest.approx(entry.metrics["val_top1"], abs=1e-9)


def test_a_folder_of_some_of_the_models_classes_is_scored_by_class_name(tiny_run, image_folder, tmp_path, capsys):
    """Class folders are matched to the model's classes by name (ignoring case), so a folder holding some of
    them, spelled otherwise, is scored against the right labels; a class the model does not know is refused,
    and the model's own held-out size is not applied to a folder too small for it without saying what to do."""
    own = tmp_path / "own"
    shutil.copytree(image_folder / "gamma", own / "gamma")
    shutil.copytree(image_folder / "beta", own / "Beta")
    out = tmp_path / "own-report"
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--data", str(own), "--split", "all", "--device", "cpu"]
    assert main([*argv, "--out", str(out)]) == 0
    whole = tmp_path / "whole"
    assert (
        main(
            ["evaluate", "--checkpoint", str(tiny_run), "--data", str(image_folder), "--split", "all"]
            + ["--out", str(whole), "--device", "cpu"]
        )
        == 0
    )
    mine, all_of_it = load_predictions(out), load_predictions(whole)
    assert sorted(set(mine["labels"].tolist())) == [1, 2]  # beta and gamma, in the model's order
    on_both = np.isin(all_of_it["labels"], [1, 2])
    assert (mine["predictions"] == mine["labels"]).mean() == pytest.approx(
        (all_of_it["predictions"] == all_of_it["labels"])[on_both].mean()
    )
    metrics = json.loads((out / "metrics.json").read_text())
    alpha = metrics["per_class"][0]
    assert alpha["class"] == "alpha" and alpha["accuracy"] is None  # no images of it here
    # T is fitted on the run's own validation split, whatever folder is scored, its labels in the model's order too.
    assert "in-sample for those" in metrics["calibration"]["temperature_origin"]
    val_only = tmp_path / "own-val"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(own), "--out", str(val_only)]) == 0
    val_metrics = json.loads((val_only / "metrics.json").read_text())
    assert metrics["calibration"]["temperature"] == pytest.approx(val_metrics["calibration"]["temperature"], rel=1e-4)
    report = (out / "report.md").read_text()
    assert "matched to the model's classes by name, ignoring case" in report and "2 of the model's 3" in report
    shutil.copytree(image_folder / "alpha", own / "delta")
    assert main([*argv, "--out", str(tmp_path / "r2")]) == 2
    err = capsys.readouterr().err
    assert "holds classes" in err and "does not predict: delta" in err and "alpha, beta, gamma" in err, err
    small = tmp_path / "small"
    for name in ("alpha", "beta"):
        (small / name).mkdir(parents=True)
        for f in sorted((image_folder / name).iterdir())[:3]:
            shutil.copy(f, small / name / f.name)
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(small), "--out", str(tmp_path / "r3")]) == 2
    assert "pass --split all" in capsys.readouterr().err
    assert (
        main(
            ["evaluate", "--checkpoint", str(tiny_run), "--data", str(small), "--split", "all"]
            + ["--out", str(tmp_path / "r3"), "--device", "cpu"]
        )
        == 0
    )
    # a folder smaller than the run's held-out size is calibrated with the run's own split's temperature
    small_metrics = json.loads((tmp_path / "r3" / "metrics.json").read_text())
    assert small_metrics["calibration"]["temperature"] == pytest.approx(
        val_metrics["calibration"]["temperature"], rel=1e-4
    )
    assert "No calibration section" not in (tmp_path / "r3" / "report.md").read_text()


# -- user errors ------------------------------------------------------------------------------------


def test_compare_refuses_an_out_that_is_a_file_before_evaluating_and_ensemble_names_onnx(
    tiny_run, tmp_path, monkeypatch, capsys
):
    from training.reports import compare as compare_module

    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: pytest.fail("evaluated before refusing"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compare", str(tiny_run), str(tiny_run), "--out", str(blocker / "cmp")]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    assert main(["ensemble", str(tiny_run), str(onnx), "--out", str(tmp_path / "e.pt")]) == 2
    assert "an ONNX file holds no weights to join" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["missing_checkpoint", "unknown_split", "class_mismatch", "no_model", "bad_tta"])
def test_user_errors_are_one_line_and_exit_2(case, tiny_run, cifar10_root, tmp_path, capsys):
    args = {
        "missing_checkpoint": ["--checkpoint", str(tmp_path / "nope.pt")],
        "unknown_split": ["--checkpoint", str(tiny_run), "--split", "bogus"],
        "class_mismatch": [
            "--checkpoint",
            str(tiny_run),
            "--dataset",
            "cifar10",
            "--data",
            str(cifar10_root),
            "--split",
            "test",
        ],
        "no_model": [],
        "bad_tta": ["--checkpoint", str(tiny_run), "--tta", "rotate"],
    }[case]
    said = {
        "missing_checkpoint": "no checkpoint at",
        "unknown_split": "unknown split 'bogus'",
        "class_mismatch": "does not predict: airplane",
        "no_model": "give --checkpoint RUN/best.pt or --onnx MODEL.onnx",
        "bad_tta": "unknown test-time augmentation 'rotate'",
    }[case]
    assert main(["evaluate", *args, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and said in err, err
    assert not (tmp_path / "r" / "metrics.json").exists()


# -- ablate -----------------------------------------------------------------------------------------


def test_vary_parsing():
    assert split_values("[30,60],[50],none") == ["[30,60]", "[50]", "none"]
    assert parse_vary(["use_se=true,false", "dropout=0.5,0"]) == [
        ("use_se", ["true", "false"]),
        ("dropout", ["0.5", "0"]),
    ]
    for bad, said in (
        (["dropout"], "is not KEY=V1,V2"),
        (["dropout=0.5,0.5"], "repeats a value"),
        (["dropout=0.1,0.3", "dropout=0.2,0.4"], "given twice"),
        (["dropout=0.5,0", "epochs=4"], "gives one value: vary it over two or more, or pass --set epochs=4"),
        (["=0.1,0.2"], "empty key or value"),
        ([], "at least one --vary"),
    ):
        with pytest.raises(ValueError, match=said):
            parse_vary(bad)


def _ablation_row(variant: str, per_class: dict[str, float], baseline: bool = False) -> dict:
    return {
        "variant": variant,
        "tta": "none",
        "baseline": baseline,
        "top1": 0.5,
        "loss": 1.0,
        "per_class_accuracy": per_class,
        "fingerprint": "f",
        "num_samples": 30,
        "epochs": 1,
        "train_time_s": 1.0,
        "parameters": 10,
    }


def test_an_ablation_names_no_class_as_gaining_or_losing_where_none_did():
    """The largest-gain column named a class at +0.0 (or one that lost) when no class gained."""
    from training.reports.ablate_rows import largest_class_changes
    from training.reports.ablate_table import format_table

    base = {"alpha": 0.5, "beta": 0.5, "gamma": 0.5}
    worse, better = {"alpha": 0.5, "beta": 0.4, "gamma": 0.3}, {"alpha": 0.6, "beta": 0.5, "gamma": 0.5}
    assert largest_class_changes({c: worse[c] - base[c] for c in base}) == (
        None,
        {"class": "gamma", "points": pytest.approx(-20.0)},
    )
    assert largest_class_changes({c: better[c] - base[c] for c in base}) == (
        {"class": "alpha", "points": pytest.approx(10.0)},
        None,
    )
    rows = [_ablation_row("x=0", base, baseline=True), _ablation_row("x=1", worse), _ablation_row("x=2", better)]
    for row in rows:
        row["top1_diff_points"], row["per_class_mean_diff_points"] = 0.0, 0.0
        row["mcnemar_vs_baseline"] = row["diff_interval_vs_baseline"] = row["vs_previous"] = None
        deltas = {c: row["per_class_accuracy"][c] - base[c] for c in base}
        row["largest_class_gain"], row["largest_class_loss"] = largest_class_changes(deltas)
    result = {"recipe": "r", "vary": [{"key": "x", "values": ["0", "1", "2"]}], "set": [], "split": "val"}
    table = format_table({**result, "variants": rows})
    assert "| none | gamma -20.0 |" in table and "| alpha +10.0 | none |" in table, table
    assert "alpha +0.0" not in table and "beta +0.0" not in table


def test_a_stepped_ablations_table_names_its_rows_steps():
    """A stepped ablation's table headed its rows "variant" and spoke of "each variant's own data", where its
    progress, warnings and refusals call them steps; a --vary ablation's table is unchanged."""
    from training.reports.ablate_table import format_table

    base = {"alpha": 0.5}
    rows = [_ablation_row("base", base, baseline=True), _ablation_row("more", base)]
    for row, samples in zip(rows, (30, 40)):
        row["top1_diff_points"], row["per_class_mean_diff_points"] = 0.0, 0.0
        row["mcnemar_vs_baseline"] = row["diff_interval_vs_baseline"] = row["vs_previous"] = None
        row["largest_class_gain"] = row["largest_class_loss"] = None
        row["fingerprint"], row["num_samples"] = f"f{samples}", samples
    steps = [{"label": "base", "settings": []}, {"label": "more", "settings": ["lr=0.2"]}]
    stepped = format_table({"recipe": "r", "vary": [], "steps": steps, "set": [], "split": "val", "variants": rows})
    assert "\n| step | top-1 |" in stepped and "of each step's own data (base: 30 images; more: 40" in stepped, stepped
    assert "variant" not in stepped, stepped
    varied = {"recipe": "r", "vary": [{"key": "lr", "values": ["0.1", "0.2"]}], "set": [], "split": "val"}
    table = format_table({**varied, "variants": rows})
    assert "\n| variant | top-1 |" in table and "of each variant's own data" in table, table


def test_a_step_named_baseline_is_marked_the_baseline_once():
    """docs/fast-training.md's ablation names its first step "baseline", and its table's first row read
    "baseline (baseline)"; a first step of another name is still marked."""
    from training.reports.ablate_table import format_table

    base = {"alpha": 0.5}
    for first, expected in (("baseline", "| baseline |"), ("plain", "| plain (baseline) |")):
        rows = [_ablation_row(first, base, baseline=True), _ablation_row("+more", base)]
        for row in rows:
            row["top1_diff_points"], row["per_class_mean_diff_points"] = 0.0, 0.0
            row["mcnemar_vs_baseline"] = row["diff_interval_vs_baseline"] = row["vs_previous"] = None
            row["largest_class_gain"] = row["largest_class_loss"] = None
        steps = [{"label": first, "settings": []}, {"label": "+more", "settings": ["lr=0.2"]}]
        table = format_table({"recipe": "r", "vary": [], "steps": steps, "set": [], "split": "val", "variants": rows})
        assert expected in table and "(baseline) (baseline)" not in table, table
        assert "baseline (baseline)" not in table, table
        assert "| +more |" in table, table


def test_an_ablation_of_variants_on_different_samples_says_each_ones_count(image_folder, tmp_path):
    """The table said the first variant's image count for all of them; variants evaluated on other images than
    the baseline are not paired, so they have no p or interval, and the table says why."""
    from training.reports.ablate import ablate

    sets = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    sets = [s for s in sets if not s.startswith("data.val_size=")]
    result = ablate("resnet9_half_cpu", ["data.val_size=15,21"], sets, out=tmp_path / "a", device="cpu")
    table = (tmp_path / "a" / "ablation.md").read_text()
    assert "(data.val_size=15: 15 images; data.val_size=21: 21 images)" in table and "(15 images)" not in table, table
    assert "has no p or interval" in table
    rows = result["variants"]
    assert [r["num_samples"] for r in rows] == [15, 21] and result["num_samples"] is None
    assert rows[1]["mcnemar_vs_baseline"] is None and rows[1]["diff_interval_vs_baseline"] is None


def test_ablation_skips_finished_variants_and_resumes_an_interrupted_one(image_folder, tmp_path, monkeypatch, capsys):
    import training.reports.ablate as ablate_mod
    from training.engine import Trainer

    out = tmp_path / "ablation"
    sets = tiny_overrides(image_folder, tmp_path / "cache", epochs=2)
    argv = [
        "ablate",
        "--recipe",
        "resnet9_half_cpu",
        "--vary",
        "dropout=0,0.3",
        "--set",
        *sets,
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    calls = {"train": 0, "resume": 0}
    real_train, real_resume, real_end_epoch = ablate_mod.train, ablate_mod.resume, Trainer._end_epoch

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    def interrupt_second_variant(self, record):
        stop = real_end_epoch(self, record)
        if self.out_dir.name == "dropout-0.3" and record["epoch"] == 1:
            raise KeyboardInterrupt  # as if Ctrl-C arrived after epoch 1 was saved
        return stop

    monkeypatch.setattr(ablate_mod, "train", counting("train", real_train))
    monkeypatch.setattr(ablate_mod, "resume", counting("resume", real_resume))
    monkeypatch.setattr(Trainer, "_end_epoch", interrupt_second_variant)
    assert main(argv) == 130
    assert calls == {"train": 2, "resume": 0}
    baseline, second = out / "dropout-0", out / "dropout-0.3"
    assert (baseline / "summary.json").is_file() and not (second / "summary.json").exists()
    assert load_checkpoint(second / "last.pt")["epoch"] == 1
    stamps = {p.name: p.stat().st_mtime_ns for p in baseline.iterdir()}

    monkeypatch.setattr(Trainer, "_end_epoch", real_end_epoch)
    assert main(argv) == 0
    assert calls == {"train": 2, "resume": 1}, "the finished variant must not be retrained"
    assert {p.name: p.stat().st_mtime_ns for p in baseline.iterdir()} == stamps
    assert load_checkpoint(second / "last.pt")["epoch"] == 2
    assert len(json.loads((second / "history.json").read_text())) == 2

    assert main(argv) == 0
    assert calls == {"train": 2, "resume": 1}
    result = json.loads((out / "ablation.json").read_text())
    rows = result["variants"]
    assert [r["variant"] for r in rows] == ["dropout=0", "dropout=0.3"]
    assert [r["status"] for r in rows] == ["finished earlier", "finished earlier"]
    assert rows[0]["baseline"] and rows[0]["top1_diff_points"] == 0.0 and rows[0]["per_class_mean_diff_points"] == 0.0
    assert rows[1]["top1_diff_points"] == pytest.approx(100 * (rows[1]["top1"] - rows[0]["top1"]))
    assert 0.0 <= rows[1]["mcnemar_vs_baseline"]["p_value"] <= 1.0
    interval = rows[1]["diff_interval_vs_baseline"]
    assert interval["confidence"] == 0.95 and interval["low"] <= rows[1]["top1_diff_points"] <= interval["high"]
    assert rows[0]["diff_interval_vs_baseline"] is None
    assert all(r["vs_previous"] is None for r in rows)  # --vary is a grid, not a sequence of steps
    table = (out / "ablation.md").read_text()
    assert "gain vs row above" not in table and "95% interval" in table
    assert len({line.count("|") for line in table.splitlines() if line.startswith("|")}) == 1
    assert "| dropout=0 (baseline) |" in table and "| dropout=0.3 |" in table
    assert "dropout=0.3" in capsys.readouterr().out

    (baseline / "last.pt").unlink()  # deleted to save space: the variant has finished, and its best.pt is read
    assert main(argv) == 0 and calls == {"train": 2, "resume": 1}
    again = json.loads((out / "ablation.json").read_text())["variants"]
    assert [(r["status"], r["top1"], r["loss"]) for r in again] == [(r["status"], r["top1"], r["loss"]) for r in rows]
    capsys.readouterr()

    (second / "summary.json").write_text('{"best_val_top1": 0.')  # a copy cut short
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{second / 'summary.json'} is not valid JSON" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--vary", "optim.nosuch=1,2"], "optim.nosuch: no such setting"),
        (["--vary", "dropout=0,0.1", "--split", "test"], "a folder dataset has no separate test split"),
        (["--vary", "dropout=0,0.1", "--device", "gpu"], "device 'gpu': not a device"),
        (["--vary", "dropout=0,0.1", "--set", "dropout=0.2"], "model.args.dropout is set twice"),
        # a key no config field has is a model argument: only building the network refuses it, for every step
        (
            ["--step", "base", "cutout=4", "--step", "more", "cutouts=8"],
            "step 'more': model 'resnet9' takes no argument 'cutouts'",
        ),
    ],
    ids=["unknown_key", "folder_has_no_test_split", "not_a_device", "varied_and_set", "model_argument_typo"],
)
def test_ablation_rejects_bad_settings_before_training(extra, said, tmp_path, image_folder, capsys):
    sets = tiny_overrides(image_folder, tmp_path / "cache")
    # the tiny settings first: their model.args mapping replaces the whole dict, so a dropout before it is undone
    assert main(["ablate", "--recipe", "resnet9_half_cpu", "--set", *sets, *extra, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and said in err, err
    assert not any((tmp_path / "a").glob("*/last.pt"))


def test_an_ablation_of_a_mistyped_recipe_says_so_before_any_variant(tmp_path, capsys):
    """A recipe typo was blamed on the first variant ("variant 'label_smoothing=0.2': no recipe ..."): the recipe is
    the ablation's, said as train says it, with its did-you-mean."""
    argv = ["ablate", "--recipe", "resnet9_half_cp", "--vary", "label_smoothing=0.2,0", "--out", str(tmp_path / "a")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no recipe 'resnet9_half_cp' (recipes named like it: resnet9_half_cpu); "), err
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["evaluate", "--checkpoint", "RUN", "--batch-size", "0"], "--batch-size: 0 is not at least 1"),
        (["compare", "A", "B", "--alpha", "1.5"], "--alpha: 1.5 is not a significance level"),
        (["compare", "A", "B", "--alpha", "0"], "--alpha: 0 is not a significance level"),
        (["evaluate", "--checkpoint", "RUN", "--max-classes", "0"], "--max-classes: 0 is not at least 1"),
        (["evaluate", "--checkpoint", "RUN", "--val-size", "-1"], "--val-size: -1 is not at least 0"),
        (["compare", "A", "B", "--split-seed", "-3"], "--split-seed: -3 is not at least 0"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(args, said, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2 and said in capsys.readouterr().err


def test_ablate_refuses_a_batch_size_below_1_before_training(tmp_path, image_folder, capsys):
    sets = tiny_overrides(image_folder, tmp_path / "cache")
    with pytest.raises(SystemExit) as done:
        main(
            ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "dropout=0,0.1", "--set", *sets]
            + ["--out", str(tmp_path / "a"), "--batch-size", "-1"]
        )
    assert done.value.code == 2 and "--batch-size: -1 is not at least 1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_a_device_that_is_none_is_named_in_one_line(tiny_run, tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--device", "gpu", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "device 'gpu': not a device; use auto, cpu, cuda or cuda:N" in err and "Traceback" not in err


def test_a_file_that_is_no_checkpoint_is_refused_in_one_line_not_a_traceback(tiny_models_dir, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    onnx_file = next(tiny_models_dir.glob("*.onnx"))
    for path, said in ((junk, "it is not the zip archive torch.save writes"), (onnx_file, "evaluate it with --onnx")):
        assert main(["evaluate", "--checkpoint", str(path), "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err and "weights_only` set to `False`" not in err
    assert main(["evaluate", "--onnx", str(junk), "--out", str(tmp_path / "r")]) == 2
    assert "is not an ONNX model ONNX Runtime can load" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_no_sample_figures_leaves_out_the_figures_made_of_dataset_images(tiny_run, image_folder, tmp_path):
    out = tmp_path / "shipped"
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--data", str(image_folder), "--out", str(out)]
    assert main(argv) == 0 and (out / "gradcam.png").is_file()  # a first report in the same folder
    assert main([*argv, "--no-sample-figures"]) == 0  # its figures of the data go, not left behind
    report = (out / "report.md").read_text()
    assert not (out / "misclassified.png").exists() and not (out / "gradcam.png").exists()
    assert "misclassified.png" not in report and "gradcam.png" not in report and "--no-sample-figures" in report
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "reliability.png", "metrics.json"):
        assert (out / name).is_file(), name


def test_a_model_that_answers_nan_is_refused_as_broken_not_reported(tiny_run, tmp_path, capsys):
    """A checkpoint whose weights went NaN was reported with NaN loss and ECE and an arbitrary temperature, and
    nothing in the report said that the model was broken."""
    ckpt = load_checkpoint(tiny_run / "best.pt")
    for weights in (ckpt["model"], ckpt.get("ema") or {}):
        for tensor in weights.values():
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    broken = tmp_path / "broken" / "best.pt"
    broken.parent.mkdir()
    torch.save(ckpt, broken)
    out = tmp_path / "report"
    assert main(["evaluate", "--checkpoint", str(broken), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"error: {broken} is broken: it answers NaN or infinite logits for " in err and "Traceback" not in err
    said = [line for line in err.splitlines() if "error:" in line]  # beside the progress bar's lines
    assert len(said) == 1 and said[0].startswith("error:") and said[0].endswith("its logits overflow)"), err
    assert not out.exists()


def test_evaluate_with_val_size_0_says_the_split_is_empty_because_of_it(tiny_run, tmp_path):
    """--val-size 0 holds out no images: the error said only "has no samples", then blamed the run, which had held
    out some."""
    from training.reports.evaluate import evaluate

    with pytest.raises(ValueError, match=r"has no samples \(--val-size 0 holds out none: give a larger one, or "):
        evaluate(tiny_run, out=tmp_path / "r", val_size=0, device="cpu")


def test_evaluate_of_a_run_that_held_out_nothing_says_so(image_folder, tmp_path):
    """A run trained with data.val_size=0 has no val split: the error said only "has no samples"."""
    from conftest import tiny_overrides
    from training.config_recipes import build_config
    from training.engine import train
    from training.reports.evaluate import evaluate

    run = tmp_path / "run"
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=1, **{"data.val_size": 0})
    train(build_config("resnet9_half_cpu", overrides), run)
    with pytest.raises(ValueError, match=r"has no samples \(the run held out none: data.val_size=0; evaluate it on"):
        evaluate(run, out=tmp_path / "r", device="cpu")


def test_an_evaluation_stopped_while_predicting_leaves_no_empty_report_folder(tiny_run, tmp_path, monkeypatch):
    """The folder was made before the predictions: Ctrl-C (or a failure) during them left it, empty, behind."""
    from training.reports.evaluate import evaluate
    from training.reports.sources import ModelSource

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ModelSource, "predict", interrupted)
    kept = tmp_path / "kept"  # a folder that was there before is not this call's to take away
    kept.mkdir()
    for out in (tmp_path / "new" / "report", kept):
        with pytest.raises(KeyboardInterrupt):
            evaluate(tiny_run, out=out, device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_two_onnx_files_of_one_name_do_not_share_the_default_report_folder(tiny_models_dir, tmp_path, monkeypatch):
    """An ONNX model's default report folder is reports/<file name>-<split>: a second file of the same name
    wrote over the first one's report, which `ensemble` and `compare` would then read as the first's."""
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        shutil.copy(tiny_models_dir / "tiny.onnx", tmp_path / side / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--onnx", "a/tiny.onnx", "--no-sample-figures"]) == 0
    kept = (tmp_path / "reports" / "tiny-val" / "metrics.json").read_bytes()
    assert main(["evaluate", "--onnx", "b/tiny.onnx", "--no-sample-figures"]) == 2
    assert (tmp_path / "reports" / "tiny-val" / "metrics.json").read_bytes() == kept
    assert main(["evaluate", "--onnx", "a/tiny.onnx", "--no-sample-figures"]) == 0  # its own: rewritten


def test_a_report_folder_inside_the_image_folder_evaluated_is_refused(tiny_run, image_folder, tmp_path, capsys):
    """Its PNG figures were read by every later run on that folder: the report folder became a class."""
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    shutil.copy(tiny_run / "best.pt", data / "model.pt")  # its default report folder is beside it
    for argv, named in (
        (["--checkpoint", str(tiny_run), "--data", str(data), "--out", str(data / "report")], "--out"),
        (["--checkpoint", str(tiny_run), "--data", str(data), "--out", str(data / "alpha" / "report")], "--out"),
        (["--checkpoint", str(data / "model.pt"), "--data", str(data)], "the default report folder"),
    ):
        assert main(["evaluate", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {named} ") and f"is inside the dataset {data}" in err, err
    assert sorted(p.name for p in data.iterdir()) == ["alpha", "beta", "gamma", "model.pt"]
    assert len(list((data / "alpha").iterdir())) == 20


def test_an_ablation_folder_inside_the_image_folder_is_refused_before_any_folder_is_made(
    image_folder, tmp_path, capsys
):
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    sets = tiny_overrides(data, tmp_path / "cache", epochs=1)
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "dropout=0,0.1", "--set", *sets]
    assert main([*argv, "--out", str(data / "ablation")]) == 2
    assert f"--out {data / 'ablation'} is inside the dataset" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == ["alpha", "beta", "gamma"]  # not even an empty folder


def test_an_ablation_is_not_written_into_a_training_run_or_a_folder_of_other_files(
    tiny_run, image_folder, tmp_path, capsys
):
    """Its table and variant folders went in beside the run's own files without a word."""
    run, notes = tmp_path / "run", tmp_path / "notes"
    shutil.copytree(tiny_run, run)
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    sets = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "dropout=0,0.1", "--set", *sets]
    for out, said in (
        (run, "holds a training run (last.pt, best.pt, summary.json"),
        (notes, "holds files and no ablation (notes.txt)"),
    ):
        before = sorted(p.name for p in out.iterdir())
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {out} {said}" in err and err.count("\n") == 1, err
        assert sorted(p.name for p in out.iterdir()) == before


def _ablate_until_the_first_training(argv: list[str], monkeypatch) -> tuple[int, list[str]]:
    """The ablation command's exit status and the variants whose training it reached: the first one stops it."""
    import training.reports.ablate as ablate_mod

    trained: list[str] = []

    def trains(config, folder):
        trained.append(folder.name)
        raise KeyboardInterrupt  # stands for the first variant's training, reached

    monkeypatch.setattr(ablate_mod, "train", trains)
    return main(argv), trained


@pytest.mark.parametrize(
    ("vary", "said"),
    [
        ("batch_size=16,64", "variant 'batch_size=64': batch_size 64 exceeds the 45 training images"),
        ("lookahead_every=0,100", "variant 'lookahead_every=100': train.lookahead_every 100 is more than the run's"),
    ],
    ids=["batch", "lookahead"],
)
def test_an_ablation_variant_too_long_for_the_data_is_refused_before_any_variant_trains(
    vary, said, image_folder, tmp_path, monkeypatch, capsys
):
    """The last variant's batch larger than the training split (or lookahead period longer than its run) was
    refused by its own run, once every variant before it had trained."""
    varied = vary.split("=")[0]
    sets = [s for s in tiny_overrides(image_folder, tmp_path / "cache") if not s.startswith(f"{varied}=")]
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--set", *sets, "--vary", vary, "--out", str(tmp_path / "a")]
    status, trained = _ablate_until_the_first_training(argv, monkeypatch)
    err = capsys.readouterr().err
    assert (status, trained) == (2, []), err
    assert f"error: {said}" in err and "Traceback" not in err, err


def test_an_ablation_variant_on_data_with_one_class_is_refused_before_any_variant_trains(
    image_folder, tmp_path, monkeypatch, capsys
):
    one_class = tmp_path / "one"
    shutil.copytree(image_folder / "alpha", one_class / "alpha")
    sets = [
        s
        for s in tiny_overrides(image_folder, tmp_path / "cache", **{"data.val_size": 5})
        if not s.startswith("data.root=")
    ]
    vary = f"data.root={image_folder},{one_class}"
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--set", *sets, "--vary", vary, "--out", str(tmp_path / "a")]
    status, trained = _ablate_until_the_first_training(argv, monkeypatch)
    err = capsys.readouterr().err
    assert (status, trained) == (2, []), err
    assert f"variant 'data.root={one_class}': {one_class} holds 1 class (alpha)" in err, err


def test_an_ablation_variant_folder_of_another_run_is_refused_before_any_variant_trains(
    image_folder, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "a"
    (out / "dropout-0.3").mkdir(parents=True)
    (out / "dropout-0.3" / "config.yaml").write_text("model: {name: other}\n")
    (out / "dropout-0.3" / "last.pt").write_bytes(b"a run of its own")
    sets = tiny_overrides(image_folder, tmp_path / "cache")
    argv = ["ablate", "--recipe", "resnet9_half_cpu", "--set", *sets, "--vary", "dropout=0,0.3", "--out", str(out)]
    status, trained = _ablate_until_the_first_training(argv, monkeypatch)
    err = capsys.readouterr().err
    assert (status, trained) == (2, []), err
    assert f"{out / 'dropout-0.3'} holds a run with a different configuration" in err, err


def test_an_ablation_variant_started_by_another_configuration_without_its_config_yaml_is_refused(
    image_folder, tmp_path, capsys
):
    """A variant folder whose config.yaml was deleted counted as this variant's run, and its last.pt, of another
    configuration, was resumed as the variant."""
    sets = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    other = tmp_path / "a" / "dropout-0.3"
    assert main(["train", "--recipe", "resnet9_half_cpu", "--out", str(other), "--set", *sets, "dropout=0.5"]) == 0
    (other / "config.yaml").unlink()
    (other / "summary.json").unlink()  # stopped before its end
    argv = [
        "ablate",
        "--recipe",
        "resnet9_half_cpu",
        "--set",
        *sets,
        "--vary",
        "dropout=0,0.3",
        "--out",
        str(other.parent),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "holds a run of another configuration" in err and "0.5 -> 0.3" in err, err


def test_a_stepped_ablations_refusals_of_its_folder_name_its_runs_steps(tmp_path):
    """A stepped ablation's folder holding the same steps with another --set, or a step's unreadable config.yaml,
    was refused as holding "the same variants" and "this variant's" run: its other refusals call them steps."""
    from inference.errors import UsageError
    from training.reports.ablate_folders import ABLATION_FILE, _saved_config, check_same_ablation

    steps = [{"label": "base", "settings": ["lr=0.1"]}, {"label": "pruned", "settings": ["prune_until=0.5"]}]
    record = {"recipe": "resnet9_half_cpu", "vary": [], "set": ["seed=1"], "steps": steps}
    (tmp_path / ABLATION_FILE).write_text(json.dumps(record))
    with pytest.raises(UsageError) as refused:
        check_same_ablation(tmp_path, {**record, "set": ["seed=2"]})
    assert "(the same steps with other --set (seed=1))" in str(refused.value), refused.value
    (tmp_path / "config.yaml").write_bytes(b"\xff")
    with pytest.raises(UsageError) as unreadable:
        _saved_config(tmp_path / "config.yaml")
    assert "variant" not in str(unreadable.value), unreadable.value
