"""Readers for the python-format CIFAR folders that torchvision uses.

No download is attempted: this product runs where the internet is not, so a
missing folder is an error that says what was expected where.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .arrays import DatasetError, ImageArrays, missing_path_text

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"


def _locate(root: str | Path, folder: str) -> Path:
    root = Path(root)
    for candidate in (root / folder, root):
        if candidate.name == folder and candidate.is_dir():
            return candidate
    raise DatasetError(
        f"expected the python-format folder {folder!r} at {missing_path_text(root / folder)} (or {root} itself); "
        "download and unpack the dataset there first (no download is attempted)"
    )


# What the python-format batches hold besides dicts, lists, strings and numbers: numpy arrays, written by numpy's
# pickling of any version and protocol (Python 2's strings come back through _codecs.encode). Nothing else is
# looked up while reading, so a batch file of unknown origin cannot run code as pickle.load would let it.
_BATCH_GLOBALS = frozenset(
    [
        *(
            (module, name)
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
            for name in ("_reconstruct", "scalar")
        ),
        *((module, "_frombuffer") for module in ("numpy.core.numeric", "numpy._core.numeric")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    ]
)


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _BATCH_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which no CIFAR batch holds (not loaded)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"missing file {path}")
    try:
        with path.open("rb") as f:
            return _BatchUnpickler(f, encoding="latin1").load()
    except Exception as exc:  # a truncated or foreign file: say which one
        raise DatasetError(f"cannot read {path}: {exc}") from exc


def _to_arrays(batches: list[dict], label_key: str, classes: list[str], source: Path) -> ImageArrays:
    try:
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    except (KeyError, ValueError) as exc:
        raise DatasetError(f"{source}: batch files lack a valid 'data'/{label_key!r} entry ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{source}: expected rows of 3072 pixels, got shape {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return ImageArrays(images, labels, classes)


def read_cifar10(root: str | Path, train: bool = True) -> ImageArrays:
    folder = _locate(root, CIFAR10_DIR)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    classes = list(_unpickle(folder / "batches.meta")["label_names"])
    return _to_arrays([_unpickle(folder / n) for n in names], "labels", classes, folder)


def read_cifar100(root: str | Path, train: bool = True) -> ImageArrays:
    folder = _locate(root, CIFAR100_DIR)
    classes = list(_unpickle(folder / "meta")["fine_label_names"])
    return _to_arrays([_unpickle(folder / ("train" if train else "test"))], "fine_labels", classes, folder)
