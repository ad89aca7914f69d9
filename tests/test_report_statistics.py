"""The reports' statistics against independent references: textbook formulas written out here (explicit sums and
counts on small hand-made inputs: ties, classes with no sample or no prediction, every sample right and every sample
wrong), scipy's own routines, and simulation where a method promises a coverage. The numbers evaluate, compare and
the ensemble estimate print are checked so, end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import optimize, stats
from torch import nn

from training.commands import _format_estimate
from training.ensemble import estimate_from_reports
from training.models.ensemble import Ensemble
from training.reports.calibration import calibration_metrics, fit_temperature
from training.reports.compare import compare, format_comparison
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
from training.reports.predictions import METRICS_FILE, save_predictions

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def _pairs(b: int, c: int, both_right: int = 0, both_wrong: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of A and B: b samples only A gets right, c only B, then both right, then both wrong."""
    a = [True] * b + [False] * c + [True] * both_right + [False] * both_wrong
    bb = [False] * b + [True] * c + [True] * both_right + [False] * both_wrong
    return np.array(a), np.array(bb)


# -- the paired interval ------------------------------------------------------------------------------


def _coverage(n: int, only_a: float, only_b: float, draws: int, seed: int) -> float:
    """Share of ``draws`` simulated test sets of ``n`` samples whose 95% interval holds the true difference."""
    rng = np.random.default_rng(seed)
    truth = only_b - only_a
    held = 0
    for b, c, rest in rng.multinomial(n, [only_a, only_b, 1 - only_a - only_b], size=draws):
        low, high = paired_difference_interval(*_pairs(int(b), int(c), int(rest), 0))
        held += low <= truth <= high
    return held / draws


def test_the_paired_interval_covers_what_it_claims_where_the_discordant_pairs_are_few():
    """B better on 3% of 100 images and never worse: the Wald interval held the true +3 points in 80% of test
    sets (every set where B got none of them right gave the certain interval [0, 0])."""
    assert _coverage(100, 0.0, 0.03, draws=4000, seed=0) >= 0.93


def test_the_paired_interval_keeps_its_coverage_on_a_large_test_set():
    assert _coverage(5000, 0.02, 0.03, draws=2000, seed=1) >= 0.93


def test_the_paired_interval_is_never_certain_of_what_a_few_samples_show():
    """Models that agree on all 20 images could still differ elsewhere; three images that only B gets right do
    not prove B right on every image."""
    low, high = paired_difference_interval(*_pairs(0, 0, 15, 5))
    assert low < 0 < high
    low, high = paired_difference_interval(*_pairs(0, 3, 0, 0))
    assert -1 <= low < high <= 1 and low < 1
    assert mcnemar(*_pairs(0, 3, 0, 0))["p_value"] > 0.05  # the exact test finds no difference either


def _agresti_min(b: int, c: int, n: int, z: float) -> tuple[float, float]:
    """Agresti and Min (2005): 0.5 added to each of the four cells (n + 2 samples), then the Wald interval of
    p21 - p12 with variance (p12 + p21 - (p21 - p12)^2) / (n + 2); clipped to [-1, 1]."""
    p12, p21 = (b + 0.5) / (n + 2), (c + 0.5) / (n + 2)
    half = z * math.sqrt((p12 + p21 - (p21 - p12) ** 2) / (n + 2))
    return max(p21 - p12 - half, -1.0), min(p21 - p12 + half, 1.0)


@pytest.mark.parametrize("b, c, both_right, both_wrong", [(30, 10, 50, 7), (136, 188, 4300, 376), (0, 5, 40, 5)])
def test_the_paired_interval_is_agresti_and_mins_adjusted_wald(b, c, both_right, both_wrong):
    """Half a sample added to each of the four cells, then the Wald interval of the paired difference."""
    n = b + c + both_right + both_wrong
    expected_low, expected_high = _agresti_min(b, c, n, stats.norm.ppf(0.975))
    low, high = paired_difference_interval(*_pairs(b, c, both_right, both_wrong))
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)
    assert low <= (c - b) / n <= high  # the observed difference stays inside


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0, -0.5, float("nan")])
def test_the_paired_interval_refuses_a_confidence_outside_0_and_1(confidence):
    with pytest.raises(ValueError, match="not between 0 and 1"):
        paired_difference_interval(*_pairs(3, 5, 10, 2), confidence)


