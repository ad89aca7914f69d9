"""Class-per-folder image trees, as a directory or straight from a .tar/.tar.gz archive.

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
import tarfile
import tempfile
import unicodedata
import zipfile
import zlib
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import IO, Collection, Iterable, Iterator

import numpy as np
import PIL
from PIL import features
from tqdm import tqdm

from inference.classes import folded
from inference.files import file_in_the_way, parse_temporary, write_atomic, writer_may_run
from inference.fits import DEFAULT_FIT
from inference.messages import counted, exception_summary
from inference.preprocess import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from inference.tree_files import ARCHIVE_SUFFIXES, folder_linked_inside, is_hidden, is_tar_archive, is_tree_image

from .arrays import DatasetError, ImageArrays, missing_path_text

# The user's own files, not uploads: larger photos than the service takes (a 48-megapixel phone photo) are
# decoded, a JPEG at a reduced size (inference.preprocess); the limit only guards memory.
MAX_PIXELS = 250_000_000
UNUSABLE_LISTED = 10  # files named in the error; the count says how many more
# In the cache key: a cache written by a reader that chose other files or named classes otherwise (hidden folders,
# the image extensions, Unicode forms) is not this reader's.
READER_VERSION = 3
# Also in the key: what turns a file into pixels, the shared decoder's code and the libraries under it. A cache decoded
# before an edit to it or a Pillow upgrade would train on pixels that the service no longer computes.
DECODER_MODULES = ("inference.preprocess", "inference.fits")
DECODER_LIBRARIES = ("jpg", "zlib", "webp", "libtiff")

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


def _tree_images(root: Path) -> tuple[list[Path], list[Path], list[str]]:
    """The image files under ``root``, sorted, through symlinked folders too (each real folder once, so that a
    link back up the tree is not a loop), the other files, which are not read (an image's name on a pipe or a
    device among them: never opened, as a read of a pipe waits for a writer), and the hidden folders not entered
    (relative to ``root``). Which files are images is inference.tree_files' rule, the batch scorer's too; which
    folders are entered, its walk's (service/score/walk.py)."""
    found, others, hidden, seen = [], [], [], set()
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root, onerror=_unreadable_folder, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
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


def _unreadable_folder(exc: OSError) -> None:
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


# Compressed archives check their own length (gzip's, bzip2's and xz's trailers); a plain tar has only its
# end-of-archive blocks, and tarfile stops without a word where a copy cut on a block boundary ends.
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ")
END_OF_ARCHIVE = 2 * tarfile.BLOCKSIZE


def _iter_archive(root: Path, left_out: list[str]) -> Iterator[tuple[str, str, bytes]]:
    """The archive's images in class folders, as (member name, class, bytes), in the order stored; what it holds
    that is not read is appended to ``left_out`` once all of it is read, for the caller to say: said here, it would
    land on the line of the progress bar that reads this."""
    others, loose, hidden_dirs, dangling = [], [], set(), []
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
                if member.isfile() and not hidden and not is_tree_image(name.name) and not _litter(name.name):
                    others.append(name.name)
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
        if dangling:  # the folder reader refuses its dangling links too: the class would silently shrink
            raise DatasetError(
                f"{root}: {_links_point(len(dangling))} to no file in the archive (pack it with tar -h, "
                f"which stores the files that links point to): {_listed(sorted(dangling), ', ')}"
            )
        said = [_not_images_text(others)] if others else []
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


_said_left_out: set[tuple] = set()  # once per tree or archive and what it holds: training reads it per split


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
    read_as = {os.path.realpath(p): p for p in class_folders}  # each real folder is read once, by one name
    again = [_read_as_text(p, read_as[os.path.realpath(p)]) for p in folders if os.path.realpath(p) in read_as]
    if again:
        log.warning(
            "%s: %s left out, not classes, the same folder as a class already read: %s",
            parent,
            _folders(again),
            "; ".join(again),
        )
    empty = [p.name for p in folders if os.path.realpath(p) not in read_as]
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


def _sort_key(name: str) -> str:
    """Images are kept sorted by path so that the order, and so the validation split, is the same on every
    machine: in NFC, as a class name is, so that a copy whose file names macOS wrote decomposed ("café.jpg") is
    split the same way."""
    return unicodedata.normalize("NFC", name)


def _classes_of(root: Path, images: list[Path]) -> list[str]:
    return sorted({_class_name(path.parent.name) for path in images})


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
    with tqdm(entries, total=count, desc=f"decoding {_folder_name(root)}", unit="img", leave=False) as bar:
        for i, (name, cls, data) in enumerate(bar):
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


def _archive_layout(folders: set[PurePosixPath], root: Path) -> PurePosixPath | None:
    """The folders an archive's images sit in, checked as a tree's are; the archive's one top folder where images
    sit in it beside the class folders it holds (packed with the folder's own name, as ``tar czf pets.tar.gz pets``
    does), which are then left out as the folder reader leaves them out."""
    top = [folder for folder in folders if folder.parent == PurePosixPath(".")]
    if len(top) == 1 and len(folders) > 1 and all(f.parent == top[0] for f in folders if f != top[0]):
        return top[0]
    _check_side_by_side(list(folders), root)
    return None


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
