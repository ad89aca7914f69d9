"""The images a run trains and validates on, read as its configuration says; the refusal of data no classifier can
learn from; their normalisation statistics; and what a checkpoint records of where they come from."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .config import Config
from .data import DatasetError, ImageArrays, load_split, load_train_val

log = logging.getLogger("training")

# A channel that (nearly) never changes carries nothing to normalise: dividing by its std would only blow up
# the rounding noise, or divide by zero, and the run would diverge at any learning rate.
MIN_CHANNEL_STD = 1e-3


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale (std 1 for a constant channel)."""
    flat = images.reshape(-1, 3).astype(np.float64) / 255.0
    std = [s if s >= MIN_CHANNEL_STD else 1.0 for s in flat.std(0).round(4).tolist()]
    return flat.mean(0).round(4).tolist(), std


def load_data(config: Config) -> tuple[ImageArrays, ImageArrays | None]:
    d = config.data
    if d.val_size == 0:
        log.warning(
            "data.val_size 0: no validation split, so the best epoch is ranked by training accuracy and the run "
            "cannot be exported (python -m export checks the graph against the checkpoint on held-out images)"
        )
        return load_split(d.dataset, d.root, "all", cache_dir=d.cache_dir, image_size=d.image_size, fit=d.fit), None
    return load_train_val(
        d.dataset, d.root, d.val_size, d.split_seed, cache_dir=d.cache_dir, image_size=d.image_size, fit=d.fit
    )


def check_trainable(train: ImageArrays, val: ImageArrays | None, root: str) -> None:
    """Refuse data no classifier can learn from; warn where the validation split takes most of it."""
    if len(train.classes) < 2:
        raise DatasetError(
            f"{root} holds {len(train.classes)} class ({', '.join(train.classes)}): a classifier needs images in at "
            "least two class folders"
        )
    if val is not None and len(val) > len(train):
        log.warning(
            "the validation split (val_size %d) is larger than what is left to train on (%d images): lower "
            "data.val_size for a dataset of this size",
            len(val),
            len(train),
        )


def recorded_data(config: Config) -> dict[str, Any]:
    """What a run's checkpoint records of where its data comes from and how it is split, known from the config
    before any image is read (an ensemble recipe checks its members' against each other with it)."""
    d = config.data
    return {"fit": d.fit, "dataset": d.dataset, "data_root": d.root, "val_size": d.val_size, "split_seed": d.split_seed}
