"""The in-memory form every dataset reader returns."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.errors import UsageError


class DatasetError(UsageError):
    """A dataset folder or archive is missing or not in the expected format."""


def missing_path_text(path: str | Path) -> str:
    """``path`` as a "does not exist" message names it: a relative one also as where it was looked for,
    since the defaults (``../shared/data/...``) are relative to the repository root, not to wherever the
    command was started."""
    path = Path(path)
    if path.is_absolute():
        return str(path)
    return f"{path} (relative to the current folder {os.getcwd()}: {Path(os.path.abspath(path))})"


@dataclass
class ImageArrays:
    """Images as uint8 [N, H, W, 3] RGB, labels as int64 [N], class names in label order."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise DatasetError(f"images must be uint8 [N, H, W, 3], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels")
        self.labels = self.labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """A digest of the images and labels in order: reports pair only on equal ones, and a run resumes only
        on the images it started on."""
        digest = hashlib.sha256()
        digest.update(str(self.images.shape).encode())
        digest.update(np.ascontiguousarray(self.images).tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()

    def subset(self, indices: np.ndarray) -> "ImageArrays":
        return ImageArrays(self.images[indices], self.labels[indices], self.classes)