@pytest.mark.parametrize(
    "b, c, both_right, both_wrong",
    [(0, 0, 10, 0), (0, 0, 0, 10), (0, 0, 1, 0), (5, 0, 0, 0), (0, 5, 0, 0), (4, 4, 2, 2), (1, 9, 80, 10)],
)
def test_the_paired_interval_is_agresti_and_mins_on_ties_all_right_all_wrong_and_one_way(b, c, both_right, both_wrong):
    n = b + c + both_right + both_wrong
    low, high = paired_difference_interval(*_pairs(b, c, both_right, both_wrong))
    expected = _agresti_min(b, c, n, Z95)
    assert (low, high) == (pytest.approx(expected[0], abs=1e-12), pytest.approx(expected[1], abs=1e-12))
    assert low <= (c - b) / n <= high  # B - A as observed is inside
    assert low < high  # never certain, even where the two always agree
    swapped = paired_difference_interval(*reversed(_pairs(b, c, both_right, both_wrong)))
    assert swapped == (pytest.approx(-high, abs=1e-12), pytest.approx(-low, abs=1e-12))


def test_the_paired_interval_takes_its_confidence_level():
    low, high = paired_difference_interval(*_pairs(12, 20, 60, 8), 0.90)
    expected = _agresti_min(12, 20, 100, 1.6448536269514722)
    assert (low, high) == (pytest.approx(expected[0], abs=1e-12), pytest.approx(expected[1], abs=1e-12))
    wide = paired_difference_interval(*_pairs(12, 20, 60, 8), 0.99)
    assert wide[0] < low and wide[1] > high


