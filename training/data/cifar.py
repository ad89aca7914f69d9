"""Readers for the python-format CIFAR folders that torchvision uses.

No download is attempted: this product runs where the internet is not, so a
missing folder is an error that says what was expected where.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from inference.image_formats import is_image_name
from inference.messages import exception_summary

from .arrays import DatasetError, ImageArrays, missing_path_text

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"


# The file each python-format folder holds whatever it is called: a copy renamed ("cifar10") is still one.
_META = {CIFAR10_DIR: "batches.meta", CIFAR100_DIR: "meta"}
_DATASETS = {CIFAR10_DIR: "cifar10", CIFAR100_DIR: "cifar100"}
# The first file of CIFAR's binary release (its .tar.gz unpacked, or the folder it unpacks into), which
# torchvision does not read either: a likely download of the wrong one of the three formats.
_BINARY_FILES = tuple(
    f"{folder}{name}"
    for folder in ("", "cifar-10-batches-bin/", "cifar-100-binary/")
    for name in ("data_batch_1.bin", "train.bin")
)
# How far below data.root a class-per-folder tree's first image is looked for (the shared archive, unpacked, keeps
# it at cifar10/train/<class>/<image>), and how many entries are looked at: the look serves only a refusal's hint.
_IMAGE_DEPTH = 4
_IMAGE_LOOK = 5000


def _is_folder(path: Path, folder: str) -> bool:
    return path.is_dir() and (path.name == folder or (path / _META[folder]).is_file())


def _locate(root: str | Path, folder: str) -> Path:
    root = Path(root)
    for candidate in (root / folder, root):
        if _is_folder(candidate, folder):
            return candidate
    raise DatasetError(
        f"expected the python-format folder {folder!r} (or a folder holding its {_META[folder]!r}) at "
        f"{missing_path_text(root / folder)} or {root} itself; " + _locate_hint(root, folder)
    )


def _locate_hint(root: Path, folder: str) -> str:
    """What to do instead: a root that holds the other CIFAR (their names differ by a digit), a class-per-folder
    tree of images or an archive (the default data.root is the folder dataset's .tar.gz) is a likelier mistake than
    a missing download."""
    for other, dataset in _DATASETS.items():
        if other == folder:
            continue
        if root.name == other or (root / other).is_dir():
            where = "is" if root.name == other else "holds"
            return (
                f"{root} {where} {other!r}, the python-format {dataset}: data.dataset={dataset} (--dataset {dataset})"
            )
        if _is_folder(root, other):
            return (
                f"{root} holds {_META[other]!r}, as the python-format {dataset}'s folder does: data.dataset={dataset} "
                f"(--dataset {dataset})"
            )
    if root.is_file():
        if _is_folder(root.parent, folder):
            return f"{root} is a file of the python-format folder: give the folder, data.root={root.parent}"
        return (
            f"{root} is a file: unpack a downloaded python-format archive and give the folder it holds; "
            "a .tar.gz of class folders is read by data.dataset=folder (--dataset folder)"
        )
    binary = next((path for path in _BINARY_FILES if (root / path).is_file()), None)
    if binary is not None:
        return (
            f"{root} holds {binary}, of CIFAR's binary release, which is not read: download the python version "
            "(cifar-10-python.tar.gz, cifar-100-python.tar.gz) and unpack it there"
        )
    image = _an_image(root)
    if image is not None:
        return (
            f"{root} holds images ({image.relative_to(root)}): a class-per-folder tree of images is read by "
            "data.dataset=folder (--dataset folder)"
        )
    return "download and unpack the dataset there first (no download is attempted)"


def _an_image(root: Path) -> Path | None:
    """An image file at most ``_IMAGE_DEPTH`` folders below ``root``, if one is found among its first entries."""
    looked = 0
    for here, folders, files in os.walk(root):
        depth = len(Path(here).relative_to(root).parts)
        # sorted, so that the image named is the same at every start
        folders[:] = [] if depth >= _IMAGE_DEPTH else sorted(folders)
        for name in sorted(files):
            if is_image_name(name):
                return Path(here) / name
        looked += len(files) + len(folders)
        if looked > _IMAGE_LOOK:
            return None
    return None


def _needed(folder: Path, names: list[str], dataset: str) -> list[Path]:
    """``folder``'s files ``names``, refused at once with every one missing: an unpacking cut short (a full disk,
    an interrupted copy) would otherwise be found one file at a time, after the others were read."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DatasetError(
            f"{folder} lacks {', '.join(missing)} of the python-format {dataset} (it needs {', '.join(names)}): "
            "unpack the downloaded archive again"
        )
    return [folder / name for name in names]


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


