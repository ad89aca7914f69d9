"""Atomic file writes: a reader (the service loading the manifest, a run resumed after a crash) finds the old
file or the new one, never a truncated one; and the folders a refused write made, taken away again. Torch-free,
so the service side can use it too."""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

# How long another host's temporary file may go unwritten before it counts as a dead writer's. Its pid cannot be
# looked up from here, so its age is all there is: a day is far beyond any write (a cache of a million images is
# written in minutes, even over NFS) and beyond any clock difference between hosts and the file server, and a
# killed writer's file costs only its room until then.
FOREIGN_WRITER_SILENCE_S = 24 * 3600


def process_running(pid: int) -> bool:
    """Whether a process of that pid runs on this host (another user's counts): a file or folder named after a
    process that is gone was left by a kill."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def this_host() -> str:
    """This host's name as a temporary file's name carries it: no dot (the name's fields are split on them), no
    ``@`` (what ends the pid) and nothing a file name cannot hold."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:64] or "localhost"


def temporary_path(path: Path, *, shared: bool = False) -> Path:
    """``NAME.PID.tmp`` beside ``path``; ``NAME.PID@HOST.tmp`` in a ``shared`` folder, which other hosts write to
    as well (a data cache on NFS under multi-node torchrun): a pid tells whether its writer runs only on its
    own host."""
    writer = f"{os.getpid()}@{this_host()}" if shared else str(os.getpid())
    return path.with_name(f"{path.name}.{writer}.tmp")


@dataclass(frozen=True)
class Temporary:
    """What a temporary file's name (:func:`temporary_path`'s) says: the file it becomes and who writes it."""

    target: str
    pid: str
    host: str | None  # None: a name without one, written on this host (or by a version that named no host)


def parse_temporary(name: str) -> Temporary | None:
    """The parts of a temporary file's name, or None for a name that is not one."""
    if not name.endswith(".tmp") or name.count(".") < 2:
        return None
    target, writer = name.removesuffix(".tmp").rsplit(".", 1)
    pid, at, host = writer.partition("@")
    return Temporary(target, pid, host if at else None)


def writer_may_run(tmp: Path) -> bool:
    """Whether the temporary file ``tmp`` may still be written to, so must not be removed: its writer runs on
    this host; or runs on another one, where its pid means nothing here, and has written to it lately
    (:data:`FOREIGN_WRITER_SILENCE_S`). A pid that is no number is kept: whose it is cannot be told."""
    parsed = parse_temporary(tmp.name)
    if parsed is None:
        return False
    if parsed.host is not None and parsed.host != this_host():
        try:
            age = time.time() - tmp.stat().st_mtime
        except OSError:  # gone already, or not ours to look at: either way not ours to remove
            return True
        return age < FOREIGN_WRITER_SILENCE_S
    return not parsed.pid.isdigit() or process_running(int(parsed.pid))


def write_atomic(path: str | Path, write: Callable[[BinaryIO], object], *, shared: bool = False) -> None:
    """Call ``write`` on a temporary file beside ``path``, force it to disk, then rename it over ``path``. What
    ``write`` returns (``f.write``'s count, ``torch.save``'s None) is ignored. ``shared``: a folder other hosts
    write to as well (:func:`temporary_path`)."""
    path = Path(path)
    tmp = temporary_path(path, shared=shared)
    try:
        with open(tmp, "wb") as f:
            try:
                # the file replaced keeps its permissions (a shared folder's 664), not the umask's; not another
                # user's file's (the new one is ours: 640 would lock its old owner out), nor setuid bits
                old = path.stat()
                if old.st_uid == os.geteuid():
                    os.chmod(tmp, stat.S_IMODE(old.st_mode) & 0o777)
            except OSError:
                pass
            write(f)
            f.flush()
            # Without it the rename can reach the disk before the data: a crash then leaves an empty file.
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """The rename reaches the disk with its folder: unsynced, a power loss can undo it, or keep a later rename
    (last.pt's) and lose an earlier one (best.pt's). Where a folder cannot be opened or synced (some network
    file systems), the file's own sync is all there is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> None:
    """UTF-8, but a file name's undecodable bytes (surrogate escapes) as those bytes, the name as it is on disk: a
    strict encoding raised at a report whose heading names a folder that is no UTF-8 text."""
    write_atomic(path, lambda f: f.write(text.encode("utf-8", "surrogateescape")))


def folders_to_make(path: str | Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` of ``path`` would make, deepest first: what :func:`remove_if_empty`
    takes away again when what they were made for is refused. Not an ``x/..``: its rmdir fails, and would stop
    the ``x/`` it stands beside from being taken away."""
    path = Path(path)
    return [folder for folder in (path, *path.parents) if folder.name != ".." and not folder.exists()]


def remove_if_empty(folders: Sequence[Path]) -> None:
    """Take away ``folders``, deepest first, up to the first that is not empty (rmdir takes only an empty one)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def file_in_the_way(path: str | Path) -> Path | None:
    """The file standing where ``path`` or one of the folders above it would be, if any (``mkdir`` then fails
    with errno's bare "File exists" or "Not a directory")."""
    return next((p for p in (Path(path), *Path(path).parents) if p.is_file()), None)
