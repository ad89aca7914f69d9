"""A folder dataset as it lies on disk: which of its files are read, through which folders, under which class
name. The walk follows the batch scorer's rules (inference.tree_files, service/score/walk.py), so that a folder
trains as it is scored; the archive reader (folder_archive) names its classes by the same rules."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Iterator, NoReturn

from inference.tree_files import folder_linked_inside, is_hidden, is_tree_image

from .arrays import DatasetError
from .folder_layout import _folder_key, _links_point, _listed


def _tree_images(root: Path) -> tuple[list[Path], list[Path], list[str]]:
    """The image files under ``root``, sorted, through symlinked folders too (each real folder once, so that a
    link back up the tree is not a loop), the other files, which are not read (an image's name on a pipe or a
    device among them: never opened, as a read of a pipe waits for a writer), and the hidden folders not entered
    (relative to ``root``). Which files are images is inference.tree_files' rule, the batch scorer's too; which
    folders are entered, its walk's (service/score/walk.py)."""
    found, others, hidden, seen = [], [], [], set()
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root, onerror=_unreadable_folder, followlinks=True):
        try:
            key = _folder_key(folder)
        except OSError as exc:  # removed (or its mount gone) since os.walk listed it
            _unreadable_folder(exc)
        if key in seen:
            dirs.clear()
            continue
        seen.add(key)
        hidden += [(Path(folder) / d).relative_to(root).as_posix() for d in dirs if is_hidden(d)]
        dirs[:] = sorted(d for d in dirs if not is_hidden(d) and not _not_followed(Path(folder) / d, real_root))
        found += [Path(folder) / f for f in files if is_tree_image(f)]
        others += [Path(folder) / f for f in files if not is_tree_image(f) and not _litter(f)]
    images: list[Path] = []
    dangling: list[Path] = []
    for path in found:  # one stat of each regular image: the listing is made on every read, a cached one too
        if path.is_file():
            images.append(path)
        elif path.exists():  # a pipe, a device or a socket by an image's name
            others.append(path)
        elif path.is_symlink():
            dangling.append(path)
    images.sort()
    dangling.sort()
    if dangling:  # a copy that kept the links but not what they point to: the class would silently shrink
        shown = _listed([str(p.relative_to(root)) for p in dangling], ", ")
        raise DatasetError(f"{root}: {_links_point(len(dangling))} to nothing (remove or fix them): {shown}")
    for parent in sorted({path.parent for path in images}):  # each folder once, not once per image in it
        _check_class_name(parent.relative_to(root).as_posix(), root)
    return images, sorted(others), sorted(hidden)


def _not_followed(folder: Path, real_root: str) -> bool:
    """Whether ``folder`` is a link not followed: to a folder holding the tree (a loop), or to one the tree holds by
    its own name, read by that name whether the link sorts before it or after, so that the class is the folder's
    name, not the link's. A link to a hidden folder is followed: that folder itself is not read."""
    return folder.is_symlink() and folder_linked_inside(folder, real_root) is not None


# Files an operating system leaves in folders it shows (hidden ones too: .DS_Store, a Mac's ._ copies), not left
# out by anyone's mistake.
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini"})


def _litter(name: str) -> bool:
    return is_hidden(name) or name.lower() in SYSTEM_FILES


def _unreadable_folder(exc: OSError) -> NoReturn:
    """os.walk's default is to skip a folder it cannot list: a class folder without read permission would
    then be left out as one without images, and the model trained without that class."""
    reason = exc.strerror or type(exc).__name__
    raise DatasetError(
        f"cannot list the folder {exc.filename}: {reason.lower()}; make it readable, or move it out of the dataset"
    )


def _check_class_name(folder: str, root: Path) -> None:
    """A class folder's name that is not text (bytes of another encoding than the file system's, read back with
    surrogate escapes) cannot be a class name a model card or a report holds: refused here, naming it. (A file's
    own name may be anything: it names no class.)"""
    try:
        folder.encode("utf-8")
    except UnicodeEncodeError:
        shown = folder.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise DatasetError(
            f"{root}: the folder name {shown!r} is not UTF-8 text (the \ufffd stands for its other bytes); rename "
            "it, since a class name has to be written on the model's card"
        ) from None


def _iter_tree(root: Path, images: list[Path]) -> Iterator[tuple[str, str, bytes]]:
    """The images in class folders, as (path under ``root``, class, bytes): each file read when it is reached."""
    for path in images:
        rel = path.relative_to(root)
        if len(rel.parts) >= 2:
            yield rel.as_posix(), _class_name(rel.parts[-2]), path.read_bytes()


def _class_name(folder: str) -> str:
    """A class folder's name as a class: NFC, so that a folder copied from macOS (whose file system wrote
    "café" decomposed) names the same class as the one a model was trained on elsewhere."""
    return unicodedata.normalize("NFC", folder)
