"""Export a checkpoint at one precision: the graph converted, measured against the checkpoint on the validation
split, and recorded only once it passes, so that the manifest never lists a graph that missed parity."""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime
import torch

from inference.devices import DeviceKind
from inference.errors import UsageError
from inference.files import folders_to_make, remove_if_empty
from inference.fits import FitName
from inference.manifest import ModelCard, ModelEntry
from inference.messages import counted
from inference.precisions import PrecisionName
from inference.runtime import OnnxClassifier
from training.checkpoint import (
    LAST_FILE,
    SUMMARY_FILE,
    checkpoint_file,
    load_checkpoint_and_sha256,
    model_from_checkpoint,
)
from training.inference import with_tta
from training.reports.calibration import calibration_report, undo_temperature

from .calibration import fit_calibration, with_calibration
from .data_cache import RUNS_CACHE, RunsCache, export_cache_dir
from .int8_ranges import DEFAULT_ACTIVATION_RANGE, DEFAULT_CALIBRATION_IMAGES, activation_range
from .onnx_export import OPSET, export_fp32, input_spec, write_card
from .parity import Parity, parity_against, torch_logits
from .record import check_replacement, record_entry
from .reference import ReferenceCache
from .sources import _data_source, calibration_images, validation_split
from .variants import converter
from .workspace import workspace

log = logging.getLogger("export")


class ParityError(RuntimeError):
    """The exported model misses its accuracy tolerance against the checkpoint."""


def export_checkpoint(
    checkpoint: str | Path,
    name: str,
    precision: PrecisionName = "fp32",
    models_dir: str | Path = "models",
    make_default: bool = False,
    calibration_count: int | None = None,
    cache_dir: str | None | RunsCache = RUNS_CACHE,
    max_val_images: int | None = None,
    tta: str = "none",
    calibrate: str = "temperature",
    fit: FitName | None = None,
    default_for: Sequence[DeviceKind] = (),
    reference_cache: str | Path | None = None,
    activation_ranges: str | None = None,
    data_root: str | None = None,
    replace: bool = False,
) -> tuple[ModelEntry, Parity]:
    """``tta="flip"`` puts flip test-time augmentation inside the graph: parity is then measured against
    the same averaging in PyTorch, and the card's source records it.

    ``calibrate="temperature"`` fits one temperature on the validation split (the images parity uses)
    and divides the graph's logits by it after the averaging; parity is measured against the same
    division in PyTorch. The card records the method and T (``calibration``) and, in
    ``metrics["calibration"]``, ECE/NLL/Brier before and after, and with a T refitted on this
    variant's own logits. ``"none"`` exports the graph without the division.

    ``fit`` (a name from inference.fits): how serving fits photos of another shape, recorded in the card's
    input spec; default the training run's, or inference.fits.DEFAULT_FIT for a run that recorded none.
    ``make_default`` makes it the manifest's ``default``; ``default_for`` the default on those kinds of device
    (``cpu``, ``cuda``). ``reference_cache``: a folder where the checkpoint's PyTorch logits are kept (see
    export.reference), so that the next precision of the same checkpoint, or its verification, skips that pass.
    ``activation_ranges`` (INT8 only): how the activations' ranges are calibrated (export/int8_ranges.py).
    ``data_root``: where the run's dataset is now, when it has moved since training (``_data_source``).
    ``replace``: a model already listed under ``name`` may be replaced (``check_replacement``).
    ``cache_dir``: the images' decode cache (None for none); by default the run's (``export_cache_dir``)."""
    check_calibration_options(precision, activation_ranges, calibration_count)
    ckpt, checkpoint_sha256 = load_checkpoint_and_sha256(checkpoint)
    meta = ckpt["meta"]
    source = _data_source(meta, checkpoint, export_cache_dir(cache_dir, ckpt), data_root)
    unfinished = unfinished_run(checkpoint, ckpt)
    if unfinished:
        log.warning("%s", unfinished)
    models_dir = Path(models_dir)
    with models_folder(models_dir):
        replaces = check_replacement(
            models_dir, name, meta["arch"], meta["classes"], precision, replace, max_val_images
        )
        if max_val_images is not None and (make_default or default_for):
            log.warning(
                "%r becomes a default with figures measured on %s only (--max-val-images)",
                name,
                counted(max_val_images, "validation image"),
            )
        model = with_tta(model_from_checkpoint(ckpt), tta)
        val = validation_split(source, max_val_images, meta["classes"], moved=data_root is not None)
        # One PyTorch pass serves both the temperature fit and parity.
        logits, torch_speed = ReferenceCache(reference_cache).logits(
            checkpoint_sha256, tta, val.images, lambda: torch_logits(model, val.images)
        )
        calibration = fit_calibration(logits, val.labels, calibrate, f"the checkpoint with tta {tta!r}")
        model = with_calibration(model, calibration)
        reference = logits / calibration.temperature  # what the graph outputs (T is 1 when uncalibrated)
        card = ModelCard(
            name=name,
            arch=meta["arch"],
            dataset=meta["dataset"],
            classes=meta["classes"],
            precision=precision,
            input=input_spec(meta, fit),
            metrics={"val_top1": 0.0},
            source={
                **{k: v for k, v in source.items() if k != "cache_dir"},
                "checkpoint": str(checkpoint),
                "checkpoint_sha256": checkpoint_sha256,
                "recipe": meta.get("recipe"),
                "model_args": meta["model_args"],
                **({"members": meta["members"]} if "members" in meta else {}),  # an ensemble's checkpoints
                **({"teacher": meta["teacher"]} if "teacher" in meta else {}),  # what a distilled model learnt from
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
                "opset": OPSET,
                "tta": tta,
            },
            calibration=calibration,
        )
        final = models_dir / f"{name}.onnx"
        with workspace(models_dir) as tmp:
            fp32 = tmp / "fp32.onnx"
            log.info("exporting the network to ONNX (opset %d)", OPSET)  # a few seconds to a minute, without a bar
            export_fp32(model, fp32, meta["input_size"])
            out = tmp / "model.onnx"
            convert_variant(fp32, out, card, source, calibration_count, activation_ranges)
            classifier = OnnxClassifier(out, device="cpu")
            parity, graph_logits = parity_against(
                reference, torch_speed, classifier, val.images, val.labels, split_images=source["val_size"]
            )
            publish(out, card, parity, graph_logits, val.labels, "")
            return record_entry(card, out, final, models_dir, make_default, default_for, replaces=replaces), parity


