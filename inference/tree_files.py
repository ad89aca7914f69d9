"""Which files under a folder of images are its images: the one rule of training's folder reader (a tree, or a tar
archive of one) and of the batch scorer's walk, so that `training evaluate --data DIR` and `service score DIR
--labels-from-folders` score the same files. Torch-free, so the service side can use it too.

The rule applies to the names under the folder given, never to that folder's own name: a user who names
``.photos/`` on the command line means it.
"""

from __future__ import annotations

import os
import shlex
import tarfile
from pathlib import Path

from inference.image_formats import is_image_name

# A tar archive of a tree, which training reads without unpacking it; by its name, or by its content when named
# otherwise.
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_hidden(name: str) -> bool:
    """A file or folder whose name starts with a dot: a viewer's .thumbnails/ (copies of the photos beside it), a
    trash folder, .git/, a Mac's .DS_Store and ._x.jpg metadata. None of it is the user's images, and a hidden
    folder would otherwise be a class of its own. The "." and ".." of a tar member's path are no names."""
    return name.startswith(".") and name not in (".", "..")


def is_tree_image(name: str) -> bool:
    """Whether a file named ``name`` (not a path) under the folder given is one of its images."""
    return not is_hidden(name) and is_image_name(name)


# What ``folder_linked_inside`` says of a link to a folder holding the root (or to the root): a loop.
LINK_LOOP = ""


def folder_linked_inside(link: str | os.PathLike, real_root: str) -> str | None:
    """Where a symlink to a folder points, as both walks of a folder of images (training's reader, the batch
    scorer's) take it: the folder's path under the root (``real_root``: the root, links resolved), "/"-joined, where
    the root holds it by its own name, which it is read by (its name, not the link's, is its class), whether the
    link sorts before it or after; ``LINK_LOOP`` for a link to a folder holding the root; None for a link to be
    followed (a folder outside the root, or a hidden one under it, which is not read by its own name)."""
    real = os.path.realpath(link)
    if real_root == real or real_root.startswith(real.rstrip(os.sep) + os.sep):
        return LINK_LOOP
    if not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    inside = os.path.relpath(real, real_root).split(os.sep)
    return None if any(map(is_hidden, inside)) else "/".join(inside)


def is_tar_archive(path: str | Path) -> bool:
    """Whether the file ``path`` is a tar archive (compressed or not) of a tree, as training's folder reader takes
    it: named so, or one whatever its name."""
    path = Path(path)
    if path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return True
    if not path.is_file():  # a named pipe would block the probe below until something writes to it
        return False
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError):
        return False


def unpack_command(path: str) -> str | None:
    """The shell command that unpacks ``path`` into DIR where it is an archive (a .zip by its name, a tar archive
    as ``is_tar_archive`` tells), quoted so that it can be pasted as it is; None for anything else."""
    if path.lower().endswith(".zip"):
        return f"unzip {shlex.quote(path)} -d DIR"
    if is_tar_archive(path):
        return f"tar xf {shlex.quote(path)} -C DIR"
    return None