# -- McNemar ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b, c", [(2, 9), (12, 12), (24, 0), (20, 5), (100, 140), (13, 12)])
def test_mcnemar_agrees_with_scipys_binomial_test_and_chi_square(b, c):
    result = mcnemar(*_pairs(b, c, 30, 4))
    if b + c < 25:
        assert result["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    else:
        corrected = max(abs(b - c) - 1, 0) ** 2 / (b + c)
        assert result["p_value"] == pytest.approx(stats.chi2.sf(corrected, df=1), rel=1e-12)


def _mcnemar_reference(b: int, c: int) -> tuple[str, float, float]:
    """Method, statistic and p: the two-sided exact binomial test, 2 P(X <= min(b, c)) for X ~ Bin(b + c, 1/2)
    capped at 1, below 25 discordant pairs; else Edwards' continuity-corrected chi-square on 1 degree of freedom,
    whose survival function is erfc(sqrt(s / 2)), the correction stopping at |b - c| (never a negative distance)."""
    n = b + c
    if n == 0:
        return "none", 0.0, 1.0
    if n < 25:
        tail = math.fsum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
        return "exact binomial", float(min(b, c)), min(1.0, 2 * tail)
    s = max(abs(b - c) - 1, 0) ** 2 / n
    return "chi-square with continuity correction", s, math.erfc(math.sqrt(s / 2))


@pytest.mark.parametrize(
    "b, c",
    [(0, 0), (1, 0), (0, 1), (3, 3), (12, 12), (0, 24), (24, 0), (10, 2), (13, 11), (12, 13), (25, 0)]
    + [(13, 12), (30, 30), (31, 30), (30, 10), (40, 80), (0, 200)],
)
def test_mcnemar_is_the_exact_binomial_test_then_the_corrected_chi_square(b, c):
    method, statistic, p = _mcnemar_reference(b, c)
    result = mcnemar(*_pairs(b, c, both_right=7, both_wrong=4))
    assert MCNEMAR_EXACT_BELOW == 25
    assert result["method"].startswith(method)
    assert result["statistic"] == pytest.approx(statistic, abs=1e-12)
    assert result["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-300)
    assert 0.0 <= result["p_value"] <= 1.0
    counts = (result["a_right_b_wrong"], result["a_wrong_b_right"], result["both_right"], result["both_wrong"])
    assert counts == (b, c, 7, 4) and result["discordant"] == b + c
    assert mcnemar(*_pairs(c, b, 7, 4))["p_value"] == result["p_value"]  # which side is A does not matter


@pytest.mark.parametrize("n", [1, 10, 24, 25, 60])
def test_mcnemar_where_both_models_are_always_right_always_wrong_or_one_always_beats_the_other(n):
    right, wrong = np.ones(n, bool), np.zeros(n, bool)
    assert mcnemar(right, right)["p_value"] == 1.0 and mcnemar(wrong, wrong)["p_value"] == 1.0
    assert mcnemar(right, right)["discordant"] == 0
    one_way = mcnemar(right, wrong)  # b = n, c = 0
    assert one_way["p_value"] == pytest.approx(_mcnemar_reference(n, 0)[2], rel=1e-9, abs=1e-300)
    if n < 25:
        assert one_way["p_value"] == pytest.approx(min(1.0, 2 / 2**n), rel=1e-12)


# -- per-class figures --------------------------------------------------------------------------------


def _onehot_logits(preds: list[int], num_classes: int) -> np.ndarray:
    return (4.0 * np.eye(num_classes)[preds]).astype(np.float32)


def _per_class_reference(labels: list[int], preds: list[int], num_classes: int) -> list[tuple]:
    """(precision, recall, F1) per class from the counts: F1 = 2 TP / (2 TP + FP + FN), 0 where the class is
    predicted and never right or never predicted; precision 0 where never predicted; recall and F1 None without
    a sample of the class."""
    rows = []
    for k in range(num_classes):
        tp = sum(1 for y, p in zip(labels, preds) if y == k and p == k)
        fp = sum(1 for y, p in zip(labels, preds) if y != k and p == k)
        fn = sum(1 for y, p in zip(labels, preds) if y == k and p != k)
        precision = tp / (tp + fp) if tp + fp else 0.0
        if tp + fn == 0:
            rows.append((precision, None, None))
        else:
            rows.append((precision, tp / (tp + fn), 2 * tp / (2 * tp + fp + fn)))
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_per_class_and_averaged_figures_follow_their_definitions(seed):
    """Random test sets of 1 to 40 samples over 5 classes: classes absent from the labels or never predicted
    come up often."""
    rng = np.random.default_rng(seed)
    size = int(rng.integers(1, 41))
    # each drawn from a random subset of the classes
    labels = rng.choice(rng.permutation(5)[: rng.integers(1, 6)], size)
    preds = rng.choice(rng.permutation(5)[: rng.integers(1, 6)], size)
    logits = 5.0 * np.eye(5, dtype=np.float32)[preds]
    metrics = compute_metrics(logits, labels, list("abcde"))
    rows = _per_class_reference(labels.tolist(), preds.tolist(), 5)
    present = [c for c in range(5) if (labels == c).any()]
    for c, row in enumerate(metrics["per_class"]):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(rows[c])
        assert row["support"] == int((labels == c).sum()) and row["predicted"] == int((preds == c).sum())
    weights = np.array([(labels == c).sum() for c in present]) / len(labels)
    for i, name in enumerate(("precision", "recall", "f1")):
        values = np.array([rows[c][i] for c in present], dtype=float)
        assert metrics["macro_avg"][name] == pytest.approx(values.mean())
        assert metrics["weighted_avg"][name] == pytest.approx(float(weights @ values))
    cm = np.array(metrics["confusion_matrix"])  # rows the true class, columns the predicted one
    np.testing.assert_array_equal(cm, np.histogram2d(labels, preds, bins=[np.arange(6)] * 2)[0])
    assert metrics["top1"] == pytest.approx(float((labels == preds).mean()))


def test_top_k_counts_a_label_among_the_k_largest_logits():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(200, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 200)
    rank = (logits > logits[np.arange(200), labels][:, None]).sum(axis=1)  # logits above the label's (no ties)
    metrics = compute_metrics(logits, labels, [str(i) for i in range(10)])
    assert metrics["top3"] == pytest.approx(float((rank < 3).mean()))
    assert metrics["top5"] == pytest.approx(float((rank < 5).mean()))


CASES = {
    # every sample right
    "all right": ([0, 1, 2, 2], [0, 1, 2, 2], 3),
    # every sample wrong: each class predicted, never right
    "all wrong": ([0, 1, 2, 2], [1, 2, 0, 0], 3),
    # class 3 has no sample and is never predicted; class 2 has samples and is never predicted
    "zero counts": ([0, 0, 1, 2, 2], [0, 1, 1, 0, 1], 4),
    # class 1 has no sample but is predicted
    "predicted, absent": ([0, 0, 2], [1, 0, 2], 3),
    # a single class among the labels
    "one class present": ([1, 1, 1], [1, 0, 1], 3),
}


@pytest.mark.parametrize("case", CASES)
def test_precision_recall_f1_and_their_averages_from_the_counts(case):
    labels, preds, num_classes = CASES[case]
    m = compute_metrics(_onehot_logits(preds, num_classes), np.array(labels), [f"c{k}" for k in range(num_classes)])
    rows = _per_class_reference(labels, preds, num_classes)
    for k, row in enumerate(m["per_class"]):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx(rows[k]), (case, k)
        assert row["accuracy"] == row["recall"]
        assert row["support"] == labels.count(k) and row["predicted"] == preds.count(k)
    present = [k for k in range(num_classes) if k in labels]
    support = [labels.count(k) for k in present]
    for i, name in enumerate(("precision", "recall", "f1")):
        values = [rows[k][i] for k in present]
        assert m["macro_avg"][name] == pytest.approx(sum(values) / len(values)), (case, name)
        weighted = sum(s * v for s, v in zip(support, values)) / len(labels)
        assert m["weighted_avg"][name] == pytest.approx(weighted), (case, name)
    assert m["mean_per_class_accuracy"] == pytest.approx(m["macro_avg"]["recall"])
    hits = sum(y == p for y, p in zip(labels, preds))
    assert m["top1"] == pytest.approx(hits / len(labels))
    cm = [[sum(1 for y, p in zip(labels, preds) if (y, p) == (t, q)) for q in range(num_classes)] for t in range(3)]
    assert m["confusion_matrix"][:3] == cm
    assert sum(c["count"] for c in m["top_confusions"]) == len(labels) - hits
    json.dumps(m, allow_nan=False)


def test_tied_logits_go_to_the_lower_class_everywhere():
    """Every logit equal: argmax, the confusion matrix, top-1 and top-k all pick class 0 first."""
    labels = np.array([0, 1, 1, 2, 3])
    m = compute_metrics(np.zeros((5, 4), np.float32), labels, list("abcd"))
    assert m["confusion_matrix"] == [[1, 0, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]]
    assert m["top1"] == pytest.approx(1 / 5)
    assert m["top3"] == pytest.approx(4 / 5)  # classes 0, 1, 2 are the top 3; class 3 is not
    a = m["per_class"][0]
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((1 / 5, 1.0, 2 / 6))
    assert m["macro_avg"]["f1"] == pytest.approx((1 / 3) / 4)
    assert m["weighted_avg"]["f1"] == pytest.approx((1 / 3) / 5)
    # confidence 1/4 on every sample, one in five right
    assert m["ece"] == pytest.approx(abs(1 / 5 - 1 / 4))


# -- calibration figures ------------------------------------------------------------------------------


def _ece_reference(confidence: list[float], correct: list[bool], n_bins: int) -> tuple[list[int], float]:
    """Guo et al. (2017): bins (k / n, (k + 1) / n], the first also holding 0; the ECE is the sum over bins of the
    bin's share of the samples times |its accuracy - its mean confidence|."""
    counts, ece = [], 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        inside = [i for i, x in enumerate(confidence) if (lo < x or k == 0) and x <= hi]
        counts.append(len(inside))
        if inside:
            accuracy = sum(correct[i] for i in inside) / len(inside)
            mean = math.fsum(confidence[i] for i in inside) / len(inside)
            ece += len(inside) / len(confidence) * abs(accuracy - mean)
    return counts, ece


def _probs(confidence: list[float], preds: list[int], num_classes: int) -> np.ndarray:
    probs = np.tile(((1 - np.asarray(confidence)) / (num_classes - 1))[:, None], (1, num_classes))
    probs[np.arange(len(preds)), preds] = confidence
    return probs


def test_ece_and_reliability_bins_follow_the_definition_at_and_between_the_edges():
    rng = np.random.default_rng(4)
    edges = np.array([0.5, 2 / 3, 0.8, 1.0, 1.0, 0.6])  # confidences exactly on a bin's upper edge
    confidence = np.concatenate([edges, rng.uniform(0.34, 1.0, 300)])
    # three classes: the top-1 confidence, and the rest split evenly (never above it)
    probs = np.column_stack([confidence, (1 - confidence) / 2, (1 - confidence) / 2])
    labels = rng.integers(0, 3, len(confidence))
    bins = reliability_bins(probs, labels)
    assert sum(bins["count"]) == len(confidence)
    assert bins["count"][-1] >= 2  # both 1.0's in the last bin, (14/15, 1]
    assert expected_calibration_error(probs, labels) == pytest.approx(
        _ece_reference(confidence.tolist(), (labels == 0).tolist(), 15)[1]
    )
    for lo, hi, mean in zip(bins["edges"], bins["edges"][1:], bins["confidence"]):
        assert mean is None or lo < mean <= hi + 1e-12


def test_softmax_nll_and_brier_of_large_float32_logits():
    logits = np.array([[3e4, 0.0, -3e4], [88.0, 89.0, 90.0], [1e-3, 0.0, 2e-3]], dtype=np.float32)
    labels = np.array([2, 0, 1])
    rows = logits.astype(np.float64)
    expected = [math.log(math.fsum(math.exp(v - r.max()) for v in r)) + r.max() - r[y] for r, y in zip(rows, labels)]
    assert negative_log_likelihood(logits, labels) == pytest.approx(np.mean(expected), rel=1e-12)
    probs = softmax(logits)
    assert np.isfinite(probs).all() and probs.sum(axis=1) == pytest.approx(1.0)
    onehot = np.eye(3)[labels]
    assert brier_score(probs, labels) == pytest.approx(float(((probs - onehot) ** 2).sum(axis=1).mean()))


def test_the_fitted_temperature_is_the_nll_minimum_scipy_finds():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, 2000)
    logits = (4 * rng.normal(size=(2000, 10))).astype(np.float32)
    logits[np.arange(2000), labels] += 6  # over-confident: the minimum is above 1

    def nll(log_t: float) -> float:
        return negative_log_likelihood(logits.astype(np.float64) / math.exp(log_t), labels)

    reference = optimize.minimize(lambda x: nll(x[0]), [0.0], method="Nelder-Mead", options={"xatol": 1e-9})
    fitted = fit_temperature(logits, labels, warn=False)
    assert fitted == pytest.approx(math.exp(reference.x[0]), rel=1e-4)
    assert fitted > 1
    assert nll(math.log(fitted)) <= reference.fun + 1e-12


@pytest.mark.parametrize("n_bins", [15, 10, 1])
def test_ece_from_the_bins_written_out(n_bins):
    rng = np.random.default_rng(11)
    confidence = [0.5, 0.5, 0.6, 0.7, 1.0, 1.0, 0.9, 0.3] + rng.uniform(0.25, 1.0, 60).tolist()
    preds = rng.integers(0, 4, len(confidence)).tolist()
    correct = (rng.random(len(confidence)) < 0.7).tolist()
    labels = np.where(correct, preds, (np.array(preds) + 1) % 4)
    counts, expected = _ece_reference(confidence, correct, n_bins)
    probs = _probs(confidence, preds, 4)
    assert reliability_bins(probs, labels, n_bins)["count"] == counts
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(expected, abs=1e-12)


def test_ece_where_every_sample_is_right_or_wrong():
    labels = np.array([0, 1, 2, 0])
    sure = _probs([1.0] * 4, [0, 1, 2, 0], 3)
    assert expected_calibration_error(sure, labels) == 0.0
    wrong = _probs([0.8, 0.8, 0.6, 0.6], [1, 2, 0, 1], 3)  # 0.8 and 0.6 lie in different bins of 15
    assert expected_calibration_error(wrong, labels) == pytest.approx(0.7)
    bins = reliability_bins(wrong, labels)
    assert sum(bins["count"]) == 4 and [a for a in bins["accuracy"] if a is not None] == [0.0, 0.0]


def test_calibration_metrics_from_their_definitions():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 1.0], [0.0, 0.0, 4.0]])
    labels = np.array([0, 1, 1, 0])
    for t in (1.0, 0.5, 2.5):
        z = logits / t
        p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
        nll = -np.mean(np.log(p[np.arange(4), labels]))
        brier = np.mean([sum((p[i, k] - (k == labels[i])) ** 2 for k in range(3)) for i in range(4)])
        # the tie on the second sample goes to class 0: wrong
        correct = [True, False, True, False]
        _, ece = _ece_reference(p.max(1).tolist(), correct, 15)
        m = calibration_metrics(logits, labels, t)
        assert m["nll"] == pytest.approx(nll, rel=1e-12) and m["brier"] == pytest.approx(brier, rel=1e-12)
        assert m["ece"] == pytest.approx(ece, abs=1e-12) and m["accuracy"] == 0.5
        assert m["mean_confidence"] == pytest.approx(p.max(1).mean(), rel=1e-12)


