"""Class-per-folder image trees, as a directory or straight from a .tar/.tar.gz archive.

Where a read starts and where its images are decoded: the listing (folder_tree, folder_archive), the layout's
checks and warnings (folder_layout) and the decode cache (folder_cache) each have a module of their own.
"""

from __future__ import annotations

import logging
import unicodedata
from pathlib import Path, PurePosixPath
from typing import Iterable

import numpy as np
from tqdm import tqdm

from inference.classes import folded
from inference.fits import DEFAULT_FIT
from inference.image_limits import ImageDecodeError
from inference.messages import counted
from inference.preprocess import decode_image
from inference.tree_files import ARCHIVE_SUFFIXES, is_tar_archive

from .arrays import DatasetError, ImageArrays, missing_path_text
from .folder_archive import _archive_layout, _iter_archive
from .folder_cache import _cache_path, _folder_name, _read_cache, _writable, _write_cache
from .folder_layout import _beside_text, _check_names, _listed, _no_images, _warn_archive_left_out, _warn_left_out
from .folder_tree import _class_name, _iter_tree, _tree_images

# The user's own files, not uploads: larger photos than the service takes (a 48-megapixel phone photo) are
# decoded, a JPEG at a reduced size (inference.preprocess); the limit only guards memory.
MAX_PIXELS = 250_000_000

log = logging.getLogger(__name__)


