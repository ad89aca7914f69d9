"""Classification metrics over logits and labels, and McNemar's test and a confidence interval for paired
predictions.

They take numpy arrays only, so a checkpoint and an ONNX model get the same numbers.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy import stats
from scipy.special import logsumexp
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from ..inference import cross_entropy, topk_accuracy

# Below this many discordant pairs the chi-square approximation is poor; the exact binomial test is used instead.
MCNEMAR_EXACT_BELOW = 25


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> dict[str, list]:
    """Top-1 confidence in ``n_bins`` equal-width bins: per bin the sample count, accuracy and mean confidence
    (None for an empty bin). ECE and the reliability diagram both read these."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    # Right-closed bins (lo, hi]: a confidence of exactly 1/C for C classes still lands in a bin.
    bins = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    counts, accuracy, mean_confidence = [], [], []
    for b in range(n_bins):
        mask = bins == b
        counts.append(int(mask.sum()))
        accuracy.append(float(correct[mask].mean()) if mask.any() else None)
        mean_confidence.append(float(confidence[mask].mean()) if mask.any() else None)
    return {
        "edges": np.linspace(0, 1, n_bins + 1).tolist(),
        "count": counts,
        "accuracy": accuracy,
        "confidence": mean_confidence,
    }


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - mean confidence| x bin share."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(bins["count"])
    if not total:
        return 0.0
    return float(
        sum(
            n / total * abs(acc - conf)
            for n, acc, conf in zip(bins["count"], bins["accuracy"], bins["confidence"])
            if n
        )
    )


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log softmax(logits)[label], in float64 from the logits (no probability underflows to 0)."""
    z = logits.astype(np.float64)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(z)), labels]))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean over samples of the squared distance between the probabilities and the one-hot label
    (summed over classes, so it ranges from 0 to 2)."""
    onehot = np.zeros_like(probs, dtype=np.float64)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def top_confusions(cm: np.ndarray, classes: Sequence[str], k: int = 10) -> list[dict[str, Any]]:
    """The k most frequent (true, predicted) pairs off the diagonal, most frequent first."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    flat = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = []
    for idx in flat:
        t, p = np.unravel_index(idx, off.shape)
        if off[t, p] == 0:
            break
        row = cm[t].sum()
        pairs.append(
            {
                "true": classes[t],
                "predicted": classes[p],
                "count": int(off[t, p]),
                "share_of_true_class": float(off[t, p] / row) if row else 0.0,
            }
        )
    return pairs


def compute_metrics(logits: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Everything metrics.json reports about one set of predictions.

    Classes absent from ``labels`` get ``accuracy``, ``recall`` and ``f1`` null (no sample to recall: undefined,
    not 0) and are left out of the macro and weighted averages; their precision is 0 (every prediction of one is
    wrong). A class that is never predicted has precision 0 (scikit-learn's ``zero_division=0``), so it pulls the
    macro precision down rather than out. No figure is NaN.
    """
    classes = list(classes)
    num_classes = len(classes)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"logits have shape {logits.shape}, expected [N, {num_classes}]")
    labels = np.asarray(labels, dtype=np.int64)
    probs = softmax(logits)
    preds = logits.argmax(axis=1)
    all_labels = np.arange(num_classes)
    cm = confusion_matrix(labels, preds, labels=all_labels)
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=all_labels, zero_division=0)
    present = all_labels[support > 0]
    averages = {}
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(labels, preds, labels=present, average=average, zero_division=0)
        averages[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    per_class = [
        {
            "class": name,
            "accuracy": float(recall[c]) if support[c] else None,
            "precision": float(precision[c]),
            "recall": float(recall[c]) if support[c] else None,
            "f1": float(f1[c]) if support[c] else None,
            "support": int(support[c]),
            "predicted": int(cm[:, c].sum()),
        }
        for c, name in enumerate(classes)
    ]
    return {
        "num_samples": int(len(labels)),
        "num_classes": num_classes,
        "loss": cross_entropy(logits, labels),
        "top1": topk_accuracy(logits, labels, 1),
        # None where every label is among a model's top k (k classes or fewer): 100% would mean nothing
        "top3": topk_accuracy(logits, labels, 3) if num_classes > 3 else None,
        "top5": topk_accuracy(logits, labels, 5) if num_classes > 5 else None,
        "mean_per_class_accuracy": float(recall[present].mean()) if len(present) else 0.0,
        "ece": expected_calibration_error(probs, labels),
        "macro_avg": averages["macro"],
        "weighted_avg": averages["weighted"],
        "per_class": per_class,
        "top_confusions": top_confusions(cm, classes, 10),
        "confusion_matrix": cm.tolist(),
    }


def _discordant(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Both correctness vectors as bool arrays, with b = A right and B wrong, c = A wrong and B right."""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError(f"paired predictions differ in length: {correct_a.shape} vs {correct_b.shape}")
    return correct_a, correct_b, int((correct_a & ~correct_b).sum()), int((~correct_a & correct_b).sum())


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray, exact_below: int = MCNEMAR_EXACT_BELOW) -> dict[str, Any]:
    """McNemar's test on paired per-sample correctness.

    Only discordant pairs count: b = A right and B wrong, c = A wrong and B right. With fewer than
    ``exact_below`` of them the two-sided exact binomial test is used, otherwise the chi-square
    statistic with continuity correction, max(|b - c| - 1, 0)^2 / (b + c), on one degree of freedom (the
    correction never pushes the statistic above zero when b = c: equal counts are no evidence, p = 1).
    """
    correct_a, correct_b, b, c = _discordant(correct_a, correct_b)
    n = b + c
    if n == 0:
        method, statistic, p_value = "none (no discordant pairs)", 0.0, 1.0
    elif n < exact_below:
        method, statistic = "exact binomial", float(min(b, c))
        p_value = float(stats.binomtest(min(b, c), n, 0.5, alternative="two-sided").pvalue)
    else:
        method = "chi-square with continuity correction"
        statistic = float(max(abs(b - c) - 1, 0) ** 2 / n)
        p_value = float(stats.chi2.sf(statistic, df=1))
    return {
        "a_right_b_wrong": b,
        "a_wrong_b_right": c,
        "both_right": int((correct_a & correct_b).sum()),
        "both_wrong": int((~correct_a & ~correct_b).sum()),
        "discordant": n,
        "method": method,
        "statistic": statistic,
        "p_value": min(p_value, 1.0),
    }


# How paired_difference_interval is computed, as the reports name it beside its figures.
PAIRED_INTERVAL_METHOD = "Agresti-Min adjusted Wald"


def paired_difference_interval(
    correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95
) -> tuple[float, float]:
    """Confidence interval of accuracy(B) - accuracy(A) on the same samples: Agresti and Min's (2005) adjusted
    Wald interval for paired proportions, the Wald interval after half a sample is added to each of the four cells
    (both right, both wrong, and the two discordant ones).

    The variance comes from the discordant pairs, so for two models that mostly agree it is far narrower than two
    independent binomial errors would suggest. The plain Wald interval has no width where the models agree on
    every sample or disagree all one way (three images that B alone gets right would make it certain of +100
    points), and covers far less than it claims where the discordant pairs are few (80% for a 95% interval where
    one model alone is right on 3% of 100 images, and never the other); the half samples fix both and move an
    interval over 5,000 images by hundredths of a point at most. It states how much the samples alone could move
    the difference; the noise between training runs (seeds) is not in it.
    """
    correct_a, _, b, c = _discordant(correct_a, correct_b)
    n = correct_a.size
    if n == 0:
        raise ValueError("no paired predictions")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence} is not between 0 and 1")
    m = n + 2
    difference = (c - b) / m
    standard_error = float(np.sqrt(((b + c + 1) / m - difference**2) / m))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    # a difference of two accuracies lies in [-1, 1]; the normal approximation does not know that
    return max(difference - z * standard_error, -1.0), min(difference + z * standard_error, 1.0)
