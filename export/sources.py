"""Which images an exported model is validated and calibrated on, as its checkpoint or card records them, read
from where the dataset is now: export, verify, rederive and recover all measure on the same split the run held
out, and a source that is not the model's is refused in one line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import UsageError
from inference.fits import LEGACY_FIT, FitName
from inference.messages import counted, validation_problems
from inference.preprocess import to_model_input
from training.data import DatasetError, ImageArrays, load_split
from training.data.split import SplitTooLarge

log = logging.getLogger("export")


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


class _CheckpointData(BaseModel):
    meta: DataSource


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
