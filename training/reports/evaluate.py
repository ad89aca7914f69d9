"""``evaluate``: one report for any checkpoint or ONNX model, a folder of metrics.json, predictions.npz, figures
and report.md.

The model comes from ``sources``, the samples it is scored on from ``samples``; ``report_folder`` checks where
the report goes; its calibration section, its words and its Grad-CAM figure each have a module of their own.
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference.errors import UsageError
from inference.files import write_text_atomic
from inference.messages import counted

from ..data import DatasetError, ImageArrays, stratified_split
from ..inference import check_tta
from ..plots import CurveInfo, plot_training_curves
from ..preflight import inside_the_data
from . import figures
from .gradcam import NoSpatialMap
from .gradcam_figure import GRADCAM_PER_GROUP, render_gradcam
from .metrics import compute_metrics, softmax
from .predictions import HISTORY_FILE, METRICS_FILE, PREDICTIONS_FILE, save_predictions
from .report_calibration import calibration_section, its_own_split, temperature_for
from .report_folder import (
    check_not_anothers,
    check_report_out,
    check_writable,
    default_out_dir,
    earlier_report,
    report_folder,
)
from .report_text import confidence_note, figure_subtitle, model_label, write_report_md
from .samples import (
    DataSpec,
    fingerprint_by_name,
    held_classes,
    match_classes,
    names_text,
    no_samples,
    resolve_data,
    sample_fingerprint,
)
from .sources import ModelSource, check_finite, check_view, load_model

log = logging.getLogger("training.reports")

# Every figure a report may hold: one an evaluation does not write this time is removed from a reused --out.
FIGURES = (
    "confusion_matrix.png",
    "per_class_accuracy.png",
    "misclassified.png",
    "reliability.png",
    "gradcam.png",
    "training_curves.png",
)


def evaluate(
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    out: str | Path | None = None,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "val",
    tta: str = "none",
    val_size: int | None = None,
    split_seed: int | None = None,
    cache_dir: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    gradcam_per_group: int = GRADCAM_PER_GROUP,
    max_classes: int = figures.MAX_CLASSES,
    sample_figures: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint or ONNX model and write the report folder; returns the metrics. Without
    ``sample_figures`` the two figures made of the dataset's own images (misclassified samples, Grad-CAM) are
    left out, for a report kept where copies of the data must not be."""
    check_tta(tta)
    if out is not None:
        check_report_out(Path(out), checkpoint or onnx)
    source = load_model(checkpoint, onnx, device)
    check_view(source, tta)
    spec = resolve_data(source, dataset, root, split, val_size, split_seed, cache_dir)
    out_dir = Path(out) if out else default_out_dir(source, split, tta)
    named = f"--out {out_dir}" if out else f"the default report folder {out_dir}"
    if inside_the_data(spec.dataset, spec.root, out_dir):
        raise UsageError(
            f"{named} is inside the dataset {spec.root}: the report's figures would be read as images of it by "
            "later runs; write the report to a folder outside it (--out)"
        )
    check_writable(out_dir, named)
    data = spec.load()
    if len(data) == 0:
        raise no_samples(spec, val_size is not None, "evaluate")
    notes = _not_the_held_out_images(source, spec, data) + _trained_on(source, spec, data)
    held = held_classes(source.classes, data.classes)
    data, note = match_classes(source, data, spec)
    notes += [note] if note else []
    notes += _split_lacks_classes(source.classes, held, data.labels, split)
    if not out:  # two ONNX files of one name go to one default folder, reports/<name>-<split>
        check_not_anothers(out_dir, checkpoint or onnx or "", f"the default report folder {out_dir}")
    with report_folder(out_dir):
        return _write_report(
            source, spec, data, notes, out_dir, tta, batch_size, gradcam_per_group, max_classes, sample_figures
        )


def _not_the_held_out_images(source: ModelSource, spec: DataSpec, data: ImageArrays) -> list[str]:
    """A warning, and a note for the report, where the validation split read now is not the one the run held out
    (another --split-seed or --val-size, or the same images in another order or format): some of its images may
    have been trained on, and the figures, read as held-out ones, would be optimistic unsaid."""
    held_out = source.info.get("val_fingerprint")
    if spec.split != "val" or not held_out or data.fingerprint() == held_out:
        return []
    said = (
        f"the val split of {spec.dataset} {spec.root} (seed {spec.split_seed}, {spec.val_size} held out) is not the "
        "set of validation images the run held out (another split seed or size, other data, or the same files "
        "decoded by another Pillow): some of them may have been trained on, so the figures may be optimistic"
    )
    log.warning("%s", said)
    return [said[0].upper() + said[1:] + "."]


