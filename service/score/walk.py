"""Finding the images under a folder, lazily and in a fixed order, and reading them in worker processes.

The walk holds one directory's sorted names at a time (never the whole tree),
follows directory symlinks but enters each real directory once (so a link
loop or a second link to the same folder is skipped, not walked forever), and
turns what cannot be opened (broken links, FIFOs, unlistable folders) into
error entries instead of exceptions.

The order is that of ``sorted(paths)`` for ``pathlib`` paths: component by
component, names compared by code point.
"""
from __future__ import annotations

import os
import signal
import stat
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import numpy as np

from inference.preprocess import (DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, ImageDecodeError, decode_pixels,
                                  pixels_to_model_input)

# A 32x32 classifier never needs a file this large; reading one would only cost memory.
MAX_FILE_BYTES = 256 << 20


class Entry(NamedTuple):  # a tuple: one is made per file, and a frozen dataclass costs several times more
    """One file (or unlistable folder) found by the walk."""

    rel: str  # POSIX path relative to the root: the key written to the output
    path: str  # the path to open
    error: str | None = None  # set when the entry failed before it was read


@dataclass
class WalkStats:
    images: int = 0  # entries with an image extension (including those that will fail)
    skipped: int = 0  # files without an image extension
    linked_dirs_skipped: list[str] = field(default_factory=list)  # loops / second links to a visited folder


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


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
                elif entry.is_symlink():
                    kind = "l"
                else:
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
    visited = {_dir_key(root)}
    return _walk([("", root, iter(_listing(root)))], visited, stats)


def _walk(stack: list[tuple[str, str, Iterator[tuple[str, str]]]], visited: set, stats: WalkStats) -> Iterator[Entry]:
    while stack:
        prefix, directory, names = stack[-1]
        item = next(names, None)
        if item is None:
            stack.pop()
            continue
        name, kind = item
        path = os.path.join(directory, name)
        rel = prefix + name
        if kind == "d":
            try:
                key = _dir_key(path)
                if key in visited:
                    stats.linked_dirs_skipped.append(rel)
                    continue
                visited.add(key)
                listing = _listing(path)
            except OSError as exc:
                stats.images += 1
                yield Entry(rel + "/", path, f"cannot list directory: {exc.strerror or exc}")
                continue
            stack.append((rel + "/", path, iter(listing)))
            continue
        if not is_image_name(name):
            stats.skipped += 1
            continue
        stats.images += 1
        if kind == "f":
            yield Entry(rel, path)
        elif kind == "l":
            yield Entry(rel, path, _broken_link_message(path))
        else:
            yield Entry(rel, path, "not a regular file")


def _broken_link_message(path: str) -> str:
    try:
        return f"broken symlink (target {os.readlink(path)!r} does not exist or cannot be reached)"
    except OSError:
        return "file disappeared while scoring"


def count_images(root: str | os.PathLike, stop=None) -> int | None:
    """How many entries ``walk`` will yield (for a progress bar's total); None when stopped early."""
    stats = WalkStats()
    for _ in walk(root, stats):
        if stop is not None and stop.is_set():
            return None
    return stats.images


def worker_init(parent_alive=None, nice: int = 0, parent_end=None) -> None:
    """Set up a decode worker: Ctrl-C is the parent's to handle, exit when the parent dies, lower priority.

    ``parent_alive`` is the read end of a pipe whose only writer is the parent: when the parent is
    killed (SIGKILL, OOM) the read sees EOF. Without this, a worker waiting for work would wait forever.
    ``parent_end`` is that writer, which a forked worker holds a copy of and closes (or EOF never comes).
    ``nice`` lowers the worker's priority so that it decodes in the gaps ONNX Runtime's threads leave
    and does not preempt them mid-batch (their parallel sections wait for the slowest thread).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a forked copy of the parent's handler
    if parent_end is not None:
        parent_end.close()
    if nice:
        try:
            os.nice(nice)
        except OSError:
            pass
    if parent_alive is not None:
        threading.Thread(target=_exit_with_parent, args=(parent_alive,), daemon=True, name="parent-watch").start()


def _exit_with_parent(parent_alive) -> None:
    try:
        parent_alive.recv_bytes()
    except (EOFError, OSError):
        pass
    os._exit(1)


def read_file(path: str) -> bytes:
    """The file's bytes; ``OSError`` with a readable message otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in after the walk must not block
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(f"file is {st.st_size} bytes, over the limit of {MAX_FILE_BYTES}")
        parts = []
        while part := os.read(fd, st.st_size + 1 if not parts else 1 << 20):
            parts.append(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def read_error(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found (deleted while scoring?)"
    if exc.strerror:
        return f"cannot read file: {exc.strerror}"
    return f"cannot read file: {exc}"


@dataclass
class Decoded:
    """A chunk after decoding: the model input of the readable images and an error per unreadable one."""

    batch: np.ndarray  # float32 [n_ok, 3, H, W]
    ok: list[int]  # positions in the chunk of the rows of ``batch``
    errors: dict[int, str]  # position -> message


_attached: dict = {}


def image_bytes(size: tuple[int, int]) -> int:
    """Bytes of one image as model input (float32, 3 x H x W)."""
    return 3 * size[0] * size[1] * 4


def rows_view(buffer, offset: int, count: int, size: tuple[int, int]) -> np.ndarray:
    """``count`` images of model input stored in ``buffer`` from byte ``offset``: float32 [count, 3, H, W]."""
    return np.ndarray((count, 3, *size), dtype=np.float32, buffer=buffer, offset=offset)


def decode_into(shm_name: str, offset: int, paths: list[str | None],
                size: tuple[int, int]) -> tuple[list[int], dict[int, str]]:
    """``decode_chunk`` in a worker, writing the batch into shared memory at ``offset``; returns (ok, errors).

    The reply stays small (a few hundred bytes), so a worker killed while replying cannot leave a
    half-sent result that would hang the pool, and the pixels are not pickled through a pipe.
    """
    from multiprocessing.shared_memory import SharedMemory

    shm = _attached.get(shm_name)
    if shm is None:
        shm = _attached[shm_name] = SharedMemory(shm_name)
    decoded = decode_chunk(paths, size, out=lambda count: rows_view(shm.buf, offset, count, size))
    return decoded.ok, decoded.errors


def decode_chunk(paths: list[str | None], size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS,
                 out: Callable[[int], np.ndarray] | None = None) -> Decoded:
    """Read and decode ``paths`` (None: skip that position); never raises for a bad file.

    ``out(count)``, when given, is where the batch of the ``count`` readable images is written."""
    pixels, ok, errors = [], [], {}
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            pixels.append(decode_pixels(read_file(path), size, max_pixels))
            ok.append(i)
        except OSError as exc:
            errors[i] = read_error(exc)
        except ImageDecodeError as exc:
            errors[i] = str(exc)
        except Exception as exc:  # a decoder bug on one file must not cost the other files
            errors[i] = f"could not decode ({type(exc).__name__}: {exc})"
    batch = pixels_to_model_input(b"".join(pixels), len(ok), size, out(len(ok)) if out else None)
    return Decoded(batch, ok, errors)
