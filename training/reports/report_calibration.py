"""A report's calibration section: the temperature it measures (the one a calibrated ONNX graph records, else one
fitted on the model's validation split) and calibration before and after dividing the logits by it.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from inference.messages import counted

from ..data import DatasetError, ImageArrays
from .calibration import (
    TEMPERATURE_BOUNDS,
    calibration_report,
    fit_temperature,
    meaningless_fit,
    no_spread,
    undo_temperature,
)
from .metrics import reliability_bins, softmax
from .samples import DataSpec, match_classes
from .sources import ModelSource, check_finite


def temperature_for(
    source: ModelSource, spec: DataSpec, data: ImageArrays, logits: np.ndarray, tta: str, batch_size: int
) -> tuple[np.ndarray, float, str] | None:
    """(logits without temperature, T, where T comes from) for the before/after calibration section.

    An ONNX model that divides by a temperature inside its graph has it recorded in its card; for
    anything else T is fitted on the validation split (never on training images), predicted again
    when the report is of another split. None when there is no validation split to fit on.
    """
    calibration = source.info.get("calibration") or {}
    if source.kind == "onnx" and calibration.get("method") == "temperature":
        t = float(calibration["temperature"])
        if spec.split == "val" and its_own_split(source, spec):
            fitted = (
                "recorded in the model (fitted at export on these validation images, so the after row is in-sample; "
                "divided inside its graph)"
            )
        elif spec.split == "val":  # another dataset's, or another share of the same one
            fitted = (
                "recorded in the model (fitted at export on its own validation split, not these images; divided "
                "inside its graph)"
            )
        else:
            fitted = "recorded in the model (fitted at export on the validation split, divided inside its graph)"
        return undo_temperature(logits, t), t, fitted  # as export verify and the card undo it
    if spec.split == "val":
        fit_logits, fit_labels = logits, data.labels
    else:
        try:
            val = replace(spec, split="val").load() if spec.val_size else None
        except DatasetError:  # data of the user's own, too small for the model's held-out size
            val = None
        if val is None or len(val) == 0:
            return None
        val, _ = match_classes(source, val, spec)  # labels in the model's order, as the scored data's
        fit_logits, _ = source.predict(val, tta, batch_size)
        check_finite(source, fit_logits, "validation images, which the temperature is fitted on")
        fit_labels = val.labels
    where = (
        "these validation images, so the after row is in-sample, as at export"
        if spec.split == "val"
        else f"the validation split ({counted(len(fit_labels), 'image')}"
        + (", which are among the images scored here: in-sample for those)" if spec.split == "all" else ")")
    )
    t = fit_temperature(fit_logits, fit_labels)
    return logits, t, f"fitted here on {where}{fit_caveat(fit_logits, fit_labels, t)}"


def fit_caveat(logits: np.ndarray, labels: np.ndarray, temperature: float) -> str:
    """Why a temperature fitted on these samples means little, by which way the fit ran off; "" where it means
    something (``meaningless_fit``)."""
    runoff = fit_runoff(logits, labels, temperature)
    if not runoff:
        return ""
    if runoff == COLLAPSED:
        return (
            ", where it means nothing: the model gives every class the same logit on each of those images (a "
            "collapsed network), so no temperature changes its probabilities; T = 1 is kept"
        )
    then = (
        "gives every class about the same probability" if runoff == NEAR_CHANCE else "says nothing about other images"
    )
    return f", where it means little: {runoff_reason(runoff, 'those images')}, so the temperature-scaled row {then}"


# The ways a temperature fit runs off (``fit_runoff``), each with its own cause and so its own way out.
COLLAPSED, ALL_RIGHT, NEAR_CHANCE, AT_BOTTOM = "collapsed", "all right", "near chance", "at bottom"


def fit_runoff(logits: np.ndarray, labels: np.ndarray, temperature: float) -> str:
    """Which way a temperature fitted on these samples ran off where it means little (``meaningless_fit``): their
    logits have no spread (COLLAPSED); every sample is right (ALL_RIGHT); T was pushed to the top of its range, as
    flattening every sample's probabilities to equal ones was still improving the likelihood (NEAR_CHANCE); or to
    the bottom, nearly every sample right (AT_BOTTOM). "" where it means something."""
    if not meaningless_fit(logits, labels, temperature):
        return ""
    if no_spread(logits):
        return COLLAPSED
    if (np.asarray(logits).argmax(1) == np.asarray(labels)).all():
        return ALL_RIGHT
    bottom, top = TEMPERATURE_BOUNDS
    return NEAR_CHANCE if abs(np.log(temperature / top)) < abs(np.log(temperature / bottom)) else AT_BOTTOM


def runoff_reason(runoff: str, images: str, one: bool = False) -> str:
    """Why a fit that ran off ``runoff`` (ALL_RIGHT, NEAR_CHANCE or AT_BOTTOM) means little, said of ``images``
    (``one``: a single image, for the verb): the same words in a report's calibration section and on a card."""
    bottom, top = TEMPERATURE_BOUNDS
    if runoff == NEAR_CHANCE:
        return (
            f"T was pushed to the top of its range ({top:g}), as the logits of {images} are no better than a uniform "
            "guess (a model near chance)"
        )
    carry = "carries" if one else "carry"
    if runoff == ALL_RIGHT:
        return f"{images} {carry} no calibration signal (every image right, so the fit only sharpens the logits)"
    return (
        f"{images} {carry} no calibration signal (T was pushed to the bottom of its range, {bottom:g}: nearly every "
        "image right, so the fit only sharpens the logits)"
    )


def calibration_section(raw_logits: np.ndarray, labels: np.ndarray, temperature: float, origin: str) -> dict[str, Any]:
    """metrics.json's ``calibration``: before/after numbers and the reliability bins of both."""
    report = calibration_report(raw_logits, labels, temperature)
    report["temperature_origin"] = origin
    z = raw_logits.astype(np.float64)
    report["reliability"] = {
        "before": reliability_bins(softmax(z), labels),
        "after": reliability_bins(softmax(z / temperature), labels),
    }
    return report


def its_own_split(source: ModelSource, spec: DataSpec) -> bool:
    """Whether ``spec``'s validation split is the one the model records as its own (where export fitted T)."""
    own = source.data_defaults or {}
    if own.get("root") is not None and os.path.realpath(str(own["root"])) != os.path.realpath(spec.root):
        return False
    return all(own.get(key) is None or str(own[key]) == str(getattr(spec, key)) for key in _SPLIT_KEYS)


_SPLIT_KEYS = ("dataset", "val_size", "split_seed")