def read_image_folder(
    root: str | Path, image_size: int = 32, cache_dir: str | Path | None = None, fit: str = DEFAULT_FIT
) -> ImageArrays:
    """Every image under ``root`` decoded the way the service decodes it (``inference.preprocess``),
    fitted to ``image_size`` square as ``fit`` names."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"image folder or archive {missing_path_text(root)} does not exist")
    archive = root.is_file()
    if archive and not is_tar_archive(root):
        raise DatasetError(
            f"{root} is a file, not a folder of class folders or a tar archive of one "
            f"({', '.join(ARCHIVE_SUFFIXES)}; .zip is not read: unpack it, or pack it as .tar.gz)"
        )
    images, others, hidden = (None, [], []) if archive else _tree_images(root)  # walked once: for the key and reading
    if images is not None:
        _warn_left_out(root, images, others, hidden)  # on every read, a cached one too
    cache = _cache_path(root, image_size, fit, cache_dir, images) if cache_dir else None
    if images is not None:  # in the order the images are kept in, so each is written to its place as it is read
        in_classes = [path for path in images if len(path.relative_to(root).parts) >= 2]
        loose, images = len(images) - len(in_classes), in_classes
        images.sort(key=lambda path: _sort_key(path.relative_to(root).as_posix()))
        _check_names([path.relative_to(root).as_posix() for path in images], root, loose, hidden)
    if cache and cache.is_file():
        expected = None if images is None else (len(images), _classes_of(root, images))
        cached = _read_cache(cache, image_size, expected)
        if cached is not None:
            for text in cached[1]:  # an archive's, kept in its cache: not listed again without a decode
                _warn_archive_left_out(root, text)
            _warn_case_only(root, cached[0].classes)
            return cached[0]
    if cache and not _writable(cache.parent):  # said before the decode, which may take minutes
        cache = None
    left_out: list[str] = []
    entries = _iter_archive(root, left_out) if images is None else _iter_tree(root, images)
    try:
        arrays = _decode_all(entries, root, image_size, fit, None if images is None else len(images), left_out)
    finally:  # an archive's, said once its progress bar is closed, before an error that its decode may raise
        for text in left_out:
            _warn_archive_left_out(root, text)
    if cache:
        _write_cache(cache, arrays, left_out)
    _warn_case_only(root, arrays.classes)
    return arrays


_said_case_only: set[tuple] = set()


def _warn_case_only(root: Path, classes: list[str]) -> None:
    """Class folders whose names differ only in case (``Cat/`` beside ``cat/``, two sources merged on Linux) are
    two classes, which no network can tell apart; and the scorer, matching a folder to a class ignoring case,
    would count a ``CAT/`` folder as the first of them only."""
    groups: dict[str, list[str]] = {}
    for name in classes:
        groups.setdefault(folded(name), []).append(name)
    same = [names for names in groups.values() if len(names) > 1]
    said = (str(root.resolve()), tuple(classes))
    if not same or said in _said_case_only:
        return
    _said_case_only.add(said)
    log.warning(
        "%s: class folders whose names differ only in case are read as separate classes: %s; if each group is "
        "one class, move its images into one folder",
        root,
        "; ".join(" and ".join(names) for names in same),
    )


def _sort_key(name: str) -> str:
    """Images are kept sorted by path so that the order, and so the validation split, is the same on every
    machine: in NFC, as a class name is, so that a copy whose file names macOS wrote decomposed ("café.jpg") is
    split the same way."""
    return unicodedata.normalize("NFC", name)


def _classes_of(root: Path, images: list[Path]) -> list[str]:
    return sorted({_class_name(path.parent.name) for path in images})


def _decode_all(
    entries: Iterable[tuple[str, str, bytes]],
    root: Path,
    image_size: int,
    fit: str,
    count: int | None,
    left_out: list[str],
) -> ImageArrays:
    """Each entry decoded as it comes, and only its pixels kept: a folder of photos may be far larger than memory.
    ``count``: the number of entries, already in ``_sort_key`` order (a tree); None for entries in any order (an
    archive, read as it is stored), checked and sorted here, and the images beside its class folders appended to
    ``left_out``."""
    shape = (image_size, image_size, 3)
    images = np.empty((count if count is not None else 256, *shape), dtype=np.uint8)
    names: list[str] = []
    classes_of: list[str] = []
    unusable: dict[int, str] = {}
    folders: set[PurePosixPath] = set()
    loose: PurePosixPath | None = None  # an archive's one top folder, where it holds images beside the class folders
    # closed on an error too, before the caller's warnings and error (an open bar would hold their line)
    with tqdm(total=count, desc=f"decoding {_folder_name(root)}", unit="img", leave=False) as bar:
        for i, (name, cls, data) in enumerate(entries):
            if count is None:
                folder = PurePosixPath(name).parent
                if folder not in folders:
                    folders.add(folder)
                    loose = _archive_layout(folders, root)
                if i == len(images):
                    images = np.concatenate([images, np.empty_like(images)])
            try:
                images[i] = decode_image(data, (image_size, image_size), max_pixels=MAX_PIXELS, fit=fit)
            except ImageDecodeError as exc:
                unusable[i] = str(exc)  # all of them, in one pass: not one decode of the folder per file
            names.append(name)
            classes_of.append(cls)
            bar.update()
        # drawn once more before close clears it: a decode done before the bar's first refresh (0.1 s) would leave
        # its last line, the one a log keeps, at "0img"; a bar iterating the entries itself is closed by then
        bar.refresh()
    if loose is not None:
        # as the folder itself is read: tar czf pets.tar.gz pets packs them under the folder's own name
        beside = [PurePosixPath(name).name for name in names if PurePosixPath(name).parent == loose]
        if beside:
            left_out.append(_beside_text(beside))
        kept = [i for i in range(len(names)) if PurePosixPath(names[i]).parent != loose]
        images, names, classes_of = images[kept], [names[i] for i in kept], [classes_of[i] for i in kept]
        position = {old: new for new, old in enumerate(kept)}
        unusable = {position[i]: why for i, why in unusable.items() if i in position}
    if not names:
        raise _no_images(root)
    order = sorted(range(len(names)), key=lambda i: _sort_key(names[i]))
    if unusable:
        listed = [f"{names[i]}: {unusable[i]}" for i in order if i in unusable]
        raise DatasetError(
            f"{root}: {len(unusable)} of {counted(len(names), 'image')} cannot be used (remove or fix them): "
            + _listed(listed, "; ")
        )
    if order != list(range(len(names))):
        images = images[order]
        classes_of = [classes_of[i] for i in order]
    classes = sorted(set(classes_of))
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[cls] for cls in classes_of], dtype=np.int64)
    return ImageArrays(images[: len(names)], labels, classes)
