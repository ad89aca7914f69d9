"""Export a checkpoint at one precision, verify it, and record it in the manifest; or re-verify a shipped model."""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.devices import DEVICE_KINDS, DeviceKind
from inference.errors import UsageError
from inference.files import folders_to_make, remove_if_empty
from inference.fits import LEGACY_FIT, FitName
from inference.interrupts import interrupts_held
from inference.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestError,
    ModelCard,
    ModelEntry,
    card_disagreements,
    file_problems,
    load_manifest,
    manifest_update,
    refuse_read_only,
    save_manifest,
    sha256_file,
)
from inference.messages import counted, validation_problems
from inference.precisions import PrecisionName, unsuited_hosts
from inference.preprocess import to_model_input
from inference.runtime import OnnxClassifier, read_card, softmax
from training.checkpoint import (
    LAST_FILE,
    SUMMARY_FILE,
    checkpoint_file,
    load_checkpoint_and_sha256,
    model_from_checkpoint,
)
from training.data import DatasetError, ImageArrays, load_split
from training.data.split import SplitTooLarge
from training.dataset_cache import DEFAULT_CACHE_DIR
from training.inference import with_tta
from training.reports.calibration import calibration_report, undo_temperature

from .calibration import fit_calibration, with_calibration
from .data_cache import RUNS_CACHE, RunsCache, export_cache_dir
from .int8_ranges import DEFAULT_ACTIVATION_RANGE, DEFAULT_CALIBRATION_IMAGES, activation_range
from .onnx_export import OPSET, export_fp32, input_spec, write_card, writing
from .parity import Parity, judge, onnx_logits, parity_against, torch_logits
from .reference import ReferenceCache
from .variants import converter
from .workspace import workspace

log = logging.getLogger("export")


class ParityError(RuntimeError):
    """The exported model misses its accuracy tolerance against the checkpoint."""


class DataSource(BaseModel):
    """Which images a model is validated on, as a checkpoint's meta and a card's ``source`` record them. Neither
    of their own types checks these keys (the meta is a plain dict, the manifest's ``source`` a free mapping), so
    a hand-made checkpoint or a hand-edited card is refused here in one line, not in a KeyError mid-command."""

    model_config = ConfigDict(strict=True, extra="ignore")

    dataset: str
    data_root: str
    val_size: int = Field(ge=0)
    split_seed: int
    input_size: int = Field(ge=1)
    fit: FitName = LEGACY_FIT  # a run from before runs recorded one resized every image straight


class RecordedSource(DataSource):
    """What verify, rederive and recover read of a card's source besides its data."""

    val_fingerprint: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    tta: str = "none"
    model_args: dict[str, Any] | None = None