def test_the_fitted_temperature_zeroes_the_likelihoods_derivative():
    """At the NLL's minimum over b = 1 / T its derivative, the mean over samples of E_p[z] - z_label, is 0."""
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 5, 400)
    logits = 3 * rng.normal(size=(400, 5))
    logits[np.arange(400), labels] += 3
    t = fit_temperature(logits, labels, warn=False)
    z = logits / t
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    gradient = np.mean((p * logits).sum(1) - logits[np.arange(400), labels])
    assert abs(gradient) < 1e-4 * np.abs(logits).mean()


# -- compare and the ensemble estimate ----------------------------------------------------------------


def _report(folder: Path, logits: np.ndarray, labels: np.ndarray, classes: list[str]) -> str:
    folder.mkdir()
    save_predictions(folder / "predictions.npz", logits.astype(np.float32), labels, classes, "same", "same-by-name")
    metrics = {"tta": "none", "source": {"kind": "checkpoint", "path": str(folder)}, "data": {"dataset": "t"}}
    (folder / METRICS_FILE).write_text(json.dumps(metrics))
    return str(folder)


def test_compare_pairs_b_minus_a_and_says_the_method_it_used(tmp_path):
    # A right on samples 0-5 and 12, B on 4-11: b = 5 (only A), c = 6 (only B), 2 both right, 1 both wrong
    labels = np.zeros(14, dtype=np.int64)
    correct_a = np.array([True] * 6 + [False] * 6 + [True, False])
    correct_b = np.array([False] * 4 + [True] * 8 + [False, False])
    b, c, both_right = 5, 6, 2
    assert (b, c) == (int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum()))
    a = _report(tmp_path / "a", _onehot_logits([0 if r else 1 for r in correct_a], 2), labels, ["x", "y"])
    bb = _report(tmp_path / "b", _onehot_logits([0 if r else 1 for r in correct_b], 2), labels, ["x", "y"])
    result = compare(a, bb)
    assert result["difference_points"] == pytest.approx(100 * (c - b) / 14)
    low, high = _agresti_min(b, c, 14, Z95)
    assert result["difference_interval_points"] == [pytest.approx(100 * low), pytest.approx(100 * high)]
    _, statistic, p = _mcnemar_reference(b, c)
    assert (result["mcnemar"]["a_right_b_wrong"], result["mcnemar"]["a_wrong_b_right"]) == (b, c)
    assert result["mcnemar"]["both_right"] == both_right
    assert result["mcnemar"]["p_value"] == pytest.approx(p, rel=1e-12)
    text = format_comparison(result)
    assert "95% interval" in text and "McNemar (exact binomial)" in text, text
    assert "(paired, Agresti-Min adjusted Wald;" in text, text  # the interval checked above by its definition
    assert f"p = {p:.4g}" in text and "not significant at alpha = 0.05" in text, text


