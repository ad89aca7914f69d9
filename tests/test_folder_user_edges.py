"""Folders of images as users bring them, read by training's folder reader: links packed into an archive, class
names that differ only in case, a folder named by ``.``."""

from __future__ import annotations

import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import DatasetError
from training.data.folder import read_image_folder


def _tree(root: Path, classes: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for cls, count in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


def _pack(tree: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:  # links stored as links, as tar czf stores them
        tar.add(tree, arcname=tree.name)
    return archive


def test_an_archive_reads_hard_and_symbolic_links_as_the_folder_does(tmp_path):
    tree = _tree(tmp_path / "pets", {"cat": 3, "dog": 3})
    os.link(tree / "cat" / "0.png", tree / "cat" / "same.png")
    (tree / "dog" / "again.png").symlink_to("1.png")
    archive = _pack(tree, tmp_path / "pets.tar.gz")
    with tarfile.open(archive) as tar:
        assert sum(m.islnk() or m.issym() for m in tar.getmembers()) == 2  # the archive does hold links

    folder, packed = read_image_folder(tree), read_image_folder(archive)

    assert len(folder) == len(packed) == 8
    assert packed.classes == folder.classes
    assert packed.fingerprint() == folder.fingerprint()


def test_an_archive_link_to_a_file_it_does_not_hold_is_refused_naming_it(tmp_path):
    outside = _tree(tmp_path / "elsewhere", {"x": 1}) / "x" / "0.png"
    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 2})
    (tree / "dog" / "far.png").symlink_to(outside)
    archive = _pack(tree, tmp_path / "pets.tar.gz")

    with pytest.raises(DatasetError, match=r"1 image link points to no file in the archive.*tar -h.*dog/far\.png"):
        read_image_folder(archive)


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "archive"])
def test_class_folders_differing_only_in_case_are_said(tmp_path, caplog, packed):
    tree = _tree(tmp_path / "pets", {"Cat": 2, "cat": 2, "dog": 2})
    source = _pack(tree, tmp_path / "pets.tar.gz") if packed else tree

    with caplog.at_level(logging.WARNING):
        data = read_image_folder(source)

    assert data.classes == ["Cat", "cat", "dog"]  # still two classes: the warning says so
    assert "differ only in case are read as separate classes: Cat and cat" in caplog.text


def test_no_case_warning_for_distinct_classes(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        read_image_folder(_tree(tmp_path / "pets", {"Cat": 2, "dog": 2}))
    assert "differ only in case" not in caplog.text


@pytest.mark.parametrize("given", [".", "./", ".."])
def test_a_folder_given_as_dot_names_its_cache_after_itself(tmp_path, monkeypatch, given):
    tree = _tree(tmp_path / "pets", {"cat": 2, "dog": 2})
    monkeypatch.chdir(tree if given != ".." else tree / "cat")
    cache = tmp_path / "cache"

    read_image_folder(given, cache_dir=cache)

    (written,) = cache.iterdir()
    assert written.name.startswith("pets-"), written.name


def test_a_class_folder_given_as_the_dataset_says_its_images_need_class_folders(tmp_path):
    one_class = _tree(tmp_path / "pets", {"cat": 3}) / "cat"

    with pytest.raises(DatasetError, match=r"holds no class folders, only 3 images directly in it") as refused:
        read_image_folder(one_class)
    assert ".webp" not in str(refused.value)  # not a list of extensions, as if its images went unrecognised


@pytest.mark.parametrize(
    "dataset, files", [("cifar10", ("batches.meta", "data_batch_1")), ("cifar100", ("meta", "train"))]
)
def test_cifars_python_format_folder_given_as_a_folder_of_images_names_its_dataset(tmp_path, dataset, files):
    """`data.dataset=folder data.root=cifar-10-batches-py` was told it holds no images in class folders and given
    the list of image extensions, not that it is the python-format CIFAR another dataset reads."""
    from training.data.folder_layout import _no_images

    for name in files:
        (tmp_path / name).write_bytes(b"\x80\x02}q\x00.")
    said = str(_no_images(tmp_path))
    assert said.endswith(f"data.dataset={dataset} (--dataset {dataset}) reads them"), said
    assert "expected <class>/<image>" in str(_no_images(tmp_path / "elsewhere"))
