"""One run at a time per output file: two runs into one --out (two --resume runs, or a run and an --overwrite)
would interleave their rows or replace each other's.

The lock is ``flock`` on a hidden file beside the output (the output itself is replaced by --overwrite, and a
lock on the file replaced guards nothing). The kernel drops it when its process ends, SIGKILL included, so a
lock file a killed run left behind is simply taken over; it names the pid that holds it.
"""

from __future__ import annotations

import fcntl
import os

from .errors import UserError


class OutputLock:
    """An output's lock, held until ``release``."""

    def __init__(self, fd: int, path: str | None) -> None:
        self.fd = fd
        self.path = path  # the lock file, removed on release; None: the lock is on the output itself

    def release(self) -> None:
        if self.fd < 0:
            return
        if self.path is not None:
            try:
                os.unlink(self.path)  # while still held: a run that opened it meanwhile finds it gone and opens anew
            except OSError:
                pass
        # Unlocked by hand, not left to close(): forked decode workers hold copies of the descriptor.
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = -1


def lock_output(out: str) -> OutputLock | None:
    """``out``'s lock, or UserError naming the run that holds it. None for standard output and what is no
    regular file (a device, a pipe), which no run reads back or replaces."""
    if out == "-" or (os.path.exists(out) and not os.path.isfile(out)):
        return None
    target = os.path.realpath(out)  # a link and the file it names are one output
    folder, name = os.path.split(target)
    path = os.path.join(folder, f".{name}.lock")
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:  # a folder it cannot create in (a --resume of a file in a read-only folder)
            return _lock_itself(out, target)
        _take(fd, out)
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:  # not the file a run that just ended removed, which no later run would find
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:  # a full disk: the lock holds all the same, and a refused run names no pid
        pass
    return OutputLock(fd, path)


def _lock_itself(out: str, target: str) -> OutputLock | None:
    """The lock on the output file itself, where no lock file can be made beside it (it cannot name its pid)."""
    try:
        fd = os.open(target, os.O_RDONLY)
    except OSError:
        return None  # nothing there to guard: opening it for writing fails later, and says why
    _take(fd, out)
    return OutputLock(fd, None)


def _take(fd: int, out: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise UserError(
            f"{out} is being written by another run{holder}: wait for it to end, or give another --out"
        ) from None


def _holder(fd: int) -> str:
    """The pid of the run holding the lock, as " (pid N)", as it wrote it; empty where it has not yet, or cannot."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""