def test_the_ensemble_estimate_is_the_mean_of_the_members_probabilities(tmp_path):
    """Three members over three classes; the estimate against an independent mean of each member's softmax, and
    its best member, difference, interval and McNemar against their definitions."""
    rng = np.random.default_rng(13)
    labels = rng.integers(0, 3, 40)
    members = [rng.normal(size=(40, 3)) * s + 1.5 * np.eye(3)[labels] for s in (1.0, 2.0, 3.0)]
    members = [m.astype(np.float32).astype(np.float64) for m in members]
    paths = [_report(tmp_path / f"m{i}", m, labels, ["x", "y", "z"]) for i, m in enumerate(members)]
    for i, path in enumerate(paths):  # three different models, by name
        metrics = json.loads((Path(path) / METRICS_FILE).read_text())
        (Path(path) / METRICS_FILE).write_text(
            json.dumps({**metrics, "source": {"kind": "checkpoint", "path": f"/m{i}"}})
        )
    probabilities = [np.exp(m) / np.exp(m).sum(1, keepdims=True) for m in members]
    mean = sum(probabilities) / 3
    correct = mean.argmax(1) == labels
    tops = [float((p.argmax(1) == labels).mean()) for p in probabilities]
    best = tops.index(max(tops))
    best_correct = probabilities[best].argmax(1) == labels
    result = estimate_from_reports(paths)
    assert [m["top1"] for m in result["members"]] == pytest.approx(tops)
    assert result["top1"] == pytest.approx(correct.mean())
    vs = result["against_best_member"]
    assert vs["member"] == paths[best]
    assert vs["difference"] == pytest.approx(correct.mean() - best_correct.mean())
    b, c = int((best_correct & ~correct).sum()), int((~best_correct & correct).sum())
    assert vs["interval_95"] == pytest.approx(list(_agresti_min(b, c, 40, Z95)), abs=1e-12)
    assert vs["mcnemar"]["p_value"] == pytest.approx(_mcnemar_reference(b, c)[2], rel=1e-12)
    # the printed estimate names both methods: the interval above is Agresti-Min's, the test McNemar's exact one
    said = _format_estimate(result).splitlines()[-1]
    assert "paired 95% interval" in said and "Agresti-Min adjusted Wald; McNemar p = " in said, said
    assert said.endswith(f", {vs['mcnemar']['method']})") and vs["mcnemar"]["method"] == "exact binomial", said


