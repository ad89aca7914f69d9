"""A folder dataset packed as a .tar/.tar.gz, read member by member as it is stored, without unpacking it, and
held to the layout a tree is held to (folder_layout), so that an archive trains as its unpacked folder would."""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Iterator

from inference.messages import counted
from inference.tree_files import is_hidden, is_tree_image

from .arrays import DatasetError
from .folder_layout import _beside_text, _check_side_by_side, _folders, _links_point, _listed, _not_images_text
from .folder_tree import _check_class_name, _class_name, _litter

# Compressed archives check their own length (gzip's, bzip2's and xz's trailers); a plain tar has only its
# end-of-archive blocks, and tarfile stops without a word where a copy cut on a block boundary ends.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE


def _iter_archive(root: Path, left_out: list[str]) -> Iterator[tuple[str, str, bytes]]:
    """The archive's images in class folders, as (member name, class, bytes), in the order stored; what it holds
    that is not read is appended to ``left_out`` once all of it is read, for the caller to say: said here, it would
    land on the line of the progress bar that reads this."""
    others, loose, hidden_dirs, dangling = [], [], set(), []
    links: list[tarfile.TarInfo] = []  # symlinks by no image's name: to folders, most likely
    held: set[PurePosixPath] = set()  # every folder the archive holds: stored as one, or holding a member
    read: set[PurePosixPath] = set()  # the folders of the images it yields
    try:
        with tarfile.open(root) as tar:
            for member in tar:
                name = PurePosixPath(member.name)
                held.update(name.parents)
                if member.isdir():
                    held.add(name)
                hidden = any(is_hidden(part) for part in name.parent.parts)
                if member.isfile() and hidden:
                    parts = name.parent.parts
                    hidden_dirs.add(PurePosixPath(*parts[: next(i for i, p in enumerate(parts) if is_hidden(p)) + 1]))
                # a hard link is a second name of a file: left out by its name as the folder reader leaves it out
                plain_file = member.isfile() or member.islnk()
                if plain_file and not hidden and not is_tree_image(name.name) and not _litter(name.name):
                    others.append(name.name)
                if member.issym() and not hidden and not is_tree_image(name.name) and not _litter(name.name):
                    links.append(member)
                if member.isfile() and not hidden and is_tree_image(name.name) and len(name.parts) == 1:
                    loose.append(name.name)  # packed from inside the folder: beside its class folders
                if _file_or_link(member) and is_tree_image(name.name) and len(name.parts) >= 2 and not hidden:
                    _check_class_name(str(name.parent), root)
                    file = _member_file(tar, member)
                    if file is None:
                        dangling.append(member.name)
                        continue
                    read.add(name.parent)
                    yield member.name, _class_name(name.parts[-2]), file.read()
            with open(root, "rb") as f:
                plain = not f.read(6).startswith(COMPRESSED_MAGIC)
            if plain and tar.offset + END_OF_ARCHIVE > root.stat().st_size:
                raise EOFError(f"it ends after {tar.offset} bytes without the end-of-archive blocks")
            unfollowed, file_links = _links_not_followed(tar, links)
            others += file_links
        if dangling:  # the folder reader refuses its dangling links too: the class would silently shrink
            raise DatasetError(
                f"{root}: {_links_point(len(dangling))} to no file in the archive (pack it with tar -h, "
                f"which stores the files that links point to): {_listed(sorted(dangling), ', ')}"
            )
        said = [_not_images_text(others)] if others else []
        said += unfollowed
        said += [_beside_text(loose)] if loose else []
        if hidden_dirs:
            shown = _listed(sorted(map(str, hidden_dirs)), ", ")
            said.append(f"hidden {_folders(hidden_dirs)} left out, not read (a name starting with a dot): {shown}")
        empty = _archive_empty_folders(held, read, root)
        if empty:
            said.append(f"{_folders(empty)} without images left out, not classes: {_listed(empty, ', ')}")
        left_out += said
    except tarfile.TarError as exc:
        raise DatasetError(f"cannot read archive {root}: {exc}") from exc
    except (EOFError, zlib.error, OSError) as exc:  # a download or copy cut short, a damaged compressed stream
        raise DatasetError(f"cannot read archive {root}: it is truncated or damaged ({exc})") from exc


def _links_not_followed(tar: tarfile.TarFile, links: list[tarfile.TarInfo]) -> tuple[list[str], list[str]]:
    """The archive's links to folders (and to what it does not hold), said: tar stores a symlink as one, and a link
    to a class folder, which the folder reader follows, would otherwise be left out without a word; and the names
    of those to a file it holds, by no image's name, left out as files that are not images, as the folder reader
    says such a link."""
    to_files = {link.name for link in links if _member_file(tar, link) is not None}
    unfollowed = sorted(link.name for link in links if link.name not in to_files)
    file_links = [PurePosixPath(link.name).name for link in links if link.name in to_files]
    if not unfollowed:
        return [], file_links
    said = (
        f"{counted(len(unfollowed), 'link')} left out, not followed: links inside an archive are not (pack it with "
        f"tar -h, which stores what links point to): {_listed(unfollowed, ', ')}"
    )
    return [said], file_links


def _archive_empty_folders(held: set[PurePosixPath], read: set[PurePosixPath], root: Path) -> list[str]:
    """The folders beside an archive's class folders that hold no image read (as a tree's are said), by their path
    in it; ``read``: the folders of the images read, the top folder among them where it holds some beside the
    class folders (``_archive_layout``)."""
    if not read:
        return []
    top = _archive_layout(read, root)
    classes = read - {top} if top is not None else read
    if not classes:
        return []
    parent = min(classes).parent
    beside = (f for f in held if f.parent == parent and f != parent and f not in classes and not is_hidden(f.name))
    return sorted(str(f) for f in beside)


def _file_or_link(member: tarfile.TarInfo) -> bool:
    """A file's member, or a link's: tar stores a second name of a file (a hard link) and a symlink as links, and
    the folder reader reads both as the file they name."""
    return member.isfile() or member.islnk() or member.issym()


def _member_file(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes] | None:
    """The contents of ``member``, a link's target's for a link; None for a link to nothing the archive holds as a
    file. A link costs one pass over the whole archive (tarfile finds its target in the list of every member)."""
    try:
        return tar.extractfile(member)
    except KeyError:
        return None


def _archive_layout(folders: set[PurePosixPath], root: Path) -> PurePosixPath | None:
    """The folders an archive's images sit in, checked as a tree's are; the archive's one top folder where images
    sit in it beside the class folders it holds (packed with the folder's own name, as ``tar czf pets.tar.gz pets``
    does), which are then left out as the folder reader leaves them out."""
    top = [folder for folder in folders if folder.parent == PurePosixPath(".")]
    if len(top) == 1 and len(folders) > 1 and all(f.parent == top[0] for f in folders if f != top[0]):
        return top[0]
    _check_side_by_side(list(folders), root)
    return None