class RecordedParity(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    torch_top1: float | None = None


class RecordedMetrics(BaseModel):
    """What verify reads of a card's figures when the checkpoint is gone: the PyTorch top-1 recorded at export."""

    model_config = ConfigDict(strict=True, extra="ignore")

    val_samples: int | None = None
    parity: RecordedParity | None = None


class _CheckpointData(BaseModel):
    meta: DataSource


class _CardRecord(BaseModel):
    source: RecordedSource
    metrics: RecordedMetrics


def _split(source: dict, split: str) -> ImageArrays:
    try:
        return load_split(
            source["dataset"],
            source["data_root"],
            split,
            val_size=source["val_size"],
            seed=source["split_seed"],
            cache_dir=source.get("cache_dir"),
            image_size=source["input_size"],
            fit=source.get("fit", LEGACY_FIT),
        )
    except DatasetError as exc:
        if source["data_root"] is None or Path(source["data_root"]).exists():
            raise
        # the run's dataset has moved, or this is another machine: every command that reads it takes --data
        raise DatasetError(f"{exc}; give --data ROOT, where that dataset is now") from None


def source_at(source: dict, cache_dir: str | None, data_root: str | None) -> dict:
    """A card's or run's data source, read from ``data_root`` (``--data``: where the dataset is now) if given."""
    return {**source, "cache_dir": cache_dir, **({"data_root": data_root} if data_root else {})}


def from_project(path: str, models_dir: Path) -> str:
    """A path the manifest recorded relative to the folder the export ran in: as it stands from the current
    folder, else from the project's (the one holding the models folder, where the exports run), so that `export
    verify` finds the data and the checkpoint from any folder."""
    if Path(path).is_absolute() or Path(path).exists():
        return path
    beside = Path(models_dir).resolve().parent / path
    return str(beside) if beside.exists() else path


def validation_split(source: dict, max_images: int | None, classes: Sequence[str], moved: bool = False) -> ImageArrays:
    """The validation split, or ``max_images`` of it drawn at random (seeded): a folder dataset's images are
    sorted by class, so its first N would be one or two classes. ``classes``: the model's, which the data's must
    be (its labels are indices into them). ``moved``: read from where ``--data`` says the dataset is now, so
    compared with the fingerprint the run recorded of its validation images."""
    where = f"--data {source['data_root']}" if moved else str(source["data_root"])
    try:
        val = _split(source, "val")
    except SplitTooLarge as exc:
        if not moved:
            raise
        raise UsageError(
            f"{where} holds {counted(exc.images, 'image')}, fewer than the run held out for validation "
            f"({exc.val_size}): not the run's dataset"
        ) from None
    if list(val.classes) != list(classes):  # other labels: the accuracy, temperature and parity would be wrong
        raise UsageError(
            f"{where} holds the classes {', '.join(val.classes)}, not the model's ({', '.join(classes)}): "
            "not the dataset it was trained on"
        )
    expected = source.get("val_fingerprint")
    if moved and expected and val.fingerprint() != expected:
        # Warned, not refused: the same files decode to other pixels under another Pillow or libjpeg, and parity
        # (the graph against the checkpoint on the same images) is judged either way.
        log.warning(
            "--data %s does not give the validation images the run was measured on (other images, another split "
            "of them, or the same files decoded by another Pillow or libjpeg): the figures measured now are not "
            "comparable with the run's",
            source["data_root"],
        )
    return val.subset(_sample(len(val), max_images)) if max_images and max_images < len(val) else val


def calibration_images(source: dict, count: int, seed: int = 0) -> np.ndarray:
    """``count`` images from the training split (never validation), as float32 model input."""
    train = _split(source, "train")
    return to_model_input(train.images[_sample(len(train), count, seed)])


def _sample(total: int, count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct indices below ``total``, in order, the same for the same seed everywhere (PCG64)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(total, size=min(count, total), replace=False))


def _data_source(meta: dict, checkpoint: str | Path, cache_dir: str | None, data_root: str | None = None) -> dict:
    """Where the run's validation images are read from: where it read them, or ``data_root`` (``--data``: the
    same dataset moved, or on another machine), compared with the fingerprint the run recorded of them (also
    written on the card, for ``verify --data``)."""
    try:
        data = _CheckpointData.model_validate({"meta": meta}).meta
    except ValidationError as exc:
        raise UsageError(
            f"{checkpoint} does not say which data it was validated on: {validation_problems(exc)}"
        ) from None
    if not data.val_size:
        raise UsageError(
            "the checkpoint's run held out no validation split (data.val_size 0), so parity cannot be measured: "
            "export checks the graph against the checkpoint on held-out images; train with one "
            "(--set data.val_size=N)"
        )
    fingerprints = str(meta.get("data_fingerprint") or "").split(":")
    recorded = {
        **data.model_dump(),  # fit: how the run's folder images were fitted, which parity reads the same way
        **({"val_fingerprint": fingerprints[1]} if len(fingerprints) == 2 else {}),  # training's, validation's
    }
    return source_at(recorded, cache_dir, data_root)


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
        used = convert.convert(
            fp32, out, calibration_images(source, calibration_count or DEFAULT_CALIBRATION_IMAGES), ranges.name
        )
        card.source["calibration"] = f"{used} " + convert.calibration.format(ranges=ranges.label)
        if calibration_count and used is not None and used < calibration_count:
            # the card records the count used; the one asked for would otherwise be taken for it
            log.warning(
                "--calibration-images %d: the training split holds %s, so all of them calibrate %s",
                calibration_count,
                counted(used, "image"),
                card.name,
            )
    write_card(out, card)


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
        "calibration": _calibration_report(logits, labels, card.calibration.temperature),
    }
    write_card(out, card)


