"""Finding the images under a folder, lazily and in a fixed order.

The walk holds one directory's sorted names at a time (never the whole tree),
follows directory symlinks but enters each real directory once, by its own
name where the root holds it (a link to a folder under the root is skipped,
whether it sorts before or after the folder, so the folder's name is its
class; a link loop is skipped, not walked forever), and turns what cannot be
opened (broken links, FIFOs, unlistable folders) into error entries instead of
exceptions. Hidden files and folders under the root are left out, by the rule
training's folder reader follows (inference.tree_files).

The order is that of ``sorted(paths)`` for ``pathlib`` paths: component by
component, names compared by code point.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Container, Iterator, NamedTuple

from inference.tree_files import LINK_LOOP, folder_linked_inside, is_hidden, is_tree_image

# One folder being walked: its prefix under the root, its path, its sorted names left, its (device, inode).
_Frame = tuple[str, str, Iterator[tuple[str, str]], tuple[int, int]]


class Entry(NamedTuple):  # a tuple: one is made per file, and a frozen dataclass costs several times more
    """One file (or unlistable folder) found by the walk."""

    rel: str  # POSIX path relative to the root: the key written to the output
    path: str  # the path to open
    error: str | None = None  # set when the entry failed before it was read


@dataclass
class WalkStats:
    images: int = 0  # entries with an image extension (including those that will fail)
    skipped: int = 0  # files not scored: without an image extension, or hidden
    linked_dirs_skipped: list[str] = field(default_factory=list)  # loops / second names of a folder walked
    # of those, the path the folder is walked by (its own under the root, or the first link's); None for a loop
    linked_dirs_walked_as: dict[str, str | None] = field(default_factory=dict)
    hidden_dirs_skipped: list[str] = field(default_factory=list)  # hidden folders, not entered


def _listing(path: str) -> list[tuple[str, str]]:
    """Sorted (name, kind) of one directory: kind d(ir), f(ile), l(broken link) or o(ther, e.g. a FIFO)."""
    out = []
    with os.scandir(path) as it:
        for entry in it:
            try:
                if entry.is_dir():
                    kind = "d"
                elif entry.is_file():
                    kind = "f"
                elif entry.is_symlink() and not os.path.exists(entry.path):
                    kind = "l"
                else:  # a link to a device or a FIFO is one too
                    kind = "o"
            except OSError:  # e.g. a symlink into a folder we may not search
                kind = "l" if entry.is_symlink() else "o"
            out.append((entry.name, kind))
    out.sort()
    return out


def _dir_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def walk(root: str | os.PathLike, stats: WalkStats | None = None) -> Iterator[Entry]:
    """Every image-extension file under ``root`` (and error entries), depth first in sorted order.

    Lists ``root`` at once, so an unreadable root raises ``OSError`` here; the rest is lazy.
    """
    stats = stats if stats is not None else WalkStats()
    root = os.fspath(root)
    key = _dir_key(root)
    return _walk([("", root, iter(_listing(root)), key)], {key: ""}, os.path.realpath(root), stats)


def _walk(
    stack: list[_Frame],
    visited: dict[tuple[int, int], str],
    real_root: str,
    stats: WalkStats,
) -> Iterator[Entry]:
    """``visited``: each folder entered, by the path it was entered by; ``real_root``: the root, links resolved."""
    while stack:
        prefix, directory, names, _ = stack[-1]
        item = next(names, None)
        if item is None:
            stack.pop()
            continue
        name, kind = item
        path = os.path.join(directory, name)
        rel = prefix + name
        if kind == "d" and is_hidden(name):
            stats.hidden_dirs_skipped.append(rel)
            continue
        if kind == "d":
            try:
                key = _dir_key(path)
                walked_as = _walked_as(path, rel, key, stack, visited, real_root)
                if walked_as != rel:
                    stats.linked_dirs_skipped.append(rel)
                    stats.linked_dirs_walked_as[rel] = walked_as
                    continue
                visited[key] = rel
                listing = _listing(path)
            except OSError as exc:
                stats.images += 1
                yield Entry(rel + "/", path, f"cannot list directory: {exc.strerror or exc}")
                continue
            stack.append((rel + "/", path, iter(listing), key))
            continue
        if not is_tree_image(name):
            stats.skipped += 1
            continue
        stats.images += 1
        if kind == "f":
            yield Entry(rel, path)
        elif kind == "l":
            yield Entry(rel, path, _broken_link_message(path))
        else:
            yield Entry(rel, path, "not a regular file")


def _walked_as(
    path: str,
    rel: str,
    key: tuple[int, int],
    stack: list[_Frame],
    visited: dict[tuple[int, int], str],
    real_root: str,
) -> str | None:
    """The path (under the root) that the folder at ``path``, reached as ``rel``, is walked by: ``rel`` where it is
    to be entered now; None for a link to a folder it is in, or to one holding the root (a loop). A folder the root
    holds by its own name is walked by that name, whether a link to it sorts before it or after: its name, not the
    link's, is its class."""
    if any(key == entered for *_, entered in stack):
        return None
    if key in visited:  # a second link to a folder outside the root, or a second name the file system gives
        return visited[key]
    if os.path.islink(path):
        inside = folder_linked_inside(path, real_root)
        if inside is not None:
            return None if inside == LINK_LOOP else inside
    return rel


def _broken_link_message(path: str) -> str:
    try:
        return f"broken symlink (target {os.readlink(path)!r} does not exist or cannot be reached)"
    except OSError:
        return "file disappeared while scoring"


def count_images(root: str | os.PathLike, stop=None) -> int | None:
    """How many entries ``walk`` will yield (for a progress bar's total); None when stopped early."""
    counted = count_entries(root, stop)
    return None if counted is None else counted[0]


def count_entries(root: str | os.PathLike, stop=None, known: Container[str] = ()) -> tuple[int, int] | None:
    """How many entries ``walk`` will yield, and how many of them ``known`` names; None when stopped early."""
    stats = WalkStats()
    met = 0
    for entry in walk(root, stats):
        if stop is not None and stop.is_set():
            return None
        if entry.rel in known:
            met += 1
    return stats.images, met
