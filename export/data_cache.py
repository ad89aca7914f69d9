"""The decode cache an export reads the run's images through: by default the one the run itself used.

No torch here: the command line's --help takes its default from this module.
"""

from __future__ import annotations

import enum
import logging
import os
from pathlib import Path
from typing import Any

from training.dataset_cache import DEFAULT_CACHE_DIR  # --cache-dir's default where no run records one

log = logging.getLogger("export")


class RunsCache(enum.Enum):
    """``cache_dir`` not given: the run's own cache (``export_cache_dir``), as None already means no cache."""

    RUNS = "the run's"


RUNS_CACHE = RunsCache.RUNS


def recorded_cache_dir(ckpt: dict[str, Any]) -> str | None:
    """The cache a checkpoint's run decoded its data into: its configuration's data.cache_dir ("" for none), or for
    an ensemble, which has no configuration, its meta's copy of a member's; None where it records none (a
    checkpoint from before runs recorded one, a recovered network)."""
    data = (ckpt.get("config") or {}).get("data") or {}
    recorded = data["cache_dir"] if "cache_dir" in data else (ckpt.get("meta") or {}).get("cache_dir")
    return recorded if isinstance(recorded, str) else None


def export_cache_dir(cache_dir: str | None | RunsCache, ckpt: dict[str, Any]) -> str | None:
    """``cache_dir`` as given (``--cache-dir``; None or "" for none); by default the run's own, so that a run that
    cached its data on another disk (data.cache_dir) is not decoded and stored a second time on this one.
    DEFAULT_CACHE_DIR where the run records none, or where the folder it records is gone, not a folder or cannot be
    read (warned: an absolute folder that is gone is not made again, as the disk it lay on may no longer be mounted
    there). A relative one stands under the folder the command runs in, as the default does (and as training and
    evaluate read it): made as needed. One that cannot be written is still read: it holds the run's decode, and
    where it must decode again the reader says it cannot keep it. None for a run of a dataset that decodes nothing
    into a cache (the registry's ``cached``: cifar10, cifar100)."""
    if not isinstance(cache_dir, RunsCache):
        return cache_dir
    if not _decodes_into_cache((ckpt.get("meta") or {}).get("dataset")):
        return None  # its cache_dir, if set, was never written: nothing to read, and nothing to warn of
    recorded = recorded_cache_dir(ckpt)
    if recorded == "":
        return None  # the run kept no cache: nor does its export
    if recorded is None or Path(recorded) == Path(DEFAULT_CACHE_DIR):
        return DEFAULT_CACHE_DIR
    if not Path(recorded).is_absolute() and not os.path.lexists(recorded):
        return recorded  # as training makes it: under the folder the command runs in (deleted, or never made here)
    problem = _unusable(Path(recorded))
    if problem:
        log.warning(
            "the run's data cache %s %s: decoding the images into %s instead (--cache-dir to choose another)",
            recorded,
            problem,
            DEFAULT_CACHE_DIR,
        )
        return DEFAULT_CACHE_DIR
    return recorded


def _decodes_into_cache(dataset: Any) -> bool:
    """Whether a run of ``dataset`` decoded its images into a cache (the registry's ``cached``); a name it does not
    hold (a recovered network's, none recorded) is taken to, as the run's recorded cache_dir then decides."""
    from training.data import DATASETS  # numpy and PIL: at export, not at the command line's --help

    return not isinstance(dataset, str) or dataset not in DATASETS or DATASETS.get(dataset).cached


def _unusable(folder: Path) -> str | None:
    if not folder.exists():
        return "is no longer there"
    if not folder.is_dir():
        return "is not a folder"
    # writable or not: training, evaluate and resume read a read-only cache too, decoding only what it lacks
    if not os.access(folder, os.R_OK | os.X_OK):
        return "cannot be read"
    return None
