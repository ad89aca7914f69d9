"""The doctor's labelled folder (``--folder DIR``): what it refuses in its place, and how the images of each class
are picked and read at a model's own input.

Kept apart from the model checks because it answers to training and the scorer, not to the service: sub-folders
are matched to classes and hidden files skipped as they are there, and an archive refused as the scorer refuses
it, so one folder reads alike in all three.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import numpy as np

from inference.classes import ClassMatcher
from inference.image_formats import IMAGE_EXTENSIONS
from inference.manifest import ManifestError, ModelEntry
from inference.messages import counted
from inference.preprocess import decode_image, to_model_input
from inference.tree_files import is_hidden, is_tree_image, unpack_command


def folder_refusal(folder: str) -> str | None:
    """Why ``--folder`` cannot be read, and what to give instead; None for a folder. An archive, which training
    reads, is refused as the scorer refuses it: picking a few images of each class would decompress all of it,
    and where its class folders sit in it (under one top folder or not) is training's reader's rule."""
    path = Path(folder)
    if path.is_dir():
        return None
    if not path.exists():
        return f"--folder {folder} is not a folder: it does not exist"
    unpack = unpack_command(folder)
    if unpack:
        return (
            f"--folder {folder} is an archive, not a folder: unpack it (mkdir DIR && {unpack}) and give --folder "
            "the folder in DIR that holds one sub-folder per class"
        )
    return f"--folder {folder} is a file, not a folder: give the folder that holds one sub-folder per class"


def class_folders(folder: Path, entry: ModelEntry) -> tuple[list[tuple[int, Path]], list[str]]:
    """The sub-folders of ``folder`` that name one of the model's classes, with its index (matched as the scorer
    and `training evaluate` match a folder: exactly, else in Unicode NFC and ignoring case, so that a copy from
    macOS or a ``Cat/`` for ``cat`` counts), and the names of those that name none; hidden ones are neither."""
    matcher = ClassMatcher(entry.classes)
    matched, left_out = [], []
    for d in sorted(folder.iterdir()):
        if d.is_dir() and not is_hidden(d.name):
            label = matcher.index(d.name)
            if label is None:
                left_out.append(d.name)
            else:
                matched.append((label, d))
    return matched, left_out


# The most directory entries the search for class folders a level or two down looks at: `--folder /`, or a home
# folder with thousands of sub-folders, would otherwise be listed two levels down before the refusal is said.
SUGGESTION_SCAN_ENTRIES = 20_000


class _TooWide(Exception):
    """A search of folders further down met more than its ``_Scan``'s entries."""


class _Scan:
    """Directory listings counted against ``entries`` (``SUGGESTION_SCAN_ENTRIES``), all of one search together."""

    def __init__(self, entries: int | None = None) -> None:
        self.entries = self.left = SUGGESTION_SCAN_ENTRIES if entries is None else entries

    def listing(self, folder: Path) -> list[Path]:
        """The entries of ``folder``, sorted; ``_TooWide`` past the search's entries, read no further than that."""
        with os.scandir(folder) as entries:
            read = [Path(e.path) for e in islice(entries, self.left + 1)]
        self.left -= len(read)
        if self.left < 0:
            raise _TooWide
        return sorted(read)


def no_class_folder(folder: Path, entry: ModelEntry) -> str:
    """Why ``folder``, with no sub-folder named after one of the model's classes, cannot be read: naming the
    folders a level or two down that hold class folders, to be given instead; where the search stopped at
    ``SUGGESTION_SCAN_ENTRIES`` entries, those it found before, said as found among them (there may be others)."""
    holding, whole = _holding_class_folders(folder, entry, _Scan())
    refused = f"--folder {folder} has no sub-folder named after a class ({', '.join(entry.classes)})"
    if len(holding) == 1 and whole:
        return f"{refused}; the class folders are in {holding[0]}: give --folder {holding[0]}"
    if holding:
        shown = ", ".join(map(str, holding[:3])) + (f" and {len(holding) - 3} more" if len(holding) > 3 else "")
        among = "" if whole else f" (among the first {SUGGESTION_SCAN_ENTRIES:,} entries a level or two down)"
        # one named is the one to give: "one of them" would ask the user to pick among folders not shown
        give = f"--folder {holding[0]}" if len(holding) == 1 else "--folder one of them"
        return f"{refused}; class folders are in {shown}{among}: give {give}"
    return refused


def _holding_class_folders(folder: Path, entry: ModelEntry, scan: _Scan) -> tuple[list[Path], bool]:
    """The folders one or two levels under ``folder`` that hold a sub-folder named after one of the model's
    classes (as ``class_folders`` matches one), each listed once through ``scan``; and whether the search was
    whole (False: it stopped at ``SUGGESTION_SCAN_ENTRIES``)."""
    # a tree one or two levels too deep: an unpacked archive's photos/cifar10/train/cat/... given as photos
    matcher = ClassMatcher(entry.classes)
    holding: list[Path] = []
    try:
        level = [scan.listing(folder)]
    except _TooWide:
        return holding, False
    # each folder once: a link back up (data/all -> data) would name data/train again as data/all/train
    seen = {folder.resolve()}
    for _ in range(2):
        deeper: list[list[Path]] = []
        for listed in level:
            for d in listed:
                if d.is_dir() and not is_hidden(d.name):
                    try:
                        resolved = d.resolve()
                        if resolved in seen:
                            continue
                        seen.add(resolved)
                        inside = scan.listing(d)
                        # the name first: most entries (images) name no class, and need no stat
                        if any(
                            matcher.index(c.name) is not None and not is_hidden(c.name) and c.is_dir() for c in inside
                        ):
                            holding.append(d)
                        else:
                            deeper.append(inside)
                    except _TooWide:
                        return holding, False
                    except OSError:  # a folder this user may not list holds no folder to give
                        continue
        level = deeper
    return holding, True


