"""The reports' statistics against independent references: textbook formulas written out here, scikit-learn and
scipy's own routines, and simulation where a method promises a coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize, stats

from training.reports.calibration import fit_temperature
from training.reports.metrics import (
    brier_score,
    compute_metrics,
    expected_calibration_error,
    mcnemar,
    negative_log_likelihood,
    paired_difference_interval,
    reliability_bins,
    softmax,
)


def _pairs(b: int, c: int, both_right: int, both_wrong: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of A and B: b samples only A gets right, c only B, and the rest both or neither."""
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


@pytest.mark.parametrize("b, c, both_right, both_wrong", [(30, 10, 50, 7), (136, 188, 4300, 376), (0, 5, 40, 5)])
def test_the_paired_interval_is_agresti_and_mins_adjusted_wald(b, c, both_right, both_wrong):
    """Half a sample added to each of the four cells, then the Wald interval of the paired difference."""
    n = b + c + both_right + both_wrong
    p_b, p_c = (b + 0.5) / (n + 2), (c + 0.5) / (n + 2)
    half = stats.norm.ppf(0.975) * math.sqrt((p_b + p_c - (p_c - p_b) ** 2) / (n + 2))
    low, high = paired_difference_interval(*_pairs(b, c, both_right, both_wrong))
    assert low == pytest.approx(max(p_c - p_b - half, -1.0), abs=1e-12)
    assert high == pytest.approx(min(p_c - p_b + half, 1.0), abs=1e-12)
    assert low <= (c - b) / n <= high  # the observed difference stays inside


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0, -0.5, float("nan")])
def test_the_paired_interval_refuses_a_confidence_outside_0_and_1(confidence):
    with pytest.raises(ValueError, match="not between 0 and 1"):
        paired_difference_interval(*_pairs(3, 5, 10, 2), confidence)


# -- McNemar -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("b, c", [(2, 9), (12, 12), (24, 0), (20, 5), (100, 140), (13, 12)])
def test_mcnemar_agrees_with_scipys_binomial_test_and_chi_square(b, c):
    result = mcnemar(*_pairs(b, c, 30, 4))
    if b + c < 25:
        assert result["p_value"] == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)
    else:
        corrected = max(abs(b - c) - 1, 0) ** 2 / (b + c)
        assert result["p_value"] == pytest.approx(stats.chi2.sf(corrected, df=1), rel=1e-12)


# -- per-class figures --------------------------------------------------------------------------------


def _by_hand(labels: np.ndarray, preds: np.ndarray, c: int) -> tuple[float, float | None, float | None]:
    """Precision, recall and F1 of class ``c`` from their definitions (recall and F1 None without support)."""
    tp = int(((preds == c) & (labels == c)).sum())
    predicted, support = int((preds == c).sum()), int((labels == c).sum())
    precision = tp / predicted if predicted else 0.0
    if not support:
        return precision, None, None
    recall = tp / support
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


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
    rows = [_by_hand(labels, preds, c) for c in range(5)]
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


# -- calibration figures ------------------------------------------------------------------------------


def _ece_by_hand(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """Equal-width bins closed on the right, (i / n, (i + 1) / n], the first one also holding 0."""
    total = 0.0
    for i in range(n_bins):
        lo, hi = i / n_bins, (i + 1) / n_bins
        inside = (confidence > lo) & (confidence <= hi) if i else (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return total


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
    assert expected_calibration_error(probs, labels) == pytest.approx(_ece_by_hand(confidence, labels == 0, 15))
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


# -- ensemble estimate --------------------------------------------------------------------------------


def _saved_report(folder, logits: np.ndarray, labels: np.ndarray, source: dict) -> str:
    import json

    from training.reports.predictions import METRICS_FILE, save_predictions

    folder.mkdir()
    save_predictions(folder / "predictions.npz", logits.astype(np.float32), labels, ["a", "b", "c"], "same")
    (folder / METRICS_FILE).write_text(json.dumps({"tta": "none", "source": source}))
    return str(folder)


def test_the_ensemble_estimate_averages_probabilities_of_the_logits_before_a_graphs_temperature(tmp_path):
    """As the joined network does (the log of the members' mean softmax). On the first sample A is sure of class 0
    and B leans to class 1: the mean probability says 0, the mean logit 1. B's report is of a graph that divides
    by T = 0.5, so its saved logits are twice what its network computes: on the second sample those would outvote
    A, the network's own do not."""
    from training.ensemble import estimate_from_reports

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