def unfinished_run(checkpoint: str | Path, ckpt: dict) -> str | None:
    """What to say of a checkpoint whose run has not finished (interrupted, or still training): its folder holds
    the run's last.pt and not the summary.json a run writes when it ends, early stop included. Said, not refused:
    an epoch on the way may be what is wanted, but an interrupted run's best.pt would otherwise ship unremarked."""
    run = checkpoint_file(checkpoint).parent
    if not (run / LAST_FILE).is_file() or (run / SUMMARY_FILE).is_file():
        return None
    epochs = ((ckpt.get("config") or {}).get("train") or {}).get("epochs")
    try:
        trained = len(json.loads((run / "history.json").read_text()))
    except (OSError, ValueError, TypeError):
        trained = None
    done = f"{trained} of its {counted(epochs, 'epoch')} trained, " if trained is not None and epochs else ""
    return (
        f"{checkpoint_file(checkpoint)} is from a run that has not finished ({done}no {SUMMARY_FILE} in {run}): "
        f"interrupted, or still training; `python -m training resume {shlex.quote(str(run))}` finishes it, then "
        "export again with --replace"
    )


@contextmanager
def models_folder(models_dir: Path) -> Iterator[None]:
    """``models_dir`` made, with the parents it lacks, for the body; those made are taken away again when the body
    fails or is stopped and leaves them empty, so a refused export into a new folder leaves no folder behind.
    Refused here, before the validation pass, when it cannot be made or written to."""
    made = folders_to_make(models_dir)
    try:
        try:
            models_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UsageError(f"--models-dir {models_dir} is not a folder") from None
        except OSError as exc:
            raise UsageError(f"cannot make --models-dir {models_dir}: {exc.strerror or exc}") from None
        if not os.access(models_dir, os.W_OK | os.X_OK):
            raise UsageError(f"cannot write to --models-dir {models_dir}: permission denied")
        yield
    except BaseException:
        remove_if_empty(made)
        raise


