"""A deterministic, stratified train/validation split.

numpy's PCG64 generator gives the same permutation on every platform and
numpy version that supports it, so "seed 42" names one split everywhere.
"""

from __future__ import annotations

import numpy as np

from inference.messages import counted

from .arrays import DatasetError

NAMED_CLASSES = 5  # classes a refusal names; the count says how many more


class SplitTooLarge(DatasetError):
    """A validation split of at least the dataset's size; worded for training (its setting), which a command
    that holds out the split for another reason words in its own terms (``val_size``, ``images``)."""

    def __init__(self, val_size: int, images: int):
        self.val_size, self.images = val_size, images
        self.suggested = images // 10  # a tenth; 0 (none) under ten images
        super().__init__(
            f"data.val_size {val_size} (the validation split's size; 5000 by default, sized for CIFAR) must be "
            f"smaller than the dataset's {counted(images, 'image')}: give a smaller one"
            + (f", e.g. --set data.val_size={self.suggested} (a tenth)" if self.suggested else "")
            + ", or 0 for none"
        )


def stratified_split(
    labels: np.ndarray, val_size: int, seed: int = 42, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (train_indices, val_indices); each class gets its share of ``val_size``, remainders spread by
    class order. A val_size that must leave some class no training image is refused (``classes`` names it)."""
    labels = np.asarray(labels)
    if not 0 <= val_size < len(labels):
        raise SplitTooLarge(val_size, len(labels))
    present, counts = np.unique(labels, return_counts=True)
    exact = counts * val_size / len(labels)
    per_class = np.floor(exact).astype(int)
    # Largest remainders get the leftover samples, so the total is exactly val_size. A class that would be left
    # with no training image is passed over while another can spare one: it is trained on and never measured,
    # which load_split warns of, where taking its last image would refuse the whole dataset.
    for _ in range(val_size - per_class.sum()):
        spare = per_class + 1 < counts
        remainder = exact - per_class
        per_class[np.argmax(np.where(spare, remainder, -np.inf) if spare.any() else remainder)] += 1
    lost = [int(c) for c, n, n_val in zip(present, counts, per_class) if n_val >= n]
    if lost:
        names = [classes[c] if classes is not None else str(c) for c in lost]
        more = len(names) - NAMED_CLASSES
        listed = ", ".join(names[:NAMED_CLASSES]) + (f" and {more} more" if more > 0 else "")
        # each class keeps one image to train on, and the largest-remainder loop above can give every other one
        most = len(labels) - len(present)
        lower = f"a val_size of at most {most} leaves every class an image" if most else "every class has one image"
        these = "those classes" if len(names) > 1 else "that class"
        raise DatasetError(
            f"val_size {val_size} takes every image of class{'es' if len(names) > 1 else ''} {listed} into "
            f"validation, leaving none to train on: {lower}; lower val_size, or add images to {these}"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    train, val = [], []
    for cls, n_val in zip(present, per_class):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
