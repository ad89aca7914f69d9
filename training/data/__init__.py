"""Dataset registry and split loading: ``load_split(name, root, "train"|"val"|"test"|"all")``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from inference.fits import DEFAULT_FIT

from ..registry import Registry
from .arrays import DatasetError, ImageArrays
from .cifar import read_cifar10, read_cifar100
from .folder import read_image_folder
from .split import stratified_split

SPLITS = ("train", "val", "test", "all")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetKind:
    """A registered dataset: its reader, and what training, reports and export know of it without reading it.
    Called as its reader is: ``DATASETS.get(name)(root, train=False, ...)``."""

    name: str
    read: Callable[..., ImageArrays]
    # decoded into the decode cache (data.cache_dir); CIFAR's python batches are read as they are
    cached: bool
    # a separate test split (train=False); a folder dataset is one tree, split into train and val only
    has_test: bool
    # reads every image file under its root: a PNG written there (a run's curves, a report's figures) is read back
    # as an image of it; CIFAR's readers take their batch files by name
    reads_image_files: bool

    def __call__(self, root: str | Path, train: bool = True, **options: Any) -> ImageArrays:
        if not train and not self.has_test:
            raise DatasetError(
                f"a {self.name} dataset has no separate test split: point --data at the test folder and use split 'all'"
            )
        return self.read(root, train=train, **options)


DATASETS: Registry[DatasetKind] = Registry("dataset")


def _dataset(
    name: str, *, cached: bool, has_test: bool, reads_image_files: bool
) -> Callable[[Callable[..., ImageArrays]], DatasetKind]:
    def register(read: Callable[..., ImageArrays]) -> DatasetKind:
        return DATASETS.register(name)(DatasetKind(name, read, cached, has_test, reads_image_files))

    return register


CIFAR_SIZE = 32


def _cifar_size(name: str, image_size: int) -> None:
    # The python batches hold 32x32 arrays and are not resized: another size would be recorded as the
    # model's input while it trained on 32x32, and its export would not take the images it was trained on.
    if image_size != CIFAR_SIZE:
        raise DatasetError(
            f"{name} images are {CIFAR_SIZE}x{CIFAR_SIZE} and are not resized: data.image_size must be "
            f"{CIFAR_SIZE}, not {image_size} (a folder dataset is fitted to any size)"
        )


@_dataset("cifar10", cached=False, has_test=True, reads_image_files=False)
def cifar10(root: str | Path, train: bool = True, image_size: int = CIFAR_SIZE, **_) -> ImageArrays:
    """The python-format CIFAR-10 folder (cifar-10-batches-py)."""
    _cifar_size("cifar10", image_size)
    return read_cifar10(root, train)


@_dataset("cifar100", cached=False, has_test=True, reads_image_files=False)
def cifar100(root: str | Path, train: bool = True, image_size: int = CIFAR_SIZE, **_) -> ImageArrays:
    """The python-format CIFAR-100 folder (cifar-100-python), fine labels."""
    _cifar_size("cifar100", image_size)
    return read_cifar100(root, train)


@_dataset("folder", cached=True, has_test=False, reads_image_files=True)
def folder(
    root: str | Path,
    train: bool = True,
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    fit: str = DEFAULT_FIT,
) -> ImageArrays:
    """A class-per-folder image tree, or a .tar/.tar.gz of one; images of another shape are fitted to
    ``image_size`` square as ``fit`` names (inference.fits), as the service fits them. Only its training split
    reaches it (``has_test``)."""
    return read_image_folder(root, image_size, cache_dir, fit)


def load_split(
    name: str,
    root: str | Path,
    split: str,
    val_size: int = 5000,
    seed: int = 42,
    cache_dir: str | Path | None = None,
    image_size: int = 32,
    fit: str = DEFAULT_FIT,
) -> ImageArrays:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    reader = DATASETS.get(name)
    if split == "test":
        return reader(root, train=False, image_size=image_size, cache_dir=cache_dir, fit=fit)
    full = reader(root, train=True, image_size=image_size, cache_dir=cache_dir, fit=fit)
    if split == "all":
        return full
    train, val = split_train_val(full, val_size, seed, warn=split == "val")
    return train if split == "train" else val


def split_train_val(full: ImageArrays, val_size: int, seed: int, warn: bool = True) -> tuple[ImageArrays, ImageArrays]:
    train_idx, val_idx = stratified_split(full.labels, val_size, seed, full.classes)
    if warn and val_size:
        _warn_unvalidated(full, val_idx)
    return full.subset(train_idx), full.subset(val_idx)


def _warn_unvalidated(full: ImageArrays, val_idx: np.ndarray) -> None:
    """Classes too small for a share of the validation split are trained on and never measured: their recall in
    a report is null, and nothing else would say why."""
    missing = sorted(set(range(len(full.classes))) - set(np.unique(full.labels[val_idx]).tolist()))
    if missing:
        counts = np.bincount(full.labels, minlength=len(full.classes))
        log.warning(
            "no validation image for %s %s (too few images for a share of data.val_size %d): trained on, "
            "never measured; add images to %s or raise data.val_size",
            "class" if len(missing) == 1 else "classes",
            ", ".join(f"{full.classes[c]!r} ({counts[c]} image{'s' if counts[c] != 1 else ''})" for c in missing),
            len(val_idx),
            "it" if len(missing) == 1 else "them",
        )


__all__ = ["DATASETS", "DatasetError", "DatasetKind", "ImageArrays", "load_split", "stratified_split", "SPLITS"]