def record_entry(
    card: ModelCard,
    out: Path,
    final: Path,
    models_dir: Path,
    make_default: bool,
    default_for: Sequence[DeviceKind] = (),
    *,
    replaces: str | None,
) -> ModelEntry:
    """Move the verified graph ``out`` to ``final`` and list it in the manifest. The new manifest is made (and a
    manifest that cannot be read refused) before the file is replaced, so a refusal leaves the shipped file
    as the manifest knows it; the file and the manifest then change together (see ``_replace_listed``).

    ``replaces``: the sha256 of the entry listed under the card's name when ``check_replacement`` allowed this
    export (None: none was). The name is checked again under the manifest's lock, since another export of the
    same name may have been recorded while this one converted and measured (minutes): it is not replaced
    unasked."""
    entry = ModelEntry(**card.model_dump(), file=final.name, sha256=sha256_file(out))
    recorded = False
    try:
        with manifest_update(models_dir):  # waited for outside interrupts_held: a Ctrl-C then stops the wait
            manifest = _with_entry(entry, models_dir, make_default, default_for, replaces)
            with interrupts_held():
                _replace_listed(out, final, manifest, models_dir)
                recorded = True
    except KeyboardInterrupt as exc:  # one that arrived during the renames, acted on once they were done
        if recorded:
            exc.add_note(f"{entry.name} was recorded in {models_dir / MANIFEST_NAME} before the stop")
        raise
    warning = unsuited_hosts(entry.name, entry.precision, DEVICE_KINDS if make_default else default_for)
    if warning:
        log.warning("%s", warning)
    return entry


def _check_unchanged(path: Path, name: str, listed: str | None, replaces: str | None) -> None:
    if listed == replaces:
        return
    happened = "listed" if replaces is None else "replaced" if listed else "removed"
    raise UsageError(
        f"{name!r} was {happened} in {path} by another command while this export ran: nothing was recorded and the "
        f"verified graph was discarded; run the export again (with --replace to replace the model now listed), or "
        "give another --name"
    )


def _replace_listed(out: Path, final: Path, manifest: Manifest, models_dir: Path) -> None:
    """``out`` in place of ``final`` and ``manifest`` saved, or neither: where the manifest cannot be saved (a
    full disk), the file it lists comes back, so the shipped model still matches its sha256 and the service
    still starts. The caller holds off interrupts; only a kill between the renames can part them."""
    kept = final.with_name(f".{final.name}.kept")  # hidden: the service lists models from the manifest only
    kept.unlink(missing_ok=True)  # left by a process killed here before
    if final.is_file():
        try:
            os.link(final, kept)
        except OSError:  # a file system without hard links
            shutil.copy2(final, kept)
    try:
        os.replace(out, final)
        with writing(models_dir / MANIFEST_NAME):
            save_manifest(manifest, models_dir)
    except BaseException:
        if kept.exists():
            os.replace(kept, final)
        else:
            final.unlink(missing_ok=True)  # not listed: it would only be mistaken for a model
        raise
    kept.unlink(missing_ok=True)