def _trained_on(source: ModelSource, spec: DataSpec, data: ImageArrays) -> list[str]:
    """A warning, and a note for the report, where --split all or train scores the run's own data (its dataset and
    root): the figures of images it trained on, read as its accuracy, would be optimistic unsaid. ``data`` is read
    in its own class order, as the run split it."""
    own = source.data_defaults or {}
    if spec.split not in ("all", "train") or not own.get("root") or not own.get("dataset"):
        return []
    run_val, run_seed = own.get("val_size"), own.get("split_seed")
    split_as_the_run = {k: v for k, v in (("val_size", run_val), ("split_seed", run_seed)) if v is not None}
    if not its_own_split(source, replace(spec, **split_as_the_run)) and not _the_runs_moved(source, spec, data):
        return []  # another folder, or another dataset
    scored = f"{counted(len(data), 'image')} scored here ({spec.dataset} {spec.root}, split {spec.split}"
    if spec.split == "train" and its_own_split(source, spec):
        trained = f"all {scored}: its own training split"
    elif spec.split == "train":
        held = f"{spec.val_size} held out with seed {spec.split_seed}"
        trained = f"some of the {scored}, {held}"
        if run_val is not None:
            least = max(len(data) - int(run_val), 0)
            trained = f"at least {least} of the {scored}, {held}, where it held out {run_val} with seed {run_seed}"
    else:
        trained = f"{_trained_of_all(source, data)} the {scored}"
    said = (
        f"the run trained on {trained}), so the figures, read as its accuracy on images it has not seen, are optimistic"
    )
    log.warning("%s", said)
    return [said[0].upper() + said[1:] + "."]


def _the_runs_moved(source: ModelSource, spec: DataSpec, data: ImageArrays) -> bool:
    """Whether ``data``, all of a folder other than the one the run records (its data copied to another machine, or
    CIFAR-10 kept elsewhere), holds the very images the run held out, as its split holds them out now: the run's
    own data, read from elsewhere."""
    recorded = source.info.get("val_fingerprint")
    if spec.split != "all" or not recorded or str(source.data_defaults.get("dataset")) != spec.dataset:
        return False
    split = _the_runs_split(source, data)
    return split is not None and len(split[1]) > 0 and data.subset(split[1]).fingerprint() == recorded


def _the_runs_split(source: ModelSource, data: ImageArrays) -> tuple[np.ndarray, np.ndarray] | None:
    """``data``, all of the run's own data, split as the run split it (trained on, held out); None where its split
    cannot be made again (not recorded, or fewer images than it held out: not the data it split)."""
    own = source.data_defaults
    if own.get("val_size") is None or own.get("split_seed") is None:
        return None
    try:
        return stratified_split(data.labels, int(own["val_size"]), int(own["split_seed"]), data.classes)
    except DatasetError:
        return None


def _trained_of_all(source: ModelSource, data: ImageArrays) -> str:
    """How many of ``data``, all of the run's own data, the run trained on: all but those its split holds out, as
    it split them; "some of" where its split cannot be made again, or where the images it holds out now are not
    those it recorded holding out."""
    split = _the_runs_split(source, data)
    if split is None:
        return "some of"
    trained, held = split
    if not len(held):
        return "all of"
    recorded = source.info.get("val_fingerprint")
    if recorded and data.subset(held).fingerprint() != recorded:
        # its data changed since (images added: a split of more images holds out others), or another Pillow
        # decodes it: the split made now is not the run's, and no count of its would be the run's either
        return "some of"
    return f"{len(trained)} of"


def _split_lacks_classes(classes: list[str], held: set[int], labels: np.ndarray, split: str) -> list[str]:
    """A note naming the classes the data holds images of but this split none (a class too small for a share of
    the held-out images): the figures would otherwise leave them out unsaid."""
    support = np.bincount(labels, minlength=len(classes))
    empty = [classes[i] for i in sorted(held) if support[i] == 0]
    if not empty:
        return []
    why = (
        " (too few images of theirs for a share of the held-out ones, or a held-out split too small)"
        if split == "val"
        else ""
    )
    return [
        f"The {split} split holds no image of {names_text(empty)}{why}: their accuracy, recall and F1 are not "
        "measured here (null in metrics.json), they are left out of the per-class averages, and every "
        "prediction of one counts as a mistake."
    ]


def _say_replacing(out_dir: Path) -> None:
    """Warn that the report already in ``out_dir`` (--out or the default folder) is rewritten, where train, export
    and score --out refuse an existing target. Said once the predictions (and those the temperature is fitted on)
    passed every check: a model refused as broken leaves the earlier report whole, and must not say it replaces it."""
    earlier = earlier_report(out_dir)
    if earlier is not None:
        log.warning("replacing the earlier report in %s (%s)", out_dir, earlier)


