"""Temperature scaling inside the exported graph: fit T on the validation split, divide the logits by it.

The division is the graph's last step, after any test-time averaging, so every client (the service,
the scorer, ONNX Runtime called directly) gets calibrated probabilities without doing anything.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from inference.manifest import CALIBRATION_METHODS, Calibration
from inference.messages import counted
from training.reports.calibration import fit_temperature, meaningless_fit, no_spread

log = logging.getLogger("export")


class TemperatureScaled(nn.Module):
    """A model whose logits are divided by a fixed temperature: what the exported graph computes,
    and so what parity compares it with."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"the temperature must be positive, got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) / self.temperature


def with_calibration(model: nn.Module, calibration: Calibration) -> nn.Module:
    """``model`` with the card's calibration applied; method "none" returns ``model`` itself, so its graph is
    exactly the uncalibrated one."""
    if calibration.method == "temperature":
        return TemperatureScaled(model, calibration.temperature)
    return model


def fit_calibration(
    logits: np.ndarray, labels: np.ndarray, method: str, what: str, kind: str = "FP32 PyTorch logits"
) -> Calibration:
    """Fit ``method`` on the FP32 logits (float64) of the model wrapped for test-time augmentation, over the
    validation split: PyTorch's, or an FP32 graph's where the checkpoint is gone (``kind`` says which). Every
    precision exported from one checkpoint gets the same T this way (see ``calibration_report(..., refit=True)``
    for what a variant's own T would change). ``what`` says which model, for the card."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    if method == "none":
        return Calibration()
    # Stored as the float32 the FP32 graph holds, so the card states exactly what that graph divides by.
    temperature = float(np.float32(fit_temperature(logits, labels, warn=False)))  # warned of below, with the way out
    # no thousands separator: the shipped cards say "(5000 images)", and a card re-derived should say it alike
    fitted_on = f"NLL on the validation split ({counted(len(labels), 'image', separator='')}), {kind} of {what}"
    if no_spread(logits):
        # A collapsed network: no T changes its uniform probabilities, so "every image right" would be untrue.
        fitted_on += ", where it means nothing: the model gives every class the same logit on each image, so T = 1"
        log.warning(
            "no temperature is measurable: the model gives every class the same logit on each of its %s (a "
            "collapsed network: check its training), so T = 1 is written",
            counted(len(labels), "validation image"),
        )
    elif meaningless_fit(logits, labels, temperature):
        fitted_on += fit_means_little(logits, labels, temperature)
    return Calibration(method="temperature", temperature=temperature, fitted_on=fitted_on)


def fit_means_little(logits: np.ndarray, labels: np.ndarray, temperature: float) -> str:
    """The card's caveat to a temperature that is no measurement (``meaningless_fit``), after a warning with the
    way out: each way the fit runs off has its own cause, so its own way out. A small split of easy classes (a
    folder of one's own) gets every image right, and the NLL only falls as T shrinks; a model near chance is best
    fitted by flattening its logits, and T goes to the top of the range."""
    # the report's module brings its plotting along: loaded only where a fit means little
    from training.reports.report_calibration import NEAR_CHANCE, fit_runoff, runoff_reason

    runoff = fit_runoff(logits, labels, temperature)
    one = len(labels) == 1
    if runoff == NEAR_CHANCE:
        way_out = "a model trained past chance (check its training) fits a real T"
        then = "the graph gives every class about the same probability"
    else:
        way_out = "a validation split with more mistakes in it (a larger data.val_size at training) fits a real T"
        then = "the confidences are not calibrated"
    said = runoff_reason(runoff, f"its {counted(len(labels), 'validation image')}", one)
    log.warning(
        "temperature %.4g written into the graph means little: %s; --calibrate none leaves the confidences as "
        "trained, and %s",
        temperature,
        said,
        way_out,
    )
    validation = "the validation image" if one else "the validation images"
    return f", where it means little: {runoff_reason(runoff, validation, one)}, so {then}"


def calibration_summary(report: dict) -> str:
    """One line per state (before, after, refit) of a ``training.reports.calibration.calibration_report``."""
    rows = [("before", 1.0, report["before"]), ("after", report["temperature"], report["after"])]
    if "refit" in report:
        rows.append(("refit on this model's own logits", report["refit"]["temperature"], report["refit"]))
    lines = [f"calibration on {counted(report['samples'], 'validation image')} (ECE with 15 bins):"]
    for name, t, m in rows:
        lines.append(
            f"  {name:<33} T={t:<7.4f} ECE {m['ece']:.4f}  NLL {m['nll']:.4f}  Brier {m['brier']:.4f}  "
            f"mean confidence {100 * m['mean_confidence']:.2f}%  accuracy {100 * m['accuracy']:.2f}%"
        )
    return "\n".join(lines)