def check_replacement(
    models_dir: Path,
    name: str,
    arch: str,
    classes: Sequence[str],
    precision: str,
    replace: bool = False,
    max_val_images: int | None = None,
) -> str | None:
    """Refuse, before any work, to record ``name`` over a listed model unless ``replace`` is asked for: the
    manifest keeps one entry per name, so the listed file and its measured figures would be gone, and its
    checkpoint may be long gone too. Even asked, a model of another network, classes or precision is refused,
    and so is a quick check (``max_val_images``) over figures measured on more images. Re-exporting the same kind
    of model under its name (a new training run, a calibrated FP32) is what ``replace`` is for. An unreadable
    manifest is refused here too, not after the conversion, and so is a folder in the graph's place; replacing a
    file is said. Returns the sha256 of the listed entry that may be replaced (None: nothing is listed under
    ``name``), which ``record_entry`` checks again before it records."""
    final = models_dir / f"{name}.onnx"
    if final.exists() and not final.is_file():
        raise UsageError(f"{final} is not a file (a folder?): the graph of {name!r} would be written there")
    listed = None
    if (models_dir / MANIFEST_NAME).exists():
        refuse_read_only(models_dir / MANIFEST_NAME)  # before any work, not at the end
        models = {m.name: m for m in load_manifest(models_dir, verify=False).models}
        listed = models.get(name)
        # on a case-insensitive file system (macOS, Windows; a checkout of the models there) Tiny.onnx is tiny.onnx:
        # the new graph would replace the listed model's file under it, breaking that entry's sha256
        twin = next((other for other in models if other != name and other.casefold() == name.casefold()), None)
        if twin is not None:
            raise UsageError(
                f"--name {name!r} differs from the listed {twin!r} only in case, and their files would be one on a "
                f"case-insensitive file system: give another --name (or {twin!r} with --replace)"
            )
    if listed is None:
        if final.exists():
            log.warning("%s is in no manifest entry: the new graph replaces it once verified", final)
        return None
    old = (listed.arch, list(listed.classes), listed.precision)
    if old != (arch, list(classes), precision):
        # as many classes of other names (a folder of one's own against CIFAR-10's) would read as the same kind
        other = "other " if len(classes) == len(listed.classes) and list(classes) != list(listed.classes) else ""
        raise UsageError(
            f"{name!r} is already in {models_dir / 'manifest.json'} as a {listed.precision} {listed.arch} of "
            f"{len(listed.classes)} classes; this {precision} {arch} of {len(classes)} {other}classes would replace "
            f"it: give it another --name (or take the listed one out first: python -m export remove {name})"
        )
    samples = listed.metrics.get("val_samples")
    measured = (
        f"val_top1 {100 * listed.metrics['val_top1']:.2f}% on {counted(samples, 'image')}" if samples else "its figures"
    )
    if not replace:
        raise UsageError(
            f"{name!r} is already listed in {models_dir / MANIFEST_NAME} ({measured}): pass --replace to replace "
            "its file and figures with this export, or give another --name"
        )
    if max_val_images is not None and samples and max_val_images < samples:
        raise UsageError(
            f"--max-val-images {max_val_images} would replace the figures of {name!r} ({measured}) with a quick "
            "check's: measure on all the validation images to replace it, or give another --name"
        )
    log.info("%r is listed in %s: the new graph replaces it once verified", name, models_dir / MANIFEST_NAME)
    return listed.sha256


def _with_entry(
    entry: ModelEntry, models_dir: Path, make_default: bool, default_for: Sequence[DeviceKind], replaces: str | None
) -> Manifest:
    try:
        manifest = load_manifest(models_dir, verify=False)
        listed = next((m.sha256 for m in manifest.models if m.name == entry.name), None)
        _check_unchanged(models_dir / MANIFEST_NAME, entry.name, listed, replaces)
        # A re-export keeps its place, so the listing's order (and the manifest's diff) stays as it was.
        models = [entry if m.name == entry.name else m for m in manifest.models]
        if all(m.name != entry.name for m in manifest.models):
            models.append(entry)
        default = entry.name if make_default else manifest.default
        defaults = {} if make_default else dict(manifest.defaults)  # the default everywhere, as `export default`
    except ManifestError:
        if (models_dir / "manifest.json").exists():
            raise  # never overwrite a manifest we cannot read: it may list models we would forget
        _check_unchanged(models_dir / MANIFEST_NAME, entry.name, None, replaces)
        models, default, defaults = [entry], entry.name, {}
        log.info("starting a new manifest: %s", models_dir / "manifest.json")
    defaults.update({kind: entry.name for kind in default_for})
    return Manifest(default=default, defaults=defaults, models=models)


