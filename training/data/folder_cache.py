"""The folder reader's decode cache (training.data.folder).

Decoded images are cached as one .npz per source and settings, because decoding 50,000 JPEGs costs seconds and
every run needs them. The key is what the images are (each file's name, size and mtime; an archive's size, mtime,
head and tail), not where they are, so a folder moved or renamed keeps its cache; a new decode of a source replaces
the one before it.
"""

from __future__ import annotations

import glob
import hashlib
import importlib
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import PIL
from PIL import features

from inference.files import file_in_the_way, parse_temporary, write_atomic, writer_may_run
from inference.messages import exception_summary

from .arrays import DatasetError, ImageArrays

# In the cache key: a cache written by a reader that chose other files or named classes otherwise (hidden folders,
# the image extensions, Unicode forms) is not this reader's.
READER_VERSION = 3
# Also in the key: what turns a file into pixels, the shared decoder's code and the libraries under it. A cache decoded
# before an edit to it or a Pillow upgrade would train on pixels that the service no longer computes.
DECODER_MODULES = (
    "inference.preprocess",
    "inference.image_formats",
    "inference.image_limits",
    "inference.pixel_modes",
    "inference.fits",
)
DECODER_LIBRARIES = ("jpg", "zlib", "webp", "libtiff")

log = logging.getLogger("training.data.folder")  # the folder reader's one name to print and filter by


def _read_cache(
    cache: Path, image_size: int, expected: tuple[int, list[str]] | None
) -> tuple[ImageArrays, list[str]] | None:
    """The cached arrays and, for an archive (``expected`` None), what its decode left out, said without the
    archive's name; or None (with a warning) where the file is damaged or cannot be this source's decode:
    another image size, labels outside the classes, classes not sorted, or (``expected``, for a tree) another
    number of images or other classes than the tree holds. A cache is decoded again, never a reason to stop."""
    try:
        with np.load(cache, allow_pickle=False) as npz:
            if expected is None and "left_out" not in npz.files:
                # written by a reader that kept no record of what it left out: only a decode can say it again
                log.info("the dataset cache %s does not say what its archive left out: decoding it again", cache)
                return None
            arrays = ImageArrays(npz["images"], npz["labels"], [str(c) for c in npz["classes"]])
            left_out = [str(text) for text in npz["left_out"]] if expected is None else []
        _check_cached(arrays, image_size, expected)
        return arrays, left_out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("the dataset cache %s is damaged (%s): decoding the images again", cache, exception_summary(exc))
        return None


def _check_cached(arrays: ImageArrays, image_size: int, expected: tuple[int, list[str]] | None) -> None:
    size = arrays.images.shape[1:3]
    if size != (image_size, image_size):
        raise ValueError(f"its images are {size[1]}x{size[0]}, not {image_size}x{image_size}")
    classes, labels = arrays.classes, arrays.labels
    if classes != sorted(set(classes)) or not len(labels) or labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"its {len(labels)} labels do not index its {len(classes)} classes, sorted")
    if expected is not None and (len(arrays), classes) != expected:
        count, names = expected
        raise ValueError(
            f"it holds {len(arrays)} images of {len(classes)} classes, the folder {count} images of {len(names)}"
        )


# Cache folders already said to be unusable: training reads the source once per split, and would say it twice.
_said_unwritable: set[str] = set()


