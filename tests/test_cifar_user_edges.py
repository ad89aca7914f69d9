"""The python-format CIFAR folders as a user points data.root at them: a copy renamed, the other CIFAR renamed, the
unpacked JPEG tree, a file inside the folder, an unpacking cut short; and a validation split that takes whole
classes, which says the largest one that works."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_arrays, tiny_overrides, write_cifar10, write_cifar100
from training.__main__ import main as training_main
from training.data import DATASETS, DatasetError, load_split
from training.data.split import stratified_split


def _renamed(root: Path, folder: str, name: str) -> Path:
    renamed = root / name
    shutil.move(root / folder, renamed)
    return renamed


@pytest.mark.parametrize(
    "dataset, write, folder",
    [("cifar10", write_cifar10, "cifar-10-batches-py"), ("cifar100", write_cifar100, "cifar-100-python")],
)
def test_a_renamed_python_format_folder_given_as_the_root_is_read(tmp_path, dataset, write, folder):
    """The refusal said "expected ... at ROOT/<folder> (or ROOT itself)" of the very folder it refused, for its
    name alone."""
    write(tmp_path)
    expected = load_split(dataset, tmp_path, "all")
    renamed = _renamed(tmp_path, folder, f"my-{dataset}")
    data = load_split(dataset, renamed, "all")
    assert data.classes == expected.classes and np.array_equal(data.images, expected.images)
    assert np.array_equal(data.labels, expected.labels)


@pytest.mark.parametrize(
    "asked, write, folder, hint",
    [
        ("cifar10", write_cifar100, "cifar-100-python", "holds 'meta', as the python-format cifar100's folder does: "),
        ("cifar100", write_cifar10, "cifar-10-batches-py", "holds 'batches.meta', as the python-format cifar10's"),
    ],
)
def test_the_other_cifar_renamed_is_named_as_the_other_dataset(tmp_path, asked, write, folder, hint):
    write(tmp_path)
    renamed = _renamed(tmp_path, folder, "data")
    with pytest.raises(DatasetError, match=hint) as refused:
        DATASETS.get(asked)(renamed)
    assert "download and unpack" not in str(refused.value)


def _jpeg_tree(root: Path) -> Path:
    """The shared archive's layout, unpacked: cifar10/train/<class>/<image>."""
    images, labels = make_arrays(2, 2)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / "cifar10" / "train" / ["cat", "dog"][label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:04d}.jpg")
    return root


def test_the_unpacked_jpeg_tree_given_to_cifar10_points_to_the_folder_dataset(tmp_path, capsys):
    """It said "download and unpack the dataset there first" of a folder holding the dataset's images."""
    root = _jpeg_tree(tmp_path / "unpacked")
    overrides = tiny_overrides(root, tmp_path / "cache", **{"data.dataset": "cifar10"})
    code = training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "holds images (cifar10/train/cat/0000.jpg)" in err[0] and "data.dataset=folder" in err[0], err
    assert "download" not in err[0]


def test_a_file_of_the_python_format_folder_given_as_the_root_names_the_folder(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    with pytest.raises(
        DatasetError, match=f"is a file of the python-format folder: give the folder, data.root={folder}$"
    ):
        DATASETS.get("cifar10")(folder / "data_batch_1")


def test_every_file_an_unpacking_left_out_is_named_at_once(tmp_path):
    """Only the first missing batch was named, after the batches before it were read; the next start found the
    next one."""
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    for name in ("data_batch_3", "data_batch_5"):
        (folder / name).unlink()
    with pytest.raises(DatasetError, match=r"lacks data_batch_3, data_batch_5 of the python-format cifar10 .*again$"):
        load_split("cifar10", tmp_path, "all")
    assert len(load_split("cifar10", tmp_path, "test")) == 10  # the test split needs neither


@pytest.mark.parametrize("keep", [0, 1000])
def test_a_batch_cut_short_says_to_unpack_it_again(tmp_path, keep):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:keep])
    with pytest.raises(DatasetError, match=rf"cannot read {batch} \(.+\): it is damaged or cut short, .*unpack the "):
        load_split("cifar10", tmp_path, "all")


def test_a_split_that_takes_whole_classes_says_the_largest_one_that_works():
    """A val_size of 49,999 of CIFAR's 50,000 named nine classes and said only "lower val_size"; the largest that
    leaves each class an image to train on is the number of images less the number of classes."""
    labels = np.repeat(np.arange(10), 50)
    with pytest.raises(DatasetError, match=r"classes 0, 1, 2, 3, 4 and 4 more into .*: a val_size of at most 490 "):
        stratified_split(labels, 499)
    train, val = stratified_split(labels, 490)
    assert len(val) == 490 and np.array_equal(np.unique(labels[train]), np.arange(10))
    with pytest.raises(DatasetError, match="at most 490 leaves every class an image"):
        stratified_split(labels, 491)


@pytest.mark.parametrize("inside", ["", "cifar-10-batches-bin/"])
def test_the_binary_release_is_named_as_the_format_not_read(tmp_path, inside):
    """It said "download and unpack the dataset there first" of a folder holding the dataset's other release."""
    (tmp_path / inside).mkdir(parents=True, exist_ok=True)
    (tmp_path / inside / "data_batch_1.bin").write_bytes(bytes(3073))
    (tmp_path / inside / "batches.meta.txt").write_text("airplane\n")
    with pytest.raises(DatasetError, match=f"holds {inside}data_batch_1.bin, of CIFAR's binary release, which is not"):
        DATASETS.get("cifar10")(tmp_path)