def test_the_joined_network_answers_the_log_of_its_members_mean_probability():
    torch.manual_seed(0)
    members = [nn.Linear(4, 3) for _ in range(3)]
    x = torch.randn(6, 4)
    with torch.no_grad():
        out = Ensemble(members)(x).double().numpy()
        logits = [m(x).double().numpy() for m in members]
    mean = sum(np.exp(z) / np.exp(z).sum(1, keepdims=True) for z in logits) / 3
    np.testing.assert_allclose(np.exp(out), mean, rtol=1e-5)
    mean_logit = sum(logits) / 3  # what the ensemble is not
    assert not np.allclose(np.exp(out), np.exp(mean_logit) / np.exp(mean_logit).sum(1, keepdims=True), rtol=1e-3)


def _saved_report(folder, logits: np.ndarray, labels: np.ndarray, source: dict) -> str:
    folder.mkdir()
    save_predictions(folder / "predictions.npz", logits.astype(np.float32), labels, ["a", "b", "c"], "same")
    (folder / METRICS_FILE).write_text(json.dumps({"tta": "none", "source": source}))
    return str(folder)


def test_the_ensemble_estimate_averages_probabilities_of_the_logits_before_a_graphs_temperature(tmp_path):
    """As the joined network does (the log of the members' mean softmax). On the first sample A is sure of class 0
    and B leans to class 1: the mean probability says 0, the mean logit 1. B's report is of a graph that divides
    by T = 0.5, so its saved logits are twice what its network computes: on the second sample those would outvote
    A, the network's own do not."""
    labels = np.array([0, 0])
    raw_a = np.array([[10.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    raw_b = np.array([[-10.0, 1.0, 0.0], [0.0, 0.9, 0.0]])
    a = _saved_report(tmp_path / "a", raw_a, labels, {"kind": "checkpoint"})
    onnx = {"kind": "onnx", "calibration": {"method": "temperature", "temperature": 0.5}}
    b = _saved_report(tmp_path / "b", raw_b / 0.5, labels, onnx)
    mean_probability = (softmax(raw_a) + softmax(raw_b)) / 2
    assert mean_probability.argmax(1).tolist() == [0, 0]
    assert ((raw_a + raw_b) / 2).argmax(1).tolist() == [1, 0]  # the mean logit
    assert ((softmax(raw_a) + softmax(raw_b / 0.5)) / 2).argmax(1).tolist() == [0, 1]  # the graph's output
    result = estimate_from_reports([a, b])
    assert result["top1"] == 1.0
    assert [m["top1"] for m in result["members"]] == [1.0, 0.0]