def _writable(folder: Path) -> bool:
    """Whether a cache can be written in ``folder``; where not, a warning, once. Not a refusal: the cache changes
    no result, and the same configuration (a default folder relative to where it runs, a resumed run, an export
    re-reading its data) must still run where the folder cannot be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError as exc:
        _unwritable(folder, exc)
        return False


def _unwritable(folder: Path, exc: OSError) -> None:
    if str(folder) in _said_unwritable:
        return
    _said_unwritable.add(str(folder))
    in_the_way = file_in_the_way(folder)
    reason = f"{in_the_way} is a file" if in_the_way else (exc.strerror or type(exc).__name__).lower()
    log.warning(
        "could not write the dataset cache in %s (%s): the images are decoded again at every read; give the "
        "cache another folder (data.cache_dir)",
        folder,
        reason,
    )


def _write_cache(cache: Path, arrays: ImageArrays, left_out: list[str]) -> None:
    """Written atomically (a temporary file of this process and host, removed on any failure, then renamed:
    torchrun ranks, on one host or on several sharing the folder, may cache the same source at once); then the
    source's earlier decodes with the same settings, and temporary files that killed writers left, are removed.
    A cache that cannot be written (a full disk) only costs a decode. ``left_out``: what an archive's decode said
    it left out, said again at each cached read (a tree's walk finds it again)."""
    try:
        write_atomic(
            cache,
            lambda f: np.savez(
                f,
                images=arrays.images,
                labels=arrays.labels,
                classes=np.array(arrays.classes),
                left_out=np.array(left_out, dtype=str),
            ),
            shared=True,
        )
    except OSError as exc:
        _unwritable(cache.parent, exc)
        return
    log.info("decoded images kept for the next runs in %s (%.1f MB)", cache, cache.stat().st_size / 1e6)
    _remove_superseded(cache)


def _remove_superseded(cache: Path) -> None:
    """The same source's caches with the same settings but other contents (images added or edited since, another
    decoder), and the temporary files of writers no longer running (another host's: unwritten for a day, as its
    pid cannot be looked up here): without it the folder only grows."""
    source = _source_of(cache.name)
    for old in cache.parent.glob(f"{glob.escape(source)}-*.npz*"):
        if old != cache and _source_of(old.name) == source and not writer_may_run(old):
            try:
                old.unlink()
            except OSError:
                pass  # another run removed it, or the folder is shared read-only: it only takes room


def _source_of(name: str) -> str:
    """``<folder name>-<place and settings>`` of a cache's file name (its temporary file's too: the cache it
    becomes, a host name's dashes left out)."""
    temporary = parse_temporary(name)
    return (temporary.target if temporary else name).rsplit("-", 1)[0]


def _cache_path(root: Path, image_size: int, fit: str, cache_dir: str | Path, images: list[Path] | None) -> Path:
    """``<folder name>-<place and settings>-<contents>.npz``: the first two name the caches a new decode replaces;
    the contents (and settings) find the cache of the same images read from another place."""
    settings = f"{image_size}|{READER_VERSION}|{fit}"
    place = _digest(f"{root.resolve()}|{settings}")[:8]
    contents = _digest(
        f"{settings}|{_decoder_key()}|{_archive_key(root) if images is None else _tree_key(root, images)}"
    )
    folder = Path(cache_dir)
    named = folder / f"{_cache_stem(root)}-{place}-{contents[:16]}.npz"
    if named.is_file() or not folder.is_dir():
        return named
    moved = sorted(folder.glob(f"*-{contents[:16]}.npz"))
    return moved[0] if moved else named


def _folder_name(root: Path) -> str:
    """The name ``root`` is known by in the cache's file name and the progress bar: ``data.root=.`` or ``..`` names
    the folder it stands for (its own name would make a cache file named ``-...`` or a hidden ``..-...``); a
    symlink's own name, not its target's."""
    return Path(os.path.abspath(root)).name or "root"


# The most bytes of the folder's name a cache's file name keeps: the name, its digests and the temporary file's
# pid and host (inference.files.temporary_path: a host name is at most 64 bytes) must fit a file system's 255, and
# the digests, not the name, tell one source from another.
CACHE_NAME_BYTES = 120


def _cache_stem(root: Path) -> str:
    """``_folder_name`` cut to ``CACHE_NAME_BYTES`` on a whole character: a long folder name would make the cache's
    temporary file's name too long to create, and every run would decode again."""
    kept, size = [], 0
    for char in _folder_name(root):
        size += len(os.fsencode(char))
        if size > CACHE_NAME_BYTES:
            break
        kept.append(char)
    return "".join(kept)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()


def _tree_key(root: Path, images: list[Path]) -> str:
    """Every image's path under ``root``, size and mtime: a tree's own mtime misses edits inside it, and its place
    is not what it holds."""
    digest = hashlib.sha1()
    for path in images:
        stat = path.stat()
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + f":{stat.st_size}:{stat.st_mtime_ns}|".encode())
    return digest.hexdigest()


ARCHIVE_SAMPLE = 1 << 20  # bytes hashed at each end: a gzip's last 8 are the CRC and length of all it holds


def _archive_key(root: Path) -> str:
    """An archive's size, mtime and first and last bytes: hashing a photo archive of gigabytes on every run
    would cost what the cache saves."""
    stat = root.stat()
    digest = hashlib.sha1(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    try:
        with open(root, "rb") as f:
            digest.update(f.read(ARCHIVE_SAMPLE))
            f.seek(max(0, stat.st_size - ARCHIVE_SAMPLE))
            digest.update(f.read(ARCHIVE_SAMPLE))
    except OSError as exc:
        raise DatasetError(f"cannot read archive {root}: {(exc.strerror or type(exc).__name__).lower()}") from exc
    return digest.hexdigest()


def _decoder_key() -> str:
    digest = hashlib.sha1()
    for name in DECODER_MODULES:
        digest.update(Path(importlib.import_module(name).__file__ or name).read_bytes())
    versions = [PIL.__version__, *(str(features.version(library)) for library in DECODER_LIBRARIES)]
    digest.update("|".join(versions).encode())
    return digest.hexdigest()
