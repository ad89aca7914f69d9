"""Temperature scaling: one T > 0 fitted on held-out logits, and calibration measured before and after.

Dividing the logits by T changes no prediction (argmax), only how sure the model says it is. T is
fitted by minimising the negative log-likelihood on the validation split, never the training split,
whose logits the model was fitted to. numpy only, so a checkpoint's logits and an ONNX model's are
measured by the same code.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from inference.messages import counted

from .metrics import brier_score, expected_calibration_error, negative_log_likelihood, softmax

log = logging.getLogger("training.reports")

# The search range for T. Trained classifiers need about 0.3-3; a fit that ends at a bound means the
# logits say nothing about their own reliability: at the bottom, a toy model that gets every sample right by a
# wide margin (its likelihood keeps improving as T goes to 0); at the top, one no better than a uniform guess
# (flattening every probability keeps improving it).
TEMPERATURE_BOUNDS = (0.01, 100.0)


def meaningless_fit(logits: np.ndarray, labels: np.ndarray, temperature: float) -> bool:
    """Whether a T fitted on these samples means nothing: where every sample is right the NLL only falls as
    T shrinks (the search stops wherever it flattens to zero), and a T at (within 10% of) an end of the
    search range was still being pushed there (``TEMPERATURE_BOUNDS`` says by what); where the logits have no
    spread (``no_spread``) any T fits as well as any other."""
    near_bound = any(abs(np.log(temperature / bound)) < 0.1 for bound in TEMPERATURE_BOUNDS)
    return near_bound or no_spread(logits) or bool((np.asarray(logits).argmax(1) == np.asarray(labels)).all())


def no_spread(logits: np.ndarray) -> bool:
    """Whether every sample's logits are equal across classes (a collapsed network): their softmax is uniform
    whatever T divides them, so the likelihood is flat in T and no temperature is measurable."""
    z = np.asarray(logits, dtype=np.float64)
    return bool(len(z)) and not np.ptp(z, axis=1).any()


def fit_temperature(logits: np.ndarray, labels: np.ndarray, warn: bool = True) -> float:
    """The T that minimises the mean NLL of softmax(logits / T) over these samples, with a warning where it means
    little (``meaningless_fit``) unless ``warn`` is False: a caller that says so itself, or a refit beside one.

    The NLL is convex in 1/T, hence unimodal in log T, so a bounded scalar search finds the optimum.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if len(z) == 0:
        raise ValueError("no samples to fit a temperature on")
    if no_spread(z):
        # the search would stop anywhere on the flat likelihood (11.5 for logits of 3): 1 changes nothing
        temperature = 1.0
        if warn:
            log.warning(
                "no temperature is measurable on the %s: the model gives every class the same logit on "
                "each of them, so T = 1",
                counted(len(z), "sample"),
            )
        return temperature
    lo, hi = np.log(TEMPERATURE_BOUNDS)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(z / np.exp(log_t), labels),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    temperature = float(np.exp(result.x))
    if warn and meaningless_fit(z, labels, temperature):
        log.warning(
            "the fitted temperature %.4g (search range %s) means little: the logits of the %s carry "
            "little calibration signal",
            temperature,
            TEMPERATURE_BOUNDS,
            counted(len(z), "sample"),
        )
    return temperature


def calibration_metrics(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> dict[str, float]:
    """ECE (15 equal-width bins), NLL, Brier score, mean top-1 confidence and top-1 accuracy of
    softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    labels = np.asarray(labels, dtype=np.int64)
    probs = softmax(z)
    return {
        "ece": expected_calibration_error(probs, labels),
        "nll": negative_log_likelihood(z, labels),
        "brier": brier_score(probs, labels),
        "mean_confidence": float(probs.max(axis=1).mean()),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
    }


def undo_temperature(graph_output: np.ndarray, temperature: float) -> np.ndarray:
    """A calibrated graph's logits before its division by ``temperature``, in float64 (float32 outputs times T in
    float32 would round once more, and two reports of one graph would differ)."""
    return np.asarray(graph_output, dtype=np.float64) * float(temperature)


def calibration_report(
    raw_logits: np.ndarray, labels: np.ndarray, temperature: float, refit: bool = False
) -> dict[str, Any]:
    """Calibration of ``raw_logits`` (undivided) before and after dividing by ``temperature``.

    With ``refit``, also after dividing by the temperature fitted on these very logits: for a model
    that shares a temperature fitted elsewhere (an FP16 or INT8 variant given the FP32 model's T),
    how much a temperature of its own would gain.
    """
    report: dict[str, Any] = {
        "samples": int(len(labels)),
        "temperature": float(temperature),
        "before": calibration_metrics(raw_logits, labels),
        "after": calibration_metrics(raw_logits, labels, temperature),
    }
    if refit:
        own = fit_temperature(raw_logits, labels, warn=False)  # the temperature's own fit has warned
        report["refit"] = {"temperature": own, **calibration_metrics(raw_logits, labels, own)}
    return report