def _write_report(
    source: ModelSource,
    spec: DataSpec,
    data: ImageArrays,
    notes: list[str],
    out_dir: Path,
    tta: str,
    batch_size: int,
    gradcam_per_group: int,
    max_classes: int,
    sample_figures: bool,
) -> dict[str, Any]:
    """Predict, and write the report folder ``out_dir`` (made): evaluate's work once its input is checked."""
    classes = source.classes
    logits, seconds = source.predict(data, tta, batch_size)
    check_finite(source, logits)
    metrics = compute_metrics(logits, data.labels, classes)
    fingerprint = sample_fingerprint(data)
    by_name = fingerprint_by_name(data, classes)
    metrics = {
        "source": {"kind": source.kind, "path": str(source.path), "arch": source.arch, **source.info},
        "data": {**spec.record(), "fingerprint": fingerprint, "fingerprint_by_name": by_name},
        "data_description": spec.describe(),
        "tta": tta,
        "device": str(source.device) if source.kind == "checkpoint" else ",".join(source.info["providers"]),
        "wall_time_s": seconds,
        "images_per_s": len(data) / seconds if seconds > 0 else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        **metrics,
    }
    scaling = temperature_for(source, spec, data, logits, tta, batch_size)
    _say_replacing(out_dir)
    # A report stopped midway must not pair these predictions with an earlier evaluation's metrics (compare
    # reads its TTA and data from them): the old metrics go before the new predictions arrive.
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    (out_dir / "report.md").unlink(missing_ok=True)  # nor a person read the earlier report beside them
    save_predictions(out_dir / PREDICTIONS_FILE, logits, data.labels, classes, fingerprint, by_name)
    if isinstance(scaling, str):
        notes.append(scaling)
    else:
        metrics["calibration"] = calibration_section(
            scaling.raw_logits, data.labels, scaling.temperature, scaling.origin
        )

    probs = softmax(logits)
    preds, confidence = logits.argmax(1), probs.max(1)
    subtitle = figure_subtitle(source, spec.split, tta, len(data))
    files: dict[str, str | None] = {}
    with tqdm(total=6, desc="figures", unit="figure", leave=False) as bar:
        figures.plot_confusion_matrix(
            np.array(metrics["confusion_matrix"]), classes, out_dir / "confusion_matrix.png", max_classes, subtitle
        )
        files["confusion_matrix"] = "confusion_matrix.png"
        bar.update()
        figures.plot_per_class_accuracy(
            [c["accuracy"] for c in metrics["per_class"]],
            classes,
            out_dir / "per_class_accuracy.png",
            max_classes,
            subtitle,
        )
        files["per_class_accuracy"] = "per_class_accuracy.png"
        bar.update()
        if sample_figures:
            metrics["misclassified_shown"] = figures.plot_misclassified(
                data.images,
                data.labels,
                preds,
                confidence,
                classes,
                out_dir / "misclassified.png",
                subtitle=subtitle,
                confidence_note=confidence_note(source),
            )
            files["misclassified"] = "misclassified.png"
        else:
            notes.append(
                "Misclassified samples and Grad-CAM are left out (--no-sample-figures): they are made of the "
                "dataset's images. The same command without the flag writes them."
            )
        bar.update()
        if "calibration" in metrics:
            cal = metrics["calibration"]
            figures.plot_reliability(
                [
                    (f"uncalibrated (T = 1): ECE {cal['before']['ece']:.4f}", cal["reliability"]["before"]),
                    (
                        f"temperature-scaled (T = {cal['temperature']:.3f}): ECE {cal['after']['ece']:.4f}"
                        + (scaling.figure_note if not isinstance(scaling, str) else ""),
                        cal["reliability"]["after"],
                    ),
                ],
                out_dir / "reliability.png",
                subtitle,
            )
            files["reliability"] = "reliability.png"
        bar.update()
        if sample_figures and source.supports_gradcam:
            try:
                metrics["gradcam_samples"] = render_gradcam(
                    source, data, preds, confidence, classes, out_dir / "gradcam.png", gradcam_per_group, tta, subtitle
                )
                files["gradcam"] = "gradcam.png"
            except NoSpatialMap as exc:
                notes.append(f"Grad-CAM skipped: {source.arch} has no spatial layer to show evidence on ({exc}).")
        elif sample_figures:
            notes.append("Grad-CAM skipped: an ONNX model exposes no gradients; evaluate its checkpoint for heat maps.")
        bar.update()
        if source.history:
            plot_training_curves(
                source.history,
                out_dir / "training_curves.png",
                CurveInfo(**source.info["curves"]),
                f"{model_label(source)} · its training run, by epoch",
            )
            write_text_atomic(out_dir / HISTORY_FILE, json.dumps(source.history, indent=1))
            files["training_curves"] = "training_curves.png"
        else:
            notes.append("No training curves: no history.json next to the model and none in the checkpoint.")
        bar.update()
    if len(classes) > max_classes:
        notes.append(
            f"With {len(classes)} classes the confusion matrix and bar chart show the {max_classes} worst "
            "classes; metrics.json has all of them."
        )
    metrics["notes"] = notes
    metrics["files"] = {k: v for k, v in files.items() if v}
    written = {*files.values(), HISTORY_FILE if source.history else None}
    for stale in set(FIGURES + (HISTORY_FILE,)) - written:  # an earlier report's, in a reused --out
        (out_dir / stale).unlink(missing_ok=True)
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    write_report_md(out_dir / "report.md", metrics, files, notes)
    metrics["out_dir"] = str(out_dir)
    return metrics
