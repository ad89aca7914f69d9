"""The layout a folder dataset must have (images in class folders that sit side by side), refused where it has
not, and what it holds outside it (not images, images beside the class folders, hidden, empty or twice-named
folders) said rather than silently left out: one module for a tree and an archive, so that both say the same.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Collection

from inference.image_formats import IMAGE_EXTENSIONS
from inference.messages import counted
from inference.tree_files import LINK_LOOP, folder_linked_inside, is_hidden, is_tree_image

from .arrays import DatasetError

UNUSABLE_LISTED = 10  # files named in the error; the count says how many more

log = logging.getLogger("training.data.folder")  # the folder reader's one name to print and filter by


def _not_images_text(names: list[str]) -> str:
    """How many files were left out for their names' extension, by extension: a class of .heic photos, or .jfif
    ones, would otherwise shrink without a word."""
    counts = Counter(os.path.splitext(name)[1].lower() or "no extension" for name in names)
    shown = ", ".join(f"{ext} ({n})" for ext, n in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    return (
        f"{counted(len(names), 'file')} left out, not images by their extension: {shown} (read: "
        f"{' '.join(sorted(IMAGE_EXTENSIONS))})"
    )


def _listed(names: list[str], sep: str) -> str:
    """The first UNUSABLE_LISTED of ``names``, and how many more."""
    more = len(names) - UNUSABLE_LISTED
    return sep.join(names[:UNUSABLE_LISTED]) + (f"{sep}and {more} more" if more > 0 else "")


_said_left_out: set[tuple] = set()  # once per tree or archive and what it holds: training reads it per split


def _folder_key(folder: str | os.PathLike) -> tuple[int, int]:
    """A folder's identity, as the batch scorer's walk takes it (service/score/walk.py): its (device, inode), the
    same through every name the file system gives it, a bind mount's too, where its resolved paths differ."""
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def _warn_archive_left_out(root: Path, text: str) -> None:
    """One thing an archive holds that is not trained on, said once per process, as a tree's are."""
    said = (str(root.resolve()), text)
    if said not in _said_left_out:
        _said_left_out.add(said)
        log.warning("%s: %s", root, text)


def _warn_left_out(root: Path, images: list[Path], others: list[Path], hidden_dirs: list[str]) -> None:
    """What the tree holds that is not trained on, said: files that are not images by name, images beside the
    class folders (an image's class is the folder it sits in), and a class folder without images, a hidden one or
    a second name (a symlink) of a class folder already read (the model would not know that class)."""
    said = (str(root.resolve()), len(images), len(others))
    if said in _said_left_out:
        return
    _said_left_out.add(said)
    by_name = [p.name for p in others if not is_tree_image(p.name)]
    if by_name:
        log.warning("%s: %s", root, _not_images_text(by_name))
    special = [p.relative_to(root).as_posix() for p in others if is_tree_image(p.name)]  # the rest: not files
    if special:
        log.warning(
            "%s: %s left out, not %s (a pipe, a device or a socket; never opened): %s",
            root,
            counted(len(special), "file"),
            "a regular file" if len(special) == 1 else "regular files",
            _listed(special, ", "),
        )
    _warn_beside(root, [p.name for p in images if p.parent == root])
    class_folders = {p.parent for p in images if p.parent != root}
    if not class_folders:
        return
    parent = min(class_folders).parent
    folders = sorted(p for p in parent.iterdir() if p.is_dir() and p not in class_folders and not is_hidden(p.name))
    real_parent = os.path.realpath(parent)
    loops = [p.name for p in folders if p.is_symlink() and folder_linked_inside(p, real_parent) == LINK_LOOP]
    if loops:  # not followed, as the scorer does not follow it: it would read the tree again, and again
        loop = "link back up the tree left out, not followed (a symlink loop)"
        if len(loops) > 1:
            loop = "links back up the tree left out, not followed (symlink loops)"
        log.warning("%s: %s: %s", parent, loop, _listed(loops, ", "))
    keys = {p: _folder_key(p) for p in folders if p.name not in loops}
    read_as = {_folder_key(p): p for p in class_folders}  # each folder is read once, by one name
    again = [_read_as_text(p, read_as[key]) for p, key in keys.items() if key in read_as]
    if again:
        log.warning(
            "%s: %s left out, not classes, the same folder as a class already read: %s",
            parent,
            _folders(again),
            "; ".join(again),
        )
    empty = [p.name for p, key in keys.items() if key not in read_as]
    if empty:
        log.warning("%s: %s without images left out, not classes: %s", parent, _folders(empty), ", ".join(empty))
    hidden = sorted(p.name for p in parent.iterdir() if p.is_dir() and is_hidden(p.name))
    if hidden:
        log.warning(
            "%s: hidden %s left out, not classes (a name starting with a dot): %s",
            parent,
            _folders(hidden),
            ", ".join(hidden),
        )
    # the scorer names the hidden folders it does not enter too (service/score/run.py)
    classes = {folder.relative_to(root).as_posix() for folder in class_folders}
    inside = [rel for rel in hidden_dirs if rel.rpartition("/")[0] in classes]  # directly in a class folder
    if inside:
        log.warning(
            "%s: hidden %s in class folders left out, not read: %s", parent, _folders(inside), _listed(inside, ", ")
        )