def check_calibration_options(
    precision: str, activation_ranges: str | None, calibration_count: int | None = None
) -> None:
    """Refuse, before any work, a range method or a number of calibration images for a precision that is not
    calibrated (the option would be ignored), or an unknown range method."""
    given = [
        flag
        for flag, value in (("--int8-ranges", activation_ranges), ("--calibration-images", calibration_count))
        if value is not None
    ]
    if given and converter(precision).calibration is None:
        raise UsageError(f"{' and '.join(given)} applies to INT8 only, not {precision}")
    if activation_ranges is not None:
        activation_range(activation_ranges)


def convert_variant(
    fp32: Path,
    out: Path,
    card: ModelCard,
    source: dict,
    calibration_count: int | None,
    activation_ranges: str | None = None,
) -> None:
    """The card's precision from the FP32 graph, and the card written into it; INT8 calibration images come
    from the training split of ``source``, and its activation ranges from ``activation_ranges``
    (export/int8_ranges.py; default MinMax), which only a calibrated precision accepts."""
    check_calibration_options(card.precision, activation_ranges, calibration_count)
    convert = converter(card.precision)
    if convert.calibration is None:
        convert.convert(fp32, out)
    else:
        ranges = activation_range(activation_ranges or DEFAULT_ACTIVATION_RANGE)
        log.info("calibrating the %s graph's activation ranges (%s)", card.precision, ranges.label)
        images = calibration_images(source, calibration_count or DEFAULT_CALIBRATION_IMAGES)
        used = convert.convert(fp32, out, images, ranges.name)
        card.source["calibration"] = f"{used} " + convert.calibration.format(ranges=ranges.label)
        if calibration_count and used is not None and used < calibration_count:
            # the card records the count used; the one asked for would otherwise be taken for it
            log.warning("%s", _fewer_calibrated(calibration_count, len(images), used, ranges.label, card.name))
    write_card(out, card)


def _fewer_calibrated(asked: int, drawn: int, used: int, ranges: str, name: str) -> str:
    """Why ``used`` images calibrated ``name`` where ``asked`` were: a training split of only ``drawn`` images, or
    a histogram method's batches of one size, which leave a remainder out (the split is not then "of ``used``")."""
    short = f"the training split holds {counted(drawn, 'image')}" if drawn < asked else ""
    if used == drawn:
        return f"--calibration-images {asked}: {short}, so all of them calibrate {name}"
    batches = f"{ranges} calibrates on whole batches of one size"
    return (
        f"--calibration-images {asked}: {f'{short} and ' if short else ''}{batches}, so {used} of them calibrate {name}"
    )


def publish(out: Path, card: ModelCard, parity: Parity, logits: np.ndarray, labels: np.ndarray, against: str) -> None:
    """Refuse a graph that misses parity; otherwise write its metrics into the card (``record_entry`` then moves
    it into place)."""
    if not parity.passed:
        raise ParityError(
            f"{card.name} ({card.precision}) failed verification{against}: {parity.verdict()}\n{parity.summary()}"
        )
    card.metrics = {
        "val_top1": parity.onnx_top1,
        "val_top5": parity.onnx_top5 if len(card.classes) > 5 else None,  # else every label is among the top 5
        "val_samples": parity.samples,
        "parity": parity.as_dict(),
        "calibration": graph_calibration_report(logits, labels, card.calibration.temperature),
    }
    write_card(out, card)


def graph_calibration_report(graph_logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """Before/after/refit from the logits the graph outputs, which are already divided by ``temperature``."""
    return calibration_report(undo_temperature(graph_logits, temperature), labels, temperature, refit=True)