def read_folder(
    folder: Path, entry: ModelEntry, max_images: int, matched: list[tuple[int, Path]] | None = None
) -> tuple[np.ndarray, np.ndarray, list[tuple[Path, str]]]:
    """Up to ``max_images`` images of ``folder/CLASS/IMAGE`` whose CLASS names one of the model's classes
    (``matched``, else ``class_folders``), spread over the classes (sorted paths, taken in turn), as the model's
    input (its size, its fit) and class indices; hidden files are no images, as for training's folder reader, and
    the images in a class folder's sub-folders are none of its (``nested_warning`` says them); and the files that
    could not be read, with why. ``ManifestError`` if none is readable, naming the folders a level or two down
    that hold class folders where there is no class folder in ``folder`` itself."""
    found: dict[int, list[Path]] = {}
    for label, d in class_folders(folder, entry)[0] if matched is None else matched:
        # only those directly in it: the scorer labels an image by the folder it sits in, and training refuses
        # a folder inside a class folder, so ship/sub/0001.jpg is no ship to either
        try:
            found.setdefault(label, []).extend(
                p for p in d.iterdir() if is_tree_image(p.name) and not is_hidden(p.name) and not p.is_dir()
            )
        except OSError as exc:  # a class folder this user may not list: one line, not a traceback
            raise ManifestError(f"--folder {folder}: {d.name} cannot be listed ({exc.strerror or exc})") from exc
    if not found:
        raise ManifestError(no_class_folder(folder, entry))
    per_class = {entry.classes[label]: (label, sorted(paths)) for label, paths in sorted(found.items())}
    chosen: list[tuple[Path, int]] = []
    depth = 0
    while len(chosen) < max_images and any(depth < len(paths) for _, paths in per_class.values()):
        for label, paths in per_class.values():
            if depth < len(paths) and len(chosen) < max_images:
                chosen.append((paths[depth], label))
        depth += 1
    pixels = []
    labels = []
    unreadable: list[tuple[Path, str]] = []
    for path, label in chosen:
        try:
            pixels.append(decode_image(path.read_bytes(), entry.input.size, fit=entry.input.fit))
            labels.append(label)
        except (OSError, ValueError) as exc:  # not the host's problem: left out, and said
            unreadable.append((path.relative_to(folder), str(exc) or type(exc).__name__))
    if not pixels:
        raise ManifestError(
            f"--folder {folder}: no readable image in the sub-folders named after a class "
            f"({', '.join(sorted(per_class))}; read: {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return to_model_input(np.stack(pixels)), np.asarray(labels), unreadable


# The most entries the search for images in class folders' sub-folders reads: a class folder that holds a whole
# tree (a backup, a link to a disk) would otherwise be walked to its end, and each image kept, before the report.
NESTED_SCAN_ENTRIES = SUGGESTION_SCAN_ENTRIES


def nested_warning(folder: Path, matched: list[tuple[int, Path]]) -> str | None:
    """The warning for the images in sub-folders of the ``matched`` class folders, which ``read_folder`` leaves
    out (how many, and the first, relative to ``folder``); None where there is none. Hidden files and folders
    are not counted: they would not be read in any case. Each folder is listed once (a link back up to a class
    folder or ``folder`` is not followed), one this user may not list is passed over, and the search stops after
    ``NESTED_SCAN_ENTRIES`` entries below the class folders, the count then said as "at least"."""
    scan = _Scan(NESTED_SCAN_ENTRIES)
    seen = {p.resolve() for p in (folder, *(d for _, d in matched))}
    nested: list[Path] = []
    # depth first, in name order; a class folder's own entries are listed by read_folder in any case, and told
    # apart by the listing's file type (no stat for each of its images)
    stack = [sub for _, d in reversed(matched) for sub in sorted(_sub_folders(d), reverse=True)]
    whole = True
    while stack:
        d = stack.pop()
        real = d.resolve()
        if is_hidden(d.name) or real in seen:
            continue
        seen.add(real)
        try:
            listed = scan.listing(d)
        except _TooWide:
            whole = False
            break
        except OSError:  # not listed: its images are not read either
            continue
        folders = [p for p in listed if p.is_dir()]  # one named like an image (x.png/) is searched, not counted
        nested += [p.relative_to(folder) for p in set(listed) - set(folders) if is_tree_image(p.name)]
        stack += reversed(folders)
    if not nested:
        return None
    more = f" and {len(nested) - 1:,} more" if len(nested) > 1 else ""
    least = "" if whole else "at least "
    stopped = "" if whole else f"the search stopped after {scan.entries:,} entries; "
    return (
        f"{least}{counted(len(nested), 'image')} in sub-folders of class folders, not read: {min(nested)}{more} "
        f"({stopped}an image's class is the folder it sits in, as the scorer labels it)"
    )


def _sub_folders(folder: Path) -> list[Path]:
    """The folders in ``folder`` (links to folders too), told by the listing's file type where it gives one."""
    with os.scandir(folder) as entries:
        return [Path(e.path) for e in entries if e.is_dir()]
