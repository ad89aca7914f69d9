"""The decode cache in a folder several hosts share (NFS under multi-node torchrun): a temporary file's pid says
whether its writer runs only on the host that wrote it, so another host's temporary file is left alone unless it
has gone unwritten for a day; this host's are judged by their pid, as before, old names (no host) included."""

from __future__ import annotations

import importlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import inference.files
from inference.files import FOREIGN_WRITER_SILENCE_S, parse_temporary, write_atomic
from training.data.folder import read_image_folder

SIZE = 16
folder_module = importlib.import_module("training.data.folder_cache")
OTHER_HOST = "gpu-node-7"  # a dash, as cluster hosts have: the cache's own name is split on dashes


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.bmp")
    return root


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def _as_another_host(monkeypatch) -> None:
    """This process seen from another host: another host name, and none of this host's pids running."""
    monkeypatch.setattr(socket, "gethostname", lambda: OTHER_HOST)
    for module in (inference.files, folder_module):
        monkeypatch.setattr(module, "process_running", lambda pid: False, raising=False)


def test_another_host_cleaning_the_shared_cache_leaves_a_live_write_alone(tmp_path, monkeypatch):
    """Host B finishes its own decode of the source while host A (this process) writes its cache: B's clean-up
    took A's temporary file for a killed writer's (A's pid runs on no process of B's) and removed it mid-write,
    and A's cache was lost."""
    root, cache_dir = _tree(tmp_path / "pets"), tmp_path / "cache"
    read_image_folder(root, SIZE, cache_dir)
    (earlier,) = cache_dir.glob("*.npz")
    Image.new("RGB", (24, 24), "red").save(root / "cat" / "new.bmp")
    real_savez = np.savez

    def savez_while_another_host_cleans(file, **arrays):
        real_savez(file, **arrays)
        with monkeypatch.context() as other:
            _as_another_host(other)
            folder_module._remove_superseded(earlier)

    monkeypatch.setattr(np, "savez", savez_while_another_host_cleans)
    read_image_folder(root, SIZE, cache_dir)
    monkeypatch.undo()
    (written,) = (path for path in cache_dir.glob("*.npz") if path != earlier)
    assert written.stat().st_size > 0 and not list(cache_dir.glob("*.tmp"))


def test_the_cache_temporary_file_names_its_host_and_others_keep_their_old_name(tmp_path, monkeypatch):
    """The cache's temporary file carries the host (a dash in its name too); write_atomic's other callers keep
    ``NAME.PID.tmp``, the name a run folder's clean-up (training.checkpoint) reads."""
    monkeypatch.setattr(socket, "gethostname", lambda: "node-1.cluster.example")
    seen: list[str] = []
    real_savez = np.savez

    def savez_looking(file, **arrays):
        seen.extend(path.name for path in (tmp_path / "cache").glob("*.tmp"))
        real_savez(file, **arrays)

    monkeypatch.setattr(np, "savez", savez_looking)
    read_image_folder(_tree(tmp_path / "pets"), SIZE, tmp_path / "cache")
    (name,) = seen
    assert name.endswith(f".{os.getpid()}@node-1_cluster_example.tmp"), name
    parsed = parse_temporary(name)
    assert parsed is not None and parsed.target.endswith(".npz") and folder_module._source_of(name).startswith("pets-")

    plain: list[str] = []
    write_atomic(tmp_path / "history.json", lambda f: plain.extend(p.name for p in tmp_path.glob("*.tmp")))
    assert plain == [f"history.json.{os.getpid()}.tmp"]


def test_a_new_decode_removes_dead_writers_files_and_keeps_live_ones_of_every_host(tmp_path, monkeypatch):
    """Another host's temporary file is kept while it was written within a day and removed once older; this
    host's, with or without the host in their name, are removed when their pid runs no more."""
    monkeypatch.setattr(socket, "gethostname", lambda: "this-host")
    root, cache_dir = _tree(tmp_path / "pets"), tmp_path / "cache"
    read_image_folder(root, SIZE, cache_dir)
    (first,) = cache_dir.glob("*.npz")
    dead = _dead_pid()
    day_old = time.time() - FOREIGN_WRITER_SILENCE_S - 60
    files = {
        "other host, writing": (f"{first.name}.{dead}@{OTHER_HOST}.tmp", None, True),
        "other host, silent for a day": (f"{first.name}.{os.getpid()}@{OTHER_HOST}.tmp", day_old, False),
        "this host, killed": (f"{first.name}.{dead}@this-host.tmp", None, False),
        "this host, running": (f"{first.name}.{os.getpid()}@this-host.tmp", day_old, True),
        "old name, killed": (f"{first.name}.{dead}.tmp", None, False),
        "old name, running": (f"{first.name}.{os.getpid()}.tmp", None, True),
    }
    for name, mtime, _ in files.values():
        (cache_dir / name).write_bytes(b"half")
        if mtime is not None:
            os.utime(cache_dir / name, (mtime, mtime))
    Image.new("RGB", (24, 24), "red").save(root / "cat" / "new.bmp")
    read_image_folder(root, SIZE, cache_dir)
    kept = {what: (cache_dir / name).exists() for what, (name, _, _) in files.items()}
    assert kept == {what: keep for what, (_, _, keep) in files.items()}


def test_a_folder_with_a_long_name_is_cached_on_a_host_with_a_long_name(tmp_path, monkeypatch):
    """The cache's file name holds the folder's name, and its temporary file's the pid and host too: a folder named
    in 205 bytes (70 CJK characters reach it) made a temporary name past the file system's 255 bytes, so no cache
    was written and every run decoded again. The name is cut (on a whole character); the digests tell sources
    apart."""
    monkeypatch.setattr(socket, "gethostname", lambda: "gpu-node-7-" + "h" * 60)
    for name in ("p" * 205, "写" * 70):
        root, cache_dir = _tree(tmp_path / name), tmp_path / f"cache-{len(name)}"
        read_image_folder(root, SIZE, cache_dir)
        (cache,) = cache_dir.glob("*.npz")
        assert cache.name.startswith(name[:10]) and len(os.fsencode(cache.name)) <= 255 - 77, cache.name
        assert cache.name.encode("utf-8").decode("utf-8") == cache.name  # cut on a whole character