def _calibration_report(graph_logits: np.ndarray, labels: np.ndarray, temperature: float) -> dict:
    """Before/after/refit from the logits the graph outputs, which are already divided by ``temperature``."""
    return calibration_report(undo_temperature(graph_logits, temperature), labels, temperature, refit=True)


def listed_model(models_dir: Path, name: str | None) -> ModelEntry:
    """The manifest's entry ``name`` (the default when None), what its card records of its data and checkpoint
    checked (``RecordedSource``), and its file checked against its sha256: a missing or altered file of another
    listed model is warned of, and is that model's trouble, not this command's."""
    manifest = load_manifest(models_dir, verify=False)
    entry = manifest.get(name)
    try:
        _CardRecord.model_validate(entry.model_dump(include={"source", "metrics"}))
    except ValidationError as exc:
        raise ManifestError(
            f"invalid manifest {models_dir / MANIFEST_NAME}: model {entry.name!r}: {validation_problems(exc)}"
        ) from None
    problems = file_problems(manifest, models_dir)  # each file hashed once
    if entry.name in problems:
        raise ManifestError(problems.pop(entry.name))
    for problem in problems.values():
        log.warning("%s", problem)
    _check_described(entry, models_dir)
    return entry


# What the graph computes and takes, which the sha256 does not cover (the manifest is not hashed): the service
# refuses to start on an entry that differs from its file's own card, and verify, rederive and recover compute
# with the entry's classes, precision, input and temperature.
_DESCRIBED = ("arch", "classes", "precision", "input", "calibration")


def _check_described(entry: ModelEntry, models_dir: Path) -> None:
    """ManifestError where ``entry`` says of its file what the card inside the file does not: a hand edit would
    otherwise pass verification, or be blamed on the dataset (its classes), and the service then refuse it."""
    card = read_card(models_dir / entry.file)
    differ = card_disagreements(entry, card, _DESCRIBED)
    if differ:
        raise ManifestError(
            f"model {entry.name!r}: its entry in {models_dir / MANIFEST_NAME} differs from the card inside "
            f"{entry.file} in its {', '.join(differ)} (the manifest edited by hand?): restore the entry as the file's "
            "card has it, or export the model again"
        )


