"""The folder reader's decode cache (data.cache_dir): where it cannot be written, where its source moved, what it
keys on, and what it leaves behind."""

from __future__ import annotations

import builtins
import errno
import importlib
import logging
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import count_folder_decodes
from training.data import load_split
from training.data.folder import read_image_folder

SIZE = 16
folder_module = importlib.import_module("training.data.folder")  # the package's attribute is the reader


def _tree(root: Path, per_class: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(root / cls / f"{i}.bmp")
    return root


def _read_only(monkeypatch, folder: Path) -> None:
    """Every file opened for writing under ``folder`` refused as a read-only file system refuses it (the tests may
    run as root, whom permissions do not stop)."""
    inside = str(folder.resolve())

    def refused(path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(os.fspath(path)).startswith(inside)

    real_open, real_os_open = builtins.open, os.open

    def open_(file, mode="r", *args, **kwargs):
        if refused(file) and any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        if refused(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_os_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    monkeypatch.setattr(os, "open", os_open)


def _train_and_val(root: Path, cache_dir: Path) -> list:
    """What training reads: the source once per split."""
    return [
        load_split("folder", root, split, val_size=2, cache_dir=cache_dir, image_size=SIZE)
        for split in ("train", "val")
    ]


@pytest.mark.parametrize("unusable", ["a-file", "under-a-file", "read-only"])
def test_an_unusable_cache_folder_is_one_warning_and_the_run_reads_the_images(tmp_path, caplog, monkeypatch, unusable):
    """A cache folder that cannot be written is said once, with its reason, before the decode: training goes on
    with the same images. It was said once per split, after each decode, as errno's "File exists" for a file."""
    root = _tree(tmp_path / "pets")
    expected = [split.fingerprint() for split in _train_and_val(root, tmp_path / "fine")]
    cache_dir = tmp_path / "cache"
    if unusable == "read-only":
        cache_dir.mkdir()
        _read_only(monkeypatch, cache_dir)
        reason = "read-only file system"
    else:
        (tmp_path / "cache").write_text("not a folder")
        cache_dir = cache_dir / "inside" if unusable == "under-a-file" else cache_dir
        reason = f"{tmp_path / 'cache'} is a file"
    with caplog.at_level(logging.WARNING):
        got = [split.fingerprint() for split in _train_and_val(root, cache_dir)]
    assert got == expected
    # warnings only: where an earlier test's command set the project's loggers to INFO, the first read's "kept" line
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "cache" in r.getMessage()]
    assert len(said) == 1, said
    assert f"dataset cache in {cache_dir} ({reason})" in said[0] and "decoded again at every read" in said[0]
    if unusable == "read-only":
        assert list(cache_dir.iterdir()) == []


def test_a_full_disk_leaves_no_partial_cache_for_the_next_run(tmp_path, caplog, monkeypatch):
    """A write that fails part way (no space left) is said and removed: the next run decodes, never trusts half a
    file."""
    root = _tree(tmp_path / "pets")
    cache_dir = tmp_path / "cache"
    savez = np.savez

    def full(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    with caplog.at_level(logging.WARNING):
        fresh = read_image_folder(root, SIZE, cache_dir)
    assert "(no space left on device)" in caplog.text and list(cache_dir.iterdir()) == []
    monkeypatch.setattr(np, "savez", savez)
    decoded = count_folder_decodes(monkeypatch)
    assert read_image_folder(root, SIZE, cache_dir).fingerprint() == fresh.fingerprint() and len(decoded) == 6


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "archive"])
def test_a_moved_source_reads_its_cache(tmp_path, monkeypatch, packed):
    """The same images under another name or place (mv keeps names, sizes and mtimes) read the cache they
    wrote: the key held the resolved path, so every move decoded everything again and left a second cache."""
    source = _tree(tmp_path / "pets")
    if packed:
        with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as tar:
            tar.add(source, arcname=".")
        source = tmp_path / "pets.tar.gz"
    cache_dir = tmp_path / "cache"
    first = read_image_folder(source, SIZE, cache_dir)
    moved = tmp_path / "elsewhere" / ("pets-2024.tar.gz" if packed else "pets-2024")
    moved.parent.mkdir()
    source.rename(moved)
    decoded = count_folder_decodes(monkeypatch)
    again = read_image_folder(moved, SIZE, cache_dir)
    assert decoded == [] and again.fingerprint() == first.fingerprint() and again.classes == first.classes
    assert len(list(cache_dir.glob("*.npz"))) == 1


def test_an_archive_replaced_by_one_of_the_same_size_and_mtime_is_decoded_again(tmp_path, monkeypatch):
    """Another archive copied over the first with its size and mtime (cp -p, rsync of a regenerated set):
    its own images, not the cached ones of the archive it replaced."""
    archive = tmp_path / "pets.tar"
    cache_dir = tmp_path / "cache"
    for seed in (0, 1):
        tree = _tree(tmp_path / f"tree{seed}", seed=seed)  # BMPs of the same sizes: archives of the same length
        with tarfile.open(tmp_path / f"{seed}.tar", "w") as tar:
            tar.add(tree, arcname=".")
    shutil.copy(tmp_path / "0.tar", archive)
    stat = archive.stat()
    read_image_folder(archive, SIZE, cache_dir)
    shutil.copy(tmp_path / "1.tar", archive)
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert archive.stat().st_size == stat.st_size
    expected = read_image_folder(tmp_path / "1.tar", SIZE)
    assert read_image_folder(archive, SIZE, cache_dir).fingerprint() == expected.fingerprint()


def test_a_new_decode_replaces_the_sources_earlier_one(tmp_path):
    """Images added to a folder: its new cache replaces the one before (each edit left another file of the whole
    set, forever), and temporary files that killed writers left are removed; another image size's cache, another
    folder's, and a running writer's file are kept."""
    root = _tree(tmp_path / "pets")
    other = _tree(tmp_path / "other" / "pets", seed=3)  # the same name elsewhere: another source
    cache_dir = tmp_path / "cache"
    read_image_folder(root, SIZE, cache_dir)
    (first,) = cache_dir.glob("*.npz")
    read_image_folder(root, 2 * SIZE, cache_dir)
    read_image_folder(other, SIZE, cache_dir)
    kept = set(cache_dir.glob("*.npz"))
    killed = cache_dir / f"{first.name}.999999999.tmp"
    running = cache_dir / f"{first.name}.{os.getpid()}.tmp"
    killed.write_bytes(b"half")
    running.write_bytes(b"half")
    Image.new("RGB", (24, 24), "red").save(root / "cat" / "new.bmp")
    read_image_folder(root, SIZE, cache_dir)
    after = set(cache_dir.glob("*.npz"))
    assert len(after) == 3 and kept - after == {first} and not killed.exists() and running.exists()


@pytest.mark.parametrize("where", [0.25, 0.5, 0.75])
def test_a_bit_flipped_cache_is_decoded_again_and_rewritten(tmp_path, caplog, monkeypatch, where):
    """A cache damaged on disk fails the zip's CRC: said, decoded again and rewritten, never trained on."""
    root = _tree(tmp_path / "pets")
    cache_dir = tmp_path / "cache"
    fresh = read_image_folder(root, SIZE, cache_dir)
    (cache,) = cache_dir.glob("*.npz")
    data = bytearray(cache.read_bytes())
    data[int(len(data) * where)] ^= 0x10
    cache.write_bytes(bytes(data))
    decoded = count_folder_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING):
        assert read_image_folder(root, SIZE, cache_dir).fingerprint() == fresh.fingerprint()
    assert "is damaged" in caplog.text and len(decoded) == 6
    assert read_image_folder(root, SIZE, cache_dir).fingerprint() == fresh.fingerprint() and len(decoded) == 6


def test_a_training_without_a_cache_decodes_its_folder_once(tmp_path, monkeypatch):
    """The training and validation splits were read one after the other, each decoding the whole folder where no
    cache keeps it (data.cache_dir empty, or a folder it cannot be written in)."""
    from training.config_recipes import build_config
    from training.run_data import load_data

    root = _tree(tmp_path / "pets", per_class=6)
    sets = [f"data.root={root}", "data.dataset=folder", "data.val_size=4", "data.cache_dir="]
    decoded = count_folder_decodes(monkeypatch)
    train, val = load_data(build_config("resnet9_half_cpu", sets))
    assert (len(train), len(val)) == (8, 4) and val is not None
    assert len(decoded) == 12
