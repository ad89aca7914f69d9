"""The PyTorch reference of an export: a checkpoint's logits on the validation images, with its test-time
augmentation, kept on disk so that every precision exported from one checkpoint and each later verification
share one PyTorch pass. With multi-crop TTA on a wide network that pass is most of an export's time.

An entry is found only by everything the logits depend on: the checkpoint's bytes, the TTA, the images' bytes,
the torch version and ``REFERENCE_VERSION``."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from inference.files import write_atomic

log = logging.getLogger("export")

# Bump when the computation behind the logits changes (how TTA views are averaged, the input preprocessing),
# so that entries written by older code are never read as the new reference.
REFERENCE_VERSION = 1
DEFAULT_FOLDER = ".cache/reference_logits"


def reference_key(checkpoint_sha256: str, tta: str, images: np.ndarray) -> dict:
    return {
        "version": REFERENCE_VERSION,
        "checkpoint_sha256": checkpoint_sha256,
        "tta": tta,
        "images_sha256": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest(),
        "images_shape": list(images.shape),
        "torch": torch.__version__,
    }


class ReferenceCache:
    """``folder`` None: nothing is kept, every call computes."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None
        self.hits = 0

    @staticmethod
    def _path(folder: Path, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return folder / f"{digest}.npz"

    def logits(
        self,
        checkpoint_sha256: str,
        tta: str,
        images: np.ndarray,
        compute: Callable[[], tuple[np.ndarray, float]],
    ) -> tuple[np.ndarray, float]:
        """float64 logits and the PyTorch images/s they were computed at: from the folder when an entry with
        the same key is there, else from ``compute()``, then stored."""
        if self.folder is None:
            return compute()
        key = reference_key(checkpoint_sha256, tta, images)
        path = self._path(self.folder, key)
        found = self._read(path, key, len(images))
        if found is not None:
            self.hits += 1
            log.info("PyTorch reference logits from %s (same checkpoint, TTA and images)", path)
            return found
        logits, speed = compute()
        self._write(path, key, logits, speed)
        return logits, speed

    @staticmethod
    def _read(path: Path, key: dict, count: int) -> tuple[np.ndarray, float] | None:
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = json.loads(str(data["key"]))
                logits = data["logits"]
                speed = float(data["images_per_s"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("ignoring unreadable reference logits %s (%s): recomputing", path, exc)
            return None
        if stored != key or logits.ndim != 2 or len(logits) != count or logits.dtype != np.float64:
            log.warning("ignoring reference logits %s: written for other inputs; recomputing", path)
            return None
        return logits, speed

    def _write(self, path: Path, key: dict, logits: np.ndarray, speed: float) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # an interrupted export leaves no half entry to be read later
            write_atomic(
                path, lambda f: np.savez(f, logits=logits.astype(np.float64), images_per_s=speed, key=json.dumps(key))
            )
        except OSError as exc:
            log.warning("could not keep the reference logits in %s (%s); the export goes on", path.parent, exc)