def _folders(listed: Collection[object]) -> str:
    """The word for the folders a warning lists by name, in the singular for one."""
    return "folder" if len(listed) == 1 else "folders"


def _links_point(count: int) -> str:
    return f"{counted(count, 'image link')} {'points' if count == 1 else 'point'}"


def _read_as_text(folder: Path, read: Path) -> str:
    """A folder is read by its own name, or where the tree holds it by none (a folder outside it), by the first
    link to it in sorted order: the text says which."""
    if not folder.is_symlink():  # a second name the file system gives it (a bind mount)
        return f"{folder.name} is the folder read as {read.name}"
    if read.is_symlink():
        return f"{folder.name} is a link to the folder read as {read.name}"
    return f"{folder.name} is a link to {read.name}, read by its own name"


def _no_images(root: Path, loose: int = 0, hidden_dirs: Collection[str] = ()) -> DatasetError:
    """``loose``: the images found beside the class folders. Where there are some, the folder given is most likely
    one class's own folder: the list of image extensions would only suggest that its images went unrecognised.
    ``hidden_dirs``: the hidden folders not entered, named, as they may be where the images are (``.photos/``)."""
    hidden = (
        f"; hidden {_folders(hidden_dirs)} not read (a name starting with a dot): {_listed(sorted(hidden_dirs), ', ')}"
        if hidden_dirs
        else ""
    )
    if loose:
        return DatasetError(
            f"{root} holds no class folders, only {counted(loose, 'image')} directly in it: an image's class is the "
            f"name of the folder it sits in; give the folder that holds one folder per class{hidden}"
        )
    # CIFAR's python-format folder (its pickled batches) given as a folder of images
    for dataset, files in (("cifar10", ("batches.meta", "data_batch_1")), ("cifar100", ("meta", "train"))):
        if root.is_dir() and all((root / name).is_file() for name in files):
            return DatasetError(
                f"{root} holds no images in class folders but {files[0]} and {files[1]}, the python-format "
                f"{dataset}'s batches: data.dataset={dataset} (--dataset {dataset}) reads them"
            )
    return DatasetError(
        f"{root} holds no images in class folders (expected <class>/<image> files, an image being a file "
        f"named {', '.join(sorted(IMAGE_EXTENSIONS))}){hidden}"
    )


def _check_names(names: list[str], root: Path, loose: int = 0, hidden_dirs: Collection[str] = ()) -> None:
    """A tree's image paths checked before any is read: there are some, and their class folders sit side by side.
    ``loose``: the images beside the class folders, left out; ``hidden_dirs``: the hidden folders not entered."""
    if not names:
        raise _no_images(root, loose, hidden_dirs)
    _check_side_by_side([PurePosixPath(name).parent for name in names], root)


def _warn_beside(root: Path, loose: list[str]) -> None:
    if loose:
        log.warning("%s: %s", root, _beside_text(loose))


def _beside_text(loose: list[str]) -> str:
    shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
    return f"{counted(len(loose), 'image')} beside the class folders left out, in no class: {shown}"


def _check_side_by_side(folders: list[PurePosixPath], root: Path) -> None:
    """An image's class is the folder it sits in, by name alone: a subfolder of a class folder
    (cat/kittens/) would become a class of its own, and class folders under different parents
    (cat/2019/, dog/2019/) would merge into one, so both are refused rather than trained on."""
    by_parent: dict[PurePosixPath, PurePosixPath] = {}
    for folder in folders:
        by_parent.setdefault(folder.parent, folder)
    if len(by_parent) > 1:
        first, second = sorted(by_parent.values())[:2]
        raise DatasetError(
            f"{root}: images sit in folders of more than one level or parent ({first}/ and {second}/); the folder "
            "an image sits in is its class, so the class folders must sit side by side in one folder"
        )
