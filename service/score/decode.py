"""Reading and decoding the scorer's images, in worker processes or in the calling one.

A decode worker writes each chunk's model input into a slot of shared memory and replies with the
positions that decoded and an error per file that did not. No file can make it raise: what a file can
make the decoder raise (``FILE_ERRORS``) is that file's error row, and anything else stops the run
(``DecoderFailure``).
"""

from __future__ import annotations

import os
import signal
import stat
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from inference.image_limits import DEFAULT_MAX_PIXELS, ImageDecodeError, OverPixelLimit
from inference.preprocess import decode_pixels, pixels_to_model_input

from .errors import DecoderFailure

# What a file can make reading and decoding it raise: unreadable, not an image (Pillow's own errors are
# ImageDecodeError), or too large to decode in the memory left. Any other exception says nothing of the file.
FILE_ERRORS = (OSError, ImageDecodeError, MemoryError)

# A 32x32 classifier never needs a file this large; reading one would only cost memory.
MAX_FILE_BYTES = 256 << 20


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


def read_file(path: str | bytes) -> bytes:
    """The file's bytes; ``OSError`` with a readable message otherwise."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in after the walk must not block
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(f"file is {st.st_size} bytes, over the limit of {MAX_FILE_BYTES}")
        parts: list[bytes] = []
        while part := os.read(fd, st.st_size + 1 if not parts else 1 << 20):
            parts.append(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def read_error(exc: OSError) -> str:
    """The error row of a file that could not be read."""
    if isinstance(exc, FileNotFoundError):
        return "file not found (deleted while scoring?)"
    if exc.strerror:
        return f"cannot read file: {exc.strerror}"
    return f"cannot read file: {exc}"


def failure_message(exc: OSError | ImageDecodeError | MemoryError) -> str:
    """The error row of a file that could not be read or decoded (one of ``FILE_ERRORS``), worded alike by every
    engine."""
    if isinstance(exc, OSError):
        return read_error(exc)
    if isinstance(exc, OverPixelLimit):
        return f"{exc}; --max-pixels raises the limit (score again with --overwrite: --resume keeps this row)"
    if isinstance(exc, MemoryError):
        return "could not decode: out of memory (a lower --max-pixels refuses such images before decoding)"
    return str(exc)


def decoder_failure(path: str | bytes, exc: Exception) -> DecoderFailure:
    """What stops the run when decoding ``path`` raised an exception no file explains: as a row it would be every
    file's, in a run that ends 0 and that --resume then takes as done."""
    shown = os.fsdecode(path)
    said = " ".join(str(exc).split())  # one line, whatever the exception's text holds
    return DecoderFailure(
        f"decoding {shown} raised {type(exc).__name__}: {said}: a fault of the decoder or of the arguments it was "
        "given, not of the file"
    )


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


def decode_into(
    shm_name: str,
    offset: int,
    paths: list[str | None],
    size: tuple[int, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    fit: str,
) -> tuple[list[int], dict[int, str]]:
    """``decode_chunk`` in a worker, writing the batch into shared memory at ``offset``; returns (ok, errors).

    The reply stays small (a few hundred bytes), so a worker killed while replying cannot leave a
    half-sent result that would hang the pool, and the pixels are not pickled through a pipe.
    """
    from multiprocessing.shared_memory import SharedMemory

    shm = _attached.get(shm_name)
    if shm is None:
        shm = _attached[shm_name] = SharedMemory(shm_name)
    decoded = decode_chunk(paths, size, max_pixels, fit=fit, out=lambda count: rows_view(shm.buf, offset, count, size))
    return decoded.ok, decoded.errors


def decode_chunk(
    paths: list[str | None],
    size: tuple[int, int],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    out: Callable[[int], np.ndarray] | None = None,
    *,
    fit: str,
) -> Decoded:
    """Read and decode ``paths`` (None: skip that position); never raises for a bad file, and raises
    ``DecoderFailure`` for an exception no file explains.

    ``fit`` has no default, as the decoders' own: the model's card names it (``card.input.fit``).
    ``out(count)``, when given, is where the batch of the ``count`` readable images is written."""
    pixels, ok, errors = [], [], {}
    for i, path in enumerate(paths):
        if path is None:
            continue
        try:
            pixels.append(decode_pixels(read_file(path), size, max_pixels, fit=fit))
            ok.append(i)
        except FILE_ERRORS as exc:
            errors[i] = failure_message(exc)
        except Exception as exc:
            raise decoder_failure(path, exc) from exc
    batch = pixels_to_model_input(b"".join(pixels), len(ok), size, out(len(ok)) if out else None)
    return Decoded(batch, ok, errors)