class _ForeignGlobal(pickle.UnpicklingError):
    """A batch that names what no CIFAR batch holds (not a damaged one: unpacking it again would not help)."""


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _BATCH_GLOBALS:
            raise _ForeignGlobal(f"it refers to {module}.{name}, which no CIFAR batch holds (not loaded)")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[str, Any]:
    """The batch's dict with text keys: Python 2's strings come back as str under latin1, as torchvision reads
    them, but a batch re-pickled after a load with encoding='bytes' holds bytes keys."""
    try:
        with path.open("rb") as f:
            batch = _BatchUnpickler(f, encoding="latin1").load()
    except _ForeignGlobal as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # pickle's errors for a file cut short or not a pickle at all
        raise DatasetError(
            f"cannot read {path} ({exception_summary(exc)}): it is damaged or cut short, or not a python-format "
            "CIFAR file; unpack the downloaded archive again"
        ) from exc
    if not isinstance(batch, dict):
        raise DatasetError(f"{path} is not a python-format CIFAR file: it holds a {type(batch).__name__}, not a dict")
    return {key.decode("latin1") if isinstance(key, bytes) else str(key): value for key, value in batch.items()}


def _name(name: str | bytes) -> str:
    """A class name a re-pickled batch holds as bytes: UTF-8 where it is, else latin1, as Python 2's strings read."""
    if isinstance(name, str):
        return name
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return name.decode("latin1")


def _entry(batch: dict[str, Any], key: str, path: Path) -> Any:
    if key not in batch:
        found = ", ".join(repr(k) for k in batch) or "nothing"
        raise DatasetError(f"{path} has no {key!r} entry (it holds {found}): not this dataset's file")
    return batch[key]


def _class_names(path: Path, key: str) -> list[str]:
    names = _entry(_unpickle(path), key, path)
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise DatasetError(f"{path}: {key!r} must be a list of class names, got {type(names).__name__}")
    classes = [_name(n) for n in names]
    repeated = sorted({n for n in classes if classes.count(n) > 1})
    if repeated:
        raise DatasetError(f"{path}: {key!r} names {', '.join(map(repr, repeated))} more than once")
    return classes


def _column(values: object, dtype: type, high: int, what: str, path: Path) -> np.ndarray:
    """``values`` as ``dtype``, refused unless every one is a whole number in [0, high]: numpy's cast would wrap
    256 to 0 and cut 2.5 to 2, training on labels and pixels the file does not hold."""
    try:
        array = np.asarray(values)
    except ValueError as exc:
        raise DatasetError(f"{path}: its {what} are not an array ({exc})") from exc
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise DatasetError(f"{path}: its {what} must be whole numbers, got fractions")
    if array.dtype.kind not in "iuf":
        raise DatasetError(f"{path}: its {what} must be whole numbers, got {array.dtype} values")
    if array.size and not (array.min() >= 0 and array.max() <= high):
        raise DatasetError(f"{path}: its {what} must lie in [0, {high}], got {array.min()} to {array.max()}")
    return array.astype(dtype, copy=False)


def _read_batch(path: Path, label_key: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data = _column(_entry(batch, "data", path), np.uint8, 255, "pixels", path)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: expected rows of 3072 pixels, got shape {data.shape}")
    # a label past the class list would fail the loss mid-run (a CUDA assert on a GPU), or train a nameless class
    labels = _column(
        _entry(batch, label_key, path),
        np.int64,
        len(classes) - 1,
        f"labels ({label_key!r}, of {len(classes)} named classes)",
        path,
    )
    if labels.shape != (len(data),):
        raise DatasetError(f"{path}: {len(data)} images but {label_key!r} holds shape {labels.shape}")
    return data, labels


def _to_arrays(paths: list[Path], label_key: str, classes: list[str]) -> ImageArrays:
    batches = [_read_batch(path, label_key, classes) for path in paths]
    data = np.concatenate([data for data, _ in batches])
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return ImageArrays(images, np.concatenate([labels for _, labels in batches]), classes)


def read_cifar10(root: str | Path, train: bool = True) -> ImageArrays:
    batches = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return _read_folder(_locate(root, CIFAR10_DIR), CIFAR10_DIR, "label_names", "labels", batches)


def read_cifar100(root: str | Path, train: bool = True) -> ImageArrays:
    batches = ["train" if train else "test"]
    return _read_folder(_locate(root, CIFAR100_DIR), CIFAR100_DIR, "fine_label_names", "fine_labels", batches)


def _read_folder(folder: Path, kind: str, names_key: str, label_key: str, batches: list[str]) -> ImageArrays:
    meta = folder / _META[kind]
    # the class names first, where their file is there: one of another dataset (or no CIFAR file) is the first
    # thing to fix, before any batch that is missing
    classes = _class_names(meta, names_key) if meta.is_file() else []
    paths = _needed(folder, [meta.name, *batches], _DATASETS[kind])[1:]
    return _to_arrays(paths, label_key, classes)
