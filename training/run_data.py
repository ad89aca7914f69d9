"""The images a run trains and validates on, read as its configuration says; the refusal of data no classifier can
learn from; their normalisation statistics; and what a checkpoint records of them, which a resume must find again."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import UsageError
from inference.messages import counted

from .config import Config, ConfigError
from .data import DatasetError, ImageArrays, load_split, split_train_val
from .data.split import SplitTooLarge
from .distributed import launched_processes
from .run_length import refuse, run_length_problems

log = logging.getLogger("training")

# A channel that (nearly) never changes carries nothing to normalise: dividing by its std would only blow up
# the rounding noise, or divide by zero, and the run would diverge at any learning rate.
MIN_CHANNEL_STD = 1e-3

# What a run's checkpoint records of its data that the same data gives again (``check_same_data``).
DATA_KEYS = ("classes", "mean", "std", "input_size", "data_fingerprint")


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale (std 1 for a constant channel)."""
    flat = images.reshape(-1, 3).astype(np.float64) / 255.0
    std = [s if s >= MIN_CHANNEL_STD else 1.0 for s in flat.std(0).round(4).tolist()]
    return flat.mean(0).round(4).tolist(), std


def load_data(
    config: Config, world_size: int | None = None, started_on: dict[str, Any] | None = None, run: str | Path = ""
) -> tuple[ImageArrays, ImageArrays | None]:
    """The training and validation splits ``config`` names, or one refusal of every problem found with them
    (``split_data``). ``started_on``: the checkpoint meta of run folder ``run``, which a resume goes on from."""
    return split_data(config, read_data(config), world_size, started_on, run)


def read_data(config: Config) -> ImageArrays:
    """Every image of ``config``'s dataset, before it is split."""
    d = config.data
    return load_split(d.dataset, d.root, "all", cache_dir=d.cache_dir, image_size=d.image_size, fit=d.fit)


def read_key(config: Config) -> tuple:
    """What ``read_data`` reads ``config``'s images with: configurations with the same key (an ablation's
    variants of ``data.val_size``) read the same images."""
    d = config.data
    return (d.dataset, d.root, d.image_size, d.fit, d.cache_dir)


def split_data(
    config: Config,
    full: ImageArrays,
    world_size: int | None = None,
    started_on: dict[str, Any] | None = None,
    run: str | Path = "",
) -> tuple[ImageArrays, ImageArrays | None]:
    """``full`` split as ``config`` says. Where that split cannot be trained on (a validation split of at least
    the dataset, one class), the refusal says every problem known from the images at once: the settings that
    fit the number of images (``run_length``) too, each measured on the split the lines' values would make,
    so that the next start does not wait for the data again only to meet the next. ``world_size``: the
    processes that share the training split (torchrun's, by default). ``started_on``: the checkpoint meta of the
    run in folder ``run`` that this split resumes, whose settings split its data once: where they cannot now,
    the data changed, and that alone is said (the settings the other lines would change are the run's own,
    which a resume keeps)."""
    d = config.data
    problems: list[UsageError] = []
    train: ImageArrays = full
    val: ImageArrays | None = None
    images, split = len(full), ""
    if d.val_size == 0:
        log.warning(
            "data.val_size 0: no validation split, so the best epoch is ranked by training accuracy and the run "
            "cannot be exported (python -m export checks the graph against the checkpoint on held-out images)"
        )
    else:
        try:
            # the classes the split leaves unmeasured were said when the run started: a resume keeps its split
            train, val = split_train_val(full, d.val_size, d.split_seed, warn=started_on is None)
            images = len(train)
        except SplitTooLarge as exc:
            problems.append(exc)
            images, split = exc.images - exc.suggested, f"data.val_size {exc.suggested} would leave"
        except DatasetError as exc:  # a class whose every image the split would take
            problems.append(exc)
            # The largest val_size the refusal allows (each class keeps one image; 0 where every class has
            # one): a batch that fits what it leaves fits whichever allowed val_size is chosen.
            most = len(full) - len(np.unique(full.labels))
            images, split = len(full) - most, f"data.val_size {most} would leave"
    unsplit = bool(problems)
    problems += trainable_problems(full, d.root)
    if problems and started_on is not None:
        changes = data_changes(started_on, {"classes": full.classes, "input_size": int(full.images.shape[1])})
        if unsplit:
            changes.append(f"{counted(len(full), 'image')} now, too few for its validation split of {d.val_size}")
        raise OtherData(run, d.root, changes or ["other images"])
    if problems:
        processes = launched_processes() if world_size is None else world_size
        refuse([*problems, *run_length_problems(config, images, processes, split)])
    return train, val


def trainable_problems(data: ImageArrays, root: str) -> list[UsageError]:
    """Why no classifier can learn from ``data``, if it cannot."""
    if len(data.classes) < 2:
        return [
            DatasetError(
                f"{root} holds {len(data.classes)} class ({', '.join(data.classes)}): a classifier needs images in "
                "at least two class folders"
            )
        ]
    return []


def check_trainable(train: ImageArrays, val: ImageArrays | None, root: str) -> None:
    """Refuse data no classifier can learn from; warn where the validation split takes most of it."""
    refuse(trainable_problems(train, root))
    if val is not None and len(val) > len(train):
        log.warning(
            "the validation split (val_size %d) is larger than what is left to train on (%s): lower "
            "data.val_size for a dataset of this size",
            len(val),
            counted(len(train), "image"),
        )


class OtherData(ConfigError):
    """A run resumed on other data than it started on: classes added or renamed would shift every label (or not
    fit the network's head), and images added, removed or edited change the normalisation it keeps."""

    def __init__(self, run: str | Path, root: str, changes: list[str]) -> None:
        super().__init__(
            f"{run} was trained on other data than {root} holds now ({'; '.join(changes)}): it cannot be continued; "
            "restore the data, or start a new run in another folder"
        )


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How the data a run's checkpoint meta ``saved`` records differs from ``now``'s, on the keys both hold."""
    return [
        "other images, or another split of them" if key == "data_fingerprint" else f"{key} {saved[key]} -> {now[key]}"
        for key in DATA_KEYS
        if key in saved and key in now and saved[key] != now[key]
    ]


def check_same_data(run: str | Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse (``OtherData``) to continue run ``run``, whose checkpoint meta is ``saved``, on data whose meta
    ``now`` differs from it."""
    changes = data_changes(saved, now)
    if changes:
        raise OtherData(run, now["data_root"], changes)


def recorded_data(config: Config) -> dict[str, Any]:
    """What a run's checkpoint records of where its data comes from and how it is split, known from the config
    before any image is read (an ensemble recipe checks its members' against each other with it)."""
    d = config.data
    return {"fit": d.fit, "dataset": d.dataset, "data_root": d.root, "val_size": d.val_size, "split_seed": d.split_seed}
