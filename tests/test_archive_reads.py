"""A class-per-folder archive (.tar.gz) where training reads it and where the doctor is given one: what a cached read
says, and what the doctor answers."""

from __future__ import annotations

import argparse
import importlib
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import count_folder_decodes
from training.data.folder import read_image_folder

SIZE = 16
folder_module = importlib.import_module("training.data.folder_layout")
LEFT_OUT = (
    "1 file left out, not images by their extension: .heic (1)",
    "1 image beside the class folders left out, in no class: beside.png",
    "hidden folder left out, not read (a name starting with a dot): pets/.thumbnails",
)


def _archive(tmp_path: Path) -> Path:
    """pets.tar.gz, packed with the folder's name: two classes of images, and a .HEIC photo, an image beside the
    class folders and a hidden folder, none of which is trained on."""
    root = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for name in ("cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "beside.png", ".thumbnails/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / name)
    (root / "cat" / "IMG_1.HEIC").write_bytes(b"not read")
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="pets")
    return archive


def _said(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _read_in_a_new_process(archive: Path, cache_dir: Path, caplog) -> list[str]:
    """The warnings of a read as a new run makes it: nothing said yet in this process."""
    folder_module._said_left_out.clear()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(read_image_folder(archive, SIZE, cache_dir)) == 4
    return _said(caplog)


def test_a_cached_archive_read_says_what_it_leaves_out_as_a_folders_does(tmp_path, caplog, monkeypatch):
    """The first run warned of the archive's left-out files; every later run read its cache and said nothing, so
    a class of .HEIC photos went untrained without a word from the second run on."""
    archive, cache_dir = _archive(tmp_path), tmp_path / "cache"
    first = _read_in_a_new_process(archive, cache_dir, caplog)
    assert all(any(text in line for line in first) for text in LEFT_OUT), first
    decoded = count_folder_decodes(monkeypatch)
    moved = tmp_path / "moved.tar.gz"
    archive.rename(moved)  # the cache is found by contents: its warnings name the archive as given now
    again = _read_in_a_new_process(moved, cache_dir, caplog)
    assert decoded == [], "the second read decoded the archive instead of reading its cache"
    assert all(any(line.startswith(f"{moved}: ") and text in line for line in again) for text in LEFT_OUT), again
    # the same process reads the source once per split: said once
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        read_image_folder(moved, SIZE, cache_dir)
    assert _said(caplog) == []


def test_an_archive_cache_that_does_not_record_what_was_left_out_is_decoded_again(tmp_path, caplog, monkeypatch):
    """A cache written without the record (by a reader before it kept one) cannot say what the archive left out:
    decoded again, quietly, rather than read in silence."""
    archive, cache_dir = _archive(tmp_path), tmp_path / "cache"
    _read_in_a_new_process(archive, cache_dir, caplog)
    (cache,) = cache_dir.glob("*.npz")
    with np.load(cache) as npz:
        kept = {name: npz[name] for name in npz.files if name != "left_out"}
    np.savez(cache, **kept)
    decoded = count_folder_decodes(monkeypatch)
    said = _read_in_a_new_process(archive, cache_dir, caplog)
    assert len(decoded) == 5 and not any("damaged" in line for line in said), said  # beside.png is decoded too
    assert all(any(text in line for line in said) for text in LEFT_OUT), said
    with np.load(cache) as npz:
        assert "left_out" in npz.files  # rewritten: the next run reads it


def _doctor(folder: Path, capsys) -> tuple[int, str]:
    from service.doctor import add_doctor_parser

    parser = argparse.ArgumentParser()
    add_doctor_parser(parser.add_subparsers())
    args = parser.parse_args(["doctor", "--folder", str(folder), "--no-speed", "--device", "cpu"])
    code = args.fn(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("name", ["pets.tar.gz", "pets.tgz", "pets-archive", "pets.zip"])
def test_the_doctor_given_an_archive_says_to_unpack_it(tmp_path, capsys, name):
    """Training reads a .tar.gz of class folders; the doctor answered the same archive with "is not a folder", no
    more."""
    archive = _archive(tmp_path).rename(tmp_path / name) if name != "pets.zip" else tmp_path / name
    if name == "pets.zip":
        archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip archive
    code, err = _doctor(archive, capsys)
    unpack = f"unzip {archive} -d DIR" if name == "pets.zip" else f"tar xf {archive} -C DIR"
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --folder {archive} is an archive, not a folder: unpack it") and unpack in err, err


def test_the_doctor_given_another_file_or_nothing_says_which(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not images")
    code, err = _doctor(tmp_path / "notes.txt", capsys)
    assert code == 2 and err == (
        f"error: --folder {tmp_path / 'notes.txt'} is a file, not a folder: give the folder that holds one sub-folder "
        "per class\n"
    )
    code, err = _doctor(tmp_path / "nope", capsys)
    assert code == 2 and err == f"error: --folder {tmp_path / 'nope'} is not a folder: it does not exist\n"


def test_the_doctors_unpack_command_can_be_pasted_where_the_path_has_spaces(tmp_path, capsys):
    archive = _archive(tmp_path).rename(tmp_path / "my pets.tgz")
    code, err = _doctor(archive, capsys)
    assert code == 2 and f"tar xf '{archive}' -C DIR" in err, err
