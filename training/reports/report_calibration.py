"""A report's calibration section: the temperature it measures (the one a calibrated ONNX graph records, else one
fitted on the run's own validation split, whatever data is scored) and calibration before and after dividing the
logits by it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from typing import Any, NamedTuple

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

log = logging.getLogger("training.reports")


class Scaling(NamedTuple):
    """A report's temperature: the logits without it, T, where T comes from (the report's words), and the
    reliability figure's word on where T was fitted where that is among the images it shows ("" where not)."""

    raw_logits: np.ndarray
    temperature: float
    origin: str
    figure_note: str


def temperature_for(
    source: ModelSource, spec: DataSpec, data: ImageArrays, logits: np.ndarray, tta: str, batch_size: int
) -> Scaling | str:
    """The temperature of the before/after calibration section, or why there is none (a sentence).

    An ONNX model that divides by a temperature inside its graph has it recorded in its card; for
    anything else T is fitted on the run's own validation split (never on training images, nor on the
    "validation split" of other data given with --data), predicted again when the report is of other images.
    """
    calibration = source.info.get("calibration") or {}
    if source.kind == "onnx" and calibration.get("method") == "temperature":
        t = float(calibration["temperature"])
        own = its_own_split(source, spec)
        if spec.split == "val" and own:
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
        note = {"val": IN_SAMPLE, "all": VAL_PART}.get(spec.split, "") if own else ""
        return Scaling(undo_temperature(logits, t), t, fitted, note)  # as export verify and the card undo it
    if spec.split == "val" and _scores_the_held_out(source, spec, data):
        t = fit_temperature(logits, data.labels)
        where = "these validation images, so the after row is in-sample, as at export"
        return Scaling(logits, t, f"fitted here on {where}{fit_caveat(logits, data.labels, t)}", IN_SAMPLE)
    found = run_validation(source, spec)
    if isinstance(found, str):
        return found
    read, val, caveat = found
    shared = _shared_images(val, data)
    val, _ = match_classes(source, val, read)  # labels in the model's order, as the scored data's
    fit_logits, _ = source.predict(val, tta, batch_size)
    check_finite(source, fit_logits, "the run's validation images, which the temperature is fitted on")
    t = fit_temperature(fit_logits, val.labels)
    among = ""
    verb = "is" if shared == 1 else "are"
    if shared == len(val):
        among = f", which {verb} among the images scored here: in-sample for those"
    elif shared:
        among = f", {shared:,} of which {verb} among the images scored here: in-sample for those"
    where = f"the run's validation split ({counted(len(val), 'image')}{caveat}{among})"
    note = ""
    if shared and shared == len(data):
        note = IN_SAMPLE
    elif shared == len(val):
        note = VAL_PART
    elif shared:
        note = f"\nT fitted on {counted(shared, 'image')} of these: in-sample"
    return Scaling(logits, t, f"fitted here on {where}{fit_caveat(fit_logits, val.labels, t)}", note)


# The reliability figure's word on a T fitted on (some of) the images it shows: it flatters the after panel, and
# the figure is often shared without the report that says so.
IN_SAMPLE, VAL_PART = "\nT fitted on these images: in-sample", "\nT fitted on the val part of these"


def _scores_the_held_out(source: ModelSource, spec: DataSpec, data: ImageArrays) -> bool:
    """Whether the validation split scored is the run's own: its own data and split (a changed one is warned of
    by evaluate), or the very images it recorded holding out, wherever they are read from now (moved data)."""
    held_out = source.info.get("val_fingerprint")
    return its_own_split(source, spec) or (bool(held_out) and data.fingerprint() == held_out)


def run_validation(source: ModelSource, spec: DataSpec) -> tuple[DataSpec, ImageArrays, str] | str:
    """The run's own validation split, the only images a temperature is fitted on, whatever data is scored: where
    it was read (the run's data root, else --data where that holds the very images the run recorded holding out:
    its data, moved), the images, and the report's words on them: where they were read from where that is not the
    run's root, or a caveat where they are not the ones it recorded ("" otherwise). Where it cannot be read, why
    (a sentence for the report, also warned of)."""
    own = source.data_defaults or {}
    if not own.get("root") or not own.get("dataset"):
        return (
            "No calibration section: the model does not record its data, so not its validation split, the only "
            "images a temperature is fitted on."
        )
    keys = {k: own[k] for k in ("dataset", "val_size", "split_seed", "fit") if own.get(k) is not None}
    home = replace(spec, split="val", root=str(own["root"]), **keys)
    if home.val_size == 0:
        return (
            "No calibration section: the run held out no validation images (data.val_size=0), the only images a "
            "temperature is fitted on."
        )
    held_out = source.info.get("val_fingerprint")
    read, error = _read(home)
    if read is not None and (not held_out or read.fingerprint() == held_out):
        return home, read, ""
    moved = replace(home, root=spec.root, dataset=spec.dataset)
    if held_out and not _same_root(spec.root, home.root):
        elsewhere, _ = _read(moved)
        if elsewhere is not None and elsewhere.fingerprint() == held_out:
            return moved, elsewhere, f", read from {moved.root}"
    if read is not None:  # its data, changed since it trained (or decoded by another Pillow): still the nearest
        return (
            home,
            read,
            (
                ", not the very images it recorded holding out: its data changed since, or another Pillow decodes "
                "them, so some may have been trained on"
            ),
        )
    said = (
        f"the run's own validation split ({home.dataset} {home.root}, {home.val_size} held out with seed "
        f"{home.split_seed}), the only images a temperature is fitted on, cannot be read now ({error})"
    )
    # --data naming where its data is now cannot be advised to a model that records no fingerprint to know its
    # images by there: the user may have done just that
    if not held_out and not _same_root(spec.root, home.root):
        said += f", and the model records no fingerprint of those images to know them by in {spec.root}"
        log.warning("no calibration section: %s", said)
        return f"No calibration section: {said}."
    log.warning("no calibration section: %s; evaluate with --data where its data is now for one", said)
    return f"No calibration section: {said} (evaluate with --data where its data is now for one)."


def _read(spec: DataSpec) -> tuple[ImageArrays | None, str]:
    """``spec``'s images, or None and why they cannot be read (moved, absent, or too small a folder) or "" where
    the split is empty."""
    try:
        images = spec.load()
    except DatasetError as exc:
        return None, str(exc)
    return (images, "") if len(images) else (None, "it holds no image")


def _same_root(a: str | None, b: object) -> bool:
    return a is not None and b is not None and os.path.realpath(str(a)) == os.path.realpath(str(b))


def _shared_images(fitted: ImageArrays, scored: ImageArrays) -> int:
    """How many of the images a temperature is fitted on are among those scored, byte for byte: T flatters the
    after row on those, in-sample."""
    digests = {hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest() for image in scored.images}
    return sum(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest() in digests for image in fitted.images)


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
    if own.get("root") is not None and not _same_root(spec.root, own["root"]):
        return False
    return all(own.get(key) is None or str(own[key]) == str(getattr(spec, key)) for key in _SPLIT_KEYS)


_SPLIT_KEYS = ("dataset", "val_size", "split_seed")