def verify_model(
    name: str | None,
    models_dir: str | Path = "models",
    cache_dir: str | None = DEFAULT_CACHE_DIR,
    max_val_images: int | None = None,
    reference_cache: str | Path | None = None,
    data_root: str | None = None,
) -> tuple[Parity, dict]:
    """Re-check a shipped model: hashes of every manifest file, then accuracy against its checkpoint
    (wrapped in the recorded test-time augmentation and temperature), and its calibration: with the
    recorded T, and with a T refitted on its own logits. With ``reference_cache``, the checkpoint's logits
    kept there by its export (same checkpoint bytes, TTA and images) stand in for a new PyTorch pass."""
    models_dir = Path(models_dir)
    entry = listed_model(models_dir, name)
    recorded = {**entry.source, "data_root": from_project(entry.source["data_root"], models_dir)}
    source = source_at(recorded, cache_dir, data_root)
    val = validation_split(source, max_val_images, entry.classes, moved=data_root is not None)
    classifier = OnnxClassifier(models_dir / entry.file, device="cpu")
    temperature = entry.calibration.temperature
    checkpoint = checkpoint_file(from_project(entry.source.get("checkpoint") or "-", models_dir))
    sha = sha256_file(checkpoint) if checkpoint.is_file() else None
    recorded_sha = entry.source.get("checkpoint_sha256")
    if sha is not None and recorded_sha not in (None, sha):
        # a run folder trained again: comparing with it would report a parity failure that is not the file's
        log.warning("%s is not the checkpoint %s was exported from (its sha256 differs)", checkpoint, entry.name)
        sha = None
    if sha is not None:
        tta = entry.source.get("tta", "none")

        def compute() -> tuple[np.ndarray, float]:
            ckpt, loaded_sha = load_checkpoint_and_sha256(checkpoint)
            if loaded_sha != sha:  # replaced since it was checked: its logits would be cached under the other's digest
                raise UsageError(f"{checkpoint} changed while it was being verified (a run still training?): run again")
            return torch_logits(with_tta(model_from_checkpoint(ckpt), tta), val.images)

        reference, speed = ReferenceCache(reference_cache).logits(sha, tta, val.images, compute)
        # the recorded temperature, as the graph applies it after the averaging
        reference = reference / temperature
        parity, logits = parity_against(
            reference, speed, classifier, val.images, val.labels, split_images=source["val_size"]
        )
        return _against_card(parity, entry), _calibration_report(logits, val.labels, temperature)
    # Without the checkpoint (a fresh clone), compare with the reference's accuracy recorded at export time: a
    # graph derived from another (rederive) was measured against that graph, not against PyTorch.
    against = "FP32 graph" if entry.source.get("derived_from") else "PyTorch"
    log.warning(
        "comparing %s with the %s accuracy recorded at export: no usable checkpoint at %s",
        entry.name,
        against,
        checkpoint,
    )
    torch_top1 = (entry.metrics.get("parity") or {}).get("torch_top1")
    recorded_on = entry.metrics.get("val_samples")
    # refused before the ONNX pass, which takes minutes for a multi-crop FP16 graph on a CPU
    if torch_top1 is None or recorded_on != len(val):
        # an export checked on fewer images (--max-val-images) recorded its figure on those: the same check is
        # the one that can be compared with it
        same = ""
        if torch_top1 is not None and recorded_on:
            same = f": it was recorded on {recorded_on}, pass --max-val-images {recorded_on}"
        raise UsageError(
            f"{entry.name}: no checkpoint and no recorded {against} accuracy on the same "
            f"{counted(len(val), 'image')}{same}"
        )
    logits, speed = onnx_logits(classifier, val.images)
    parity = judge(
        entry.precision,
        None,
        softmax(logits),
        val.labels,
        torch_top1,
        float("nan"),
        speed,
        against,
        split_images=source["val_size"],
    )
    return _against_card(parity, entry), _calibration_report(logits, val.labels, temperature)


# How far the card's top-1 may be from a new measurement on the same images: the same file gives the same
# answers on one kind of CPU, and INT8 kernels of another (VNNI, AMX) may move a few images of 5,000.
CARD_TOLERANCE_POINTS = 0.3


def _against_card(parity: Parity, entry: ModelEntry) -> Parity:
    """``parity`` failed too when the card's top-1, which the listing, the card table and /models show, is not
    what the file scores on the same images: the manifest is not hashed, so a figure edited by hand (or left
    from another file) is found only here."""
    claimed, samples = entry.metrics.get("val_top1"), entry.metrics.get("val_samples")
    if claimed is None or samples != parity.samples:
        return parity
    gap = 100 * (parity.onnx_top1 - claimed)
    if abs(gap) > CARD_TOLERANCE_POINTS + 1e-9:  # 15 images of 5,000 is 0.30000000000000004 points
        these = f"{'this' if samples == 1 else 'these'} {counted(samples, 'image')}"
        parity.failures.append(
            f"the manifest says val_top1 {100 * claimed:.2f}% on {these}, the file scores "
            f"{100 * parity.onnx_top1:.2f}% ({gap:+.2f} points, over {CARD_TOLERANCE_POINTS}): the card's figures "
            "are not this file's; export it again to record them"
        )
    return parity
