"""Training package: registries, readers, split, augmentation, config, training, resume, torchrun."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, make_arrays, tiny_overrides, torchrun, train_straight_and_resumed, write_cifar10
from training.checkpoint import load_checkpoint
from training.config import AUGMENT_PRESETS, ConfigError
from training.config_recipes import build_config
from training.data import DATASETS, DatasetError, load_split, stratified_split
from training.data.augment import AugmentParams, augment_batch, cutout, random_crop
from training.data.folder import read_image_folder
from training.data.mix import MixedTargets, MixParams, mix_batch, mixed_cross_entropy
from training.engine import train
from training.models import count_parameters, create_model, list_models
from training.optim import lr_factor
from training.plots import CurveInfo, plot_training_curves
from training.registry import Registry

# Published parameter counts for 10 classes.
PUBLISHED = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    "se_resnet18": 11_263_042,
    "wrn_28_10": 36_479_194,
    "wrn_16_8": 10_961_370,
}


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("classes", [10, 100])
def test_every_model_forward(name, classes):
    model = create_model(name, classes).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, classes) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,count", PUBLISHED.items())
def test_parameter_counts_match_published(name, count):
    assert abs(count_parameters(create_model(name)) - count) / count < 0.005


def test_se_switch_and_reduction():
    assert count_parameters(create_model("se_resnet18", use_se=False)) == count_parameters(create_model("resnet18"))
    assert count_parameters(create_model("se_resnet18", reduction=8)) > count_parameters(create_model("se_resnet18"))
    assert abs(count_parameters(create_model("wrn", depth=16, widen=8)) - PUBLISHED["wrn_16_8"]) < 10


def test_registry_errors():
    with pytest.raises(KeyError, match="valid names: .*resnet18"):
        create_model("resnet19")
    reg = Registry("thing")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="duplicate"):
        reg.register("a")(lambda: 2)
    assert {"cifar10", "cifar100", "folder"} <= set(DATASETS.names())


def test_split_is_deterministic_and_stratified():
    labels = np.repeat(np.arange(10), 5000)
    train_idx, val_idx = stratified_split(labels, 5000, seed=42)
    again = stratified_split(labels, 5000, seed=42)
    assert np.array_equal(val_idx, again[1]) and np.array_equal(train_idx, again[0])
    assert len(val_idx) == 5000 and len(train_idx) == 45000
    assert not set(train_idx) & set(val_idx)
    assert np.bincount(labels[val_idx]).tolist() == [500] * 10
    assert not np.array_equal(val_idx, stratified_split(labels, 5000, seed=1)[1])
    # PCG64 is specified bit-for-bit: this digest must be the same on every machine.
    digest = hashlib.sha256(val_idx.astype("<i8").tobytes()).hexdigest()[:16]
    assert digest == EXPECTED_SPLIT_DIGEST


EXPECTED_SPLIT_DIGEST = "a4e895a5ba0bc1ab"  # recorded once; a change means the split moved


def test_split_uneven_classes():
    labels = np.array([0] * 7 + [1] * 3)
    tr, va = stratified_split(labels, 5, seed=0)
    counts = np.bincount(labels[va])
    assert len(va) == 5 and counts.sum() == 5 and (np.abs(counts - np.array([3.5, 1.5])) < 1).all()
    with pytest.raises(DatasetError):
        stratified_split(labels, 10)


def test_a_missing_relative_dataset_names_where_it_was_looked_for(tmp_path, monkeypatch):
    """The default data root is relative to the repository: started elsewhere, the message says where it
    looked, not only the relative path that looks right."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as missing:
        read_image_folder("../shared/data/cifar10.tar.gz")
    here = Path(os.getcwd())  # tmp_path with its links resolved, as the message gives it
    assert f"relative to the current folder {here}" in str(missing.value)
    assert str(here.parent / "shared/data/cifar10.tar.gz") in str(missing.value)
    with pytest.raises(DatasetError) as absolute:
        read_image_folder(tmp_path / "none")
    assert "current folder" not in str(absolute.value)


def test_cifar_python_readers(cifar10_root, cifar100_root):
    train = DATASETS.get("cifar10")(cifar10_root)
    test = DATASETS.get("cifar10")(cifar10_root, train=False)
    assert train.images.shape == (60, 32, 32, 3) and train.classes[3] == "cat" and len(test) == 10
    images, labels = make_arrays(10, 6)
    # data_batch_1 holds every 5th image from 0: the first image must round-trip pixel for pixel
    assert np.array_equal(train.images[0], images[0]) and train.labels[0] == labels[0]
    c100 = load_split("cifar100", cifar100_root, "train", val_size=100)
    assert len(c100) == 100 and len(c100.classes) == 100 and np.bincount(c100.labels).max() == 1
    # Not resized, so another size is refused rather than recorded as the model's input.
    for name, root in (("cifar10", cifar10_root), ("cifar100", cifar100_root)):
        with pytest.raises(DatasetError, match="data.image_size must be 32, not 64"):
            load_split(name, root, "train", val_size=10, image_size=64)


def test_cifar_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        DATASETS.get("cifar10")(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="batches.meta"):
        DATASETS.get("cifar10")(tmp_path)


class _RunsCode:
    def __reduce__(self):
        return (os.makedirs, (str(Path.cwd() / "ran"),))


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_cifar_batch_file_is_read_without_running_what_it_names(tmp_path, monkeypatch, protocol):
    """pickle.load runs what a file names: a batch file of unknown origin (a dataset mirror, a shared disk) could
    run code as the training does. Only numpy's arrays are looked up; anything else is refused, not run. Batches
    written by Python 2 (protocol 2, the published files) and by today's numpy both still read."""
    monkeypatch.chdir(tmp_path)
    write_cifar10(tmp_path / "ok", per_class=2)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["batches.meta"]:
        path = tmp_path / "ok" / "cifar-10-batches-py" / name
        value = pickle.loads(path.read_bytes())
        if "data" in value:  # the published batches: bytes keys' values, numpy arrays and a numpy label list
            value = {**value, "batch_label": b"training batch", "labels": list(np.array(value["labels"]))}
        path.write_bytes(pickle.dumps(value, protocol=protocol))
    assert len(DATASETS.get("cifar10")(tmp_path / "ok")) == 20
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": _RunsCode()}, protocol=protocol))
    with pytest.raises(DatasetError, match=r"batches.meta: it refers to (os|posix)\.\w+, which no CIFAR batch holds"):
        DATASETS.get("cifar10")(tmp_path)
    assert not (tmp_path / "ran").exists()


def test_folder_reader_tree_and_cache(image_folder, tmp_path):
    data = read_image_folder(image_folder, cache_dir=tmp_path)
    assert data.classes == ["alpha", "beta", "gamma"] and len(data) == 60
    assert list(tmp_path.glob("*.npz"))
    cached = read_image_folder(image_folder, cache_dir=tmp_path)
    assert np.array_equal(cached.images, data.images) and cached.classes == data.classes


@pytest.mark.parametrize(
    "extra, said",
    [
        ("cat/kittens/k.png", "(cat/ and cat/kittens/)"),  # would have been a class 'kittens'
        ("dog/2019/d.png", "(cat/ and dog/2019/)"),
        ("more/cat/c.png", "(cat/ and more/cat/)"),  # would have merged into 'cat'
        ("dog/broken.png", "1 of 3 images cannot be used (remove or fix them): dog/broken.png: not a readable image"),
    ],
)
def test_folder_reader_refuses_class_folders_out_of_line_and_names_an_unreadable_image(tmp_path, extra, said):
    from PIL import Image

    root = tmp_path / "tree"
    for name in ("cat/0.png", "dog/0.png", extra):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32)).save(root / name)
    if extra.endswith("broken.png"):
        (root / extra).write_bytes(b"\x89PNG cut short")
    with pytest.raises(DatasetError) as refused:
        read_image_folder(root)
    assert said in str(refused.value)


def _tree(root: Path, names: list[str], value: int = 0) -> Path:
    from PIL import Image

    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (value, 2 * value % 256, 3 * value % 256)).save(root / name)
    return root


def test_folder_reader_follows_symlinked_class_folders_once_and_says_which_folders_it_left_out(tmp_path, caplog):
    elsewhere = _tree(tmp_path / "elsewhere", ["0.png", "1.png"])
    root = _tree(tmp_path / "tree", ["cat/0.png", "cat/1.png"])
    (root / "dog").symlink_to(elsewhere, target_is_directory=True)
    (root / "cat" / "up").symlink_to(root, target_is_directory=True)  # a loop: not followed
    (root / "bird").mkdir()
    (root / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a Mac's copy: metadata, no image
    with caplog.at_level(logging.WARNING):
        data = read_image_folder(root)
    assert data.classes == ["cat", "dog"] and len(data) == 4
    assert "left out, not classes: bird" in caplog.text


def test_folder_reader_leaves_hidden_folders_out_and_says_what_else_it_left_out_every_time(tmp_path, caplog):
    """A viewer's .thumbnails/ is no class; an image beside the class folders is in none, and both warnings
    are said again when the decoded images come from the cache."""
    root = _tree(tmp_path / "tree", ["cat/0.png", "dog/0.png", ".thumbnails/0.png", "cat/.1.png", "stray.png"])
    (root / "bird").mkdir()
    import importlib

    folder_module = importlib.import_module("training.data.folder_layout")
    for _ in range(2):  # decoded, then from the cache in the next run (said once per run, not per split read)
        folder_module._said_left_out.clear()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            data = read_image_folder(root, cache_dir=tmp_path / "cache")
        assert data.classes == ["cat", "dog"] and len(data) == 2
        assert "1 image beside the class folders left out, in no class: stray.png" in caplog.text
        assert "left out, not classes: bird" in caplog.text
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_image_folder(root, cache_dir=tmp_path / "cache")  # the same run's other split
    assert "left out" not in caplog.text


def test_folder_reader_refuses_a_class_folder_it_cannot_list_and_a_link_to_nothing(tmp_path, monkeypatch):
    """Either would otherwise be skipped without a word: a class folder it may not read (left out as one
    "without images", so the model would lack that class), an image link whose target is gone."""
    root = _tree(tmp_path / "tree", ["cat/0.png", "dog/0.png"])
    scandir = os.scandir

    def denied(path="."):
        if Path(path).name == "dog":  # as for a user without read permission on it (the tests may run as root)
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(DatasetError, match=f"cannot list the folder {root / 'dog'}: permission denied"):
        read_image_folder(root)
    monkeypatch.setattr(os, "scandir", scandir)
    (root / "dog" / "1.png").symlink_to(tmp_path / "moved" / "1.png")
    with pytest.raises(DatasetError, match=r"1 image link points to nothing \(remove or fix them\): dog/1.png"):
        read_image_folder(root)


def test_folder_reader_unifies_class_names_and_lists_every_unusable_image_in_one_pass(tmp_path):
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "café")  # as a folder copied from macOS spells it
    root = _tree(tmp_path / "tree", [f"{decomposed}/0.png", "dog/0.png", "dog/1.png", "dog/2.png"])
    assert read_image_folder(root).classes == ["café", "dog"] == [unicodedata.normalize("NFC", "café"), "dog"]
    (root / "dog" / "1.png").write_bytes(b"")
    (root / "dog" / "2.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError) as refused:
        read_image_folder(root)
    said = str(refused.value)
    assert "2 of 4 images cannot be used" in said and "dog/1.png: empty file" in said and "dog/2.png: not a" in said


def test_folder_reader_refuses_a_name_that_is_not_text_naming_it(tmp_path):
    root = _tree(tmp_path / "tree", ["dog/0.png"])
    latin1 = os.fsdecode(bytes(root) + b"/caf\xe9")  # a folder named in Latin-1 on a UTF-8 file system
    _tree(Path(latin1), ["0.png"])
    with pytest.raises(DatasetError, match="the folder name 'caf\ufffd' is not UTF-8 text"):
        read_image_folder(root, cache_dir=tmp_path / "cache")
    Path(latin1, "0.png").rename(Path(latin1).parent / "dog" / os.fsdecode(b"\xe9t\xe9.png"))
    os.rmdir(latin1)  # a file's own name names no class: read, and cached
    assert len(read_image_folder(root, cache_dir=tmp_path / "cache")) == 2


def test_a_large_photo_of_ones_own_is_not_held_to_the_services_upload_limit(tmp_path):
    from PIL import Image

    from inference.image_limits import DEFAULT_MAX_PIXELS

    root = _tree(tmp_path / "tree", ["cat/0.png", "dog/0.png"])
    side = int(DEFAULT_MAX_PIXELS**0.5) + 8  # just over the service's limit
    Image.new("RGB", (side, side), (200, 0, 0)).save(root / "cat" / "big.jpg", quality=50)
    data = read_image_folder(root)
    assert len(data) == 3 and data.images[data.labels == 0][1][16, 16, 0] > 150  # cat/big.jpg, after cat/0.png


def test_folder_reader_names_a_damaged_archive_and_a_file_it_cannot_read(tmp_path):
    root = _tree(tmp_path / "tree", [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(30)])
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        tar.add(root, arcname="tree")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a download that stopped half-way
    with pytest.raises(DatasetError, match="cut.tar.gz: it is truncated or damaged"):
        read_image_folder(cut)
    plain = tmp_path / "whole.tar"
    with tarfile.open(plain, "w") as tar:
        tar.add(root, arcname="tree")
    assert len(read_image_folder(plain)) == 60
    with tarfile.open(plain) as tar:
        members = tar.getmembers()
        boundary = members[len(members) // 2].offset  # a copy cut between two members, on a block boundary
    short = tmp_path / "short.tar"
    short.write_bytes(plain.read_bytes()[:boundary])
    with pytest.raises(DatasetError, match="short.tar: it is truncated or damaged .*without the end-of-archive"):
        read_image_folder(short)  # tarfile alone reads it as a smaller dataset, without a word
    (tmp_path / "photos.zip").write_bytes(b"PK\x03\x04 not read")
    (tmp_path / "cat.png").write_bytes((root / "cat" / "0.png").read_bytes())
    for name in ("photos.zip", "cat.png"):
        with pytest.raises(DatasetError, match="is a file, not a folder of class folders"):
            read_image_folder(tmp_path / name)
    upper = tmp_path / "WHOLE.TAR.GZ"
    upper.write_bytes(whole.read_bytes())
    assert len(read_image_folder(upper)) == 60  # the suffix in capitals is still an archive


def test_the_cache_of_a_tree_sees_an_image_replaced_inside_a_class_folder(tmp_path):
    """The cache is keyed by every image's name, size and mtime: an image overwritten in place (the class
    folder's own mtime unchanged) or a file added deeper down is decoded again, not read stale."""
    root = _tree(tmp_path / "tree", ["cat/0.png", "dog/0.png"], value=10)
    first = read_image_folder(root, cache_dir=tmp_path / "cache")
    folder_mtime = (root / "cat").stat().st_mtime_ns
    _tree(root, ["cat/0.png"], value=200)
    os.utime(root / "cat", ns=(folder_mtime, folder_mtime))
    again = read_image_folder(root, cache_dir=tmp_path / "cache")
    assert not np.array_equal(first.images[0], again.images[0]) and again.images[0, 0, 0, 0] == 200


def test_a_split_that_leaves_a_class_nothing_to_train_on_is_refused_naming_it():
    # two validation images of three: whichever classes give them, one is left with none to train on
    labels = np.array([0] + [1] * 2)
    with pytest.raises(DatasetError, match="every image of class rare into validation"):
        stratified_split(labels, 2, classes=["rare", "common"])


def test_training_refuses_one_class_and_ends_a_diverging_run_in_one_line(tmp_path, capsys):
    from training.__main__ import main as training_main
    from training.run_data import channel_stats

    one = _tree(tmp_path / "one", [f"cat/{i}.png" for i in range(20)])
    sets = tiny_overrides(one, tmp_path / "cache", epochs=1, **{"data.val_size": 4, "batch_size": 4})
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "holds 1 class (cat): a classifier needs images in at least two class folders" in err, err
    # Blue is 0 in every image: its std is 0, which would divide by zero at any learning rate.
    mean, std = channel_stats(np.zeros((4, 32, 32, 3), np.uint8) + np.array([10, 20, 0], np.uint8))
    assert std == [1.0, 1.0, 1.0] and mean[2] == 0.0
    two = _tree(tmp_path / "two", [f"{c}/{i}.png" for c in ("cat", "dog") for i in range(10)], value=50)
    sets = tiny_overrides(two, tmp_path / "cache", epochs=1, lr=1e30, **{"data.val_size": 4, "batch_size": 4})
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert "error: training loss is not finite at epoch 1" in err and "Traceback" not in err, err


def test_folder_reader_fits_photos_as_serving_does_and_caches_each_fit_apart(tmp_path):
    """A folder of 4:3 images: each fit gives the service's pixels (inference.preprocess), and a cache
    written under one fit is not read back for another."""
    from PIL import Image

    from inference.fits import FITS
    from inference.preprocess import decode_image

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    files = sorted(root.rglob("*.png"))
    seen = {}
    for fit in FITS:
        for _ in range(2):  # decoded, then read back from the cache
            arrays = read_image_folder(root, 32, tmp_path / "cache", fit=fit)
            expected = np.stack([decode_image(f.read_bytes(), fit=fit) for f in files])
            np.testing.assert_array_equal(arrays.images, expected)
        seen[fit] = arrays.images
    assert not np.array_equal(seen["center_crop"], seen["squash"])
    assert not np.array_equal(seen["pad"], seen["squash"])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == len(FITS)
    assert build_config("resnet9_half_cpu", []).data.fit == "center_crop"
    with pytest.raises(ConfigError, match="fit"):
        build_config("resnet9_half_cpu", ["data.fit=stretch"])


def test_the_run_records_its_fit_and_the_cards_input_spec_takes_it(tiny_run):
    """What export writes on the card is input_spec's answer (tests/test_score.py reads it back from an exported
    card)."""
    from export.onnx_export import input_spec

    meta = load_checkpoint(tiny_run / "best.pt")["meta"]
    assert meta["fit"] == "center_crop"
    assert input_spec(meta).fit == "center_crop"
    assert input_spec({**meta, "fit": "pad"}).fit == "pad"
    assert input_spec(meta, "squash").fit == "squash"  # export --fit
    older = {k: v for k, v in meta.items() if k != "fit"}  # a run from before runs recorded one
    assert input_spec(older).fit == "center_crop"


def test_folder_reader_on_shared_archive_sample(shared_archive, tmp_path):
    """A few real JPEGs from the shared archive, read both as a tree and as a .tar.gz."""
    tree = tmp_path / "tree"
    picked = []
    with tarfile.open(shared_archive) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(("0000.jpg", "0001.jpg")):
                picked.append(member)
            if len(picked) == 20:
                break
        tar.extractall(tree, members=picked, filter="data")
    sub = tmp_path / "sample.tar.gz"
    with tarfile.open(sub, "w:gz") as out:
        out.add(tree / "cifar10", arcname="cifar10")
    from_tree = read_image_folder(tree / "cifar10" / "train")
    from_tar = read_image_folder(sub)
    assert len(from_tree) == 20 and from_tree.classes[0] == "airplane" and len(from_tree.classes) == 10
    assert np.array_equal(from_tree.images, from_tar.images) and from_tree.classes == from_tar.classes
    assert from_tree.images.std() > 10  # real pictures, not blanks


def test_augmentations():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    crop = random_crop(x, 4, gen)
    assert crop.shape == x.shape and not torch.equal(crop, x)
    holes = cutout(torch.full((4, 3, 32, 32), 255, dtype=torch.uint8), 16, gen)
    zeros = (holes == 0).all(1).sum((1, 2))
    assert (zeros > 0).all() and (zeros <= 256).all()
    none = augment_batch(x, AugmentParams(crop_padding=0, flip=False), gen)
    assert torch.allclose(none, x.float() / 255)
    jittered = augment_batch(x, AugmentParams(0, False, 0, 0.4), gen)
    assert jittered.min() >= 0 and jittered.max() <= 1 and not torch.allclose(jittered, none)


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
@pytest.mark.parametrize("seed", range(4))
def test_mix(kind, seed):
    """Each image is filled with its own index and is its own class, so what was mixed into it can be read
    from its pixels: the second targets must name that image, and lam must be the share of the first."""
    gen = torch.Generator().manual_seed(seed)
    n = 16
    x, y = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, 32, 32).clone(), torch.arange(n)
    params = MixParams(mixup_alpha=1.0 if kind == "mixup" else 0, cutmix_alpha=1.0 if kind == "cutmix" else 0)
    mixed, target = mix_batch(x, y, params, gen)
    assert isinstance(target, MixedTargets) and 0 <= target.lam <= 1 and torch.equal(target.y_a, y)
    assert sorted(target.y_b.tolist()) == list(range(n))  # a permutation of the batch
    for i in range(n):
        j = int(target.y_b[i])
        if kind == "mixup":
            assert torch.allclose(mixed[i], torch.full_like(mixed[i], target.lam * i + (1 - target.lam) * j))
        elif j != i:  # a box of image j pasted into image i: lam is the share of i's own pixels left
            own = (mixed[i] == i).float().mean().item()
            assert own == pytest.approx(target.lam) and torch.all((mixed[i] == i) | (mixed[i] == j))
        else:
            assert torch.equal(mixed[i], x[i])
    logits = torch.randn(n, n)
    expected = target.lam * torch.nn.functional.cross_entropy(logits, target.y_a) + (
        1 - target.lam
    ) * torch.nn.functional.cross_entropy(logits, target.y_b)
    assert torch.allclose(mixed_cross_entropy(logits, target), expected)


def test_a_data_path_from_home_is_expanded(monkeypatch, tmp_path):
    """`--set data.root=~/photos`: the shell leaves a ~ after '=' alone, so the config expands it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = build_config("resnet9_half_cpu", ["data.root=~/photos", "data.cache_dir=~/cache"])
    assert (cfg.data.root, cfg.data.cache_dir) == (str(tmp_path / "photos"), str(tmp_path / "cache"))


def test_config_overrides_reach_their_fields():
    cfg = build_config(
        "wrn_28_10",
        [
            "lr=0.05",
            "cutmix_alpha=0.7",
            "mixup_alpha=0.2",
            "use_se=false",
            "schedule.name=step",
            "augment.cutout=8",
            "ema_decay=0.99",
        ],
    )
    assert cfg.optim.lr == 0.05 and cfg.model.args["use_se"] is False and cfg.schedule.name == "step"
    mix = cfg.augment.mix()
    assert (mix.cutmix_alpha, mix.mixup_alpha) == (0.7, 0.2)  # the torchvision alpha mix-up, guarded
    assert cfg.augment.params().cutout == 8 and cfg.train.ema_decay == 0.99
    basic = build_config("wrn_28_10", ["augment=basic"])
    assert basic.augment.cutout == AUGMENT_PRESETS["basic"]["cutout"] == 0
    # A mapping for a section sets those fields and keeps the recipe's others, as dotted keys do.
    recipe = build_config("airbench94_muon").augment
    mapped = build_config("airbench94_muon", ["augment={cutout: 8}"]).augment
    assert mapped == build_config("airbench94_muon", ["augment.cutout=8"]).augment
    assert (mapped.cutout, mapped.pad_mode, mapped.alternate_flip) == (8, recipe.pad_mode, recipe.alternate_flip)
    assert (recipe.pad_mode, recipe.alternate_flip) == ("reflect", True)  # not the defaults: the check means it
    # model.args are the network's own arguments: a mapping replaces them whole
    assert build_config("airbench94_muon", ["model.args={widths: [8, 8, 8]}"]).model.args == {"widths": [8, 8, 8]}
    with pytest.raises(ConfigError, match="recipe"):
        build_config("no_such_recipe")
    with pytest.raises(ConfigError, match="lr"):
        build_config(None, ["lr=-1"])


def test_a_mistyped_key_is_named_not_a_stack_trace(image_folder, tmp_path, capsys):
    """A bare --set key that is no config field goes to the model; a typo must come back as one line."""
    from training.__main__ import main as training_main
    from training.models import create_model

    with pytest.raises(ValueError, match="'wrn_16_4' takes no argument 'epochz'"):
        create_model("wrn_16_4", 10, epochz=3)
    with pytest.raises(TypeError):  # a TypeError of another kind is a bug, and stays one
        create_model("wrn_16_4", 10, dropout=object())
    overrides = [*tiny_overrides(image_folder, tmp_path / "cache"), "epochz=3"]
    args = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(tmp_path / "r")]
    assert training_main(args) == 2
    assert "'resnet9' takes no argument 'epochz'" in capsys.readouterr().err
    overrides = tiny_overrides(image_folder, tmp_path / "cache", **{"model.args": "{width: -2}"})
    args = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(tmp_path / "r")]
    assert training_main(args) == 2  # torch's own refusal of a layer, before any data is read
    assert "model 'resnet9' cannot be built from its arguments (width=-2)" in capsys.readouterr().err


def test_a_seed_the_generators_cannot_take_is_refused_naming_the_setting():
    for value, said in (("split_seed=-1", "data.split_seed"), ("seed=99999999999999999999", "train.seed")):
        with pytest.raises(ConfigError, match=said):
            build_config("resnet9_half_cpu", [value])
    assert build_config("resnet9_half_cpu", ["seed=7", "split_seed=0"]).train.seed == 7


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("gamma=-0.5", "schedule.gamma: Input should be greater than 0"),  # would have trained uphill
        ("lr=.inf", "optim.lr: Input should be a finite number"),  # would have failed at its first step
        ("weight_decay=.inf", "optim.weight_decay: Input should be a finite number"),
        ("momentum=1.5", "optim.momentum: Input should be less than 1"),
        ("betas=[0.9, 1.0]", "optim.betas.1: Input should be less than 1"),
        ("milestones=[-10, 20]", "schedule.milestones.0: Input should be greater than or equal to 0"),
    ],
)
def test_an_optimizer_or_schedule_setting_out_of_its_range_is_refused_naming_it(value, said):
    with pytest.raises(ConfigError, match=re.escape(said)):
        build_config("resnet9_half_cpu", [value])


def test_exponent_numbers_reach_the_model_as_numbers(image_folder, tmp_path, capsys):
    """YAML 1.1 reads 1e-1 as a string; a recipe or --set value written so must still be a number."""
    from training.__main__ import main as training_main

    cfg = build_config("vit_small_patch4", ["drop_path=1e-1", "dropout=5E-1", "model.args.widths=[1e2, 2]"])
    assert cfg.model.args["drop_path"] == 0.1 and cfg.model.args["dropout"] == 0.5
    assert cfg.model.args["widths"] == [100.0, 2]
    recipe = tmp_path / "exp.yaml"
    recipe.write_text("model: {name: resnet9, args: {dropout: 5e-1}}\noptim: {weight_decay: 5e-4}\n")
    cfg = build_config(str(recipe))
    assert cfg.model.args["dropout"] == 0.5 and cfg.optim.weight_decay == 5e-4
    # An argument of the wrong kind is named in one line, not a stack trace.
    overrides = tiny_overrides(image_folder, tmp_path / "cache", **{"model.args": "{width: 8, dropout: half}"})
    args = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(tmp_path / "r")]
    assert training_main(args) == 2
    err = capsys.readouterr().err
    assert "error: model 'resnet9' cannot be built" in err and "dropout='half' is not a number" in err


def test_an_impossible_device_schedule_or_micro_batch_is_refused(image_folder, tmp_path, monkeypatch, capsys):
    from training.__main__ import main as training_main
    from training.config_validation import validate_config

    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        build_config("resnet9_half_cpu", ["device=gpu"])
    with pytest.raises(ConfigError, match=r"milestones \[120, 160\] are not below train.epochs 100"):
        build_config("se_resnet18", ["schedule.name=multistep", "milestones=[60,120,160]"])
    with pytest.raises(
        ConfigError,
        match="warmup_epochs 5 is not below train.epochs 5: .*; set warmup_epochs below 5 .0 for none. or epochs above",
    ):
        build_config("resnet9_half_cpu", ["epochs=5"])
    assert build_config("airbench94", ["epochs=1", "warmup_epochs=2"]).train.epochs == 1  # no warmup there
    with pytest.raises(ConfigError, match="micro_batch_size 300 does not divide train.batch_size 1024"):
        build_config("airbench94_cpu", ["micro_batch_size=300"])
    assert build_config("airbench94_cpu", ["micro_batch_size=128"]).train.micro_batch_size == 128
    # a run already under way is warned about, not stranded
    raw = build_config("resnet9_half_cpu").model_dump()
    raw["train"]["epochs"] = 5
    assert validate_config(raw, started=True).train.epochs == 5
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    overrides = [*tiny_overrides(image_folder, tmp_path / "cache"), "device=cuda"]
    args = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(tmp_path / "r")]
    assert training_main(args) == 2
    assert "device 'cuda': this machine has no usable CUDA GPU" in capsys.readouterr().err


def test_lr_schedules():
    from training.config import ScheduleConfig

    cos = ScheduleConfig(name="cosine", warmup_epochs=1)
    assert lr_factor(0, 10, 10, cos) == pytest.approx(0.1) and lr_factor(10, 10, 10, cos) == pytest.approx(1.0)
    assert lr_factor(99, 10, 10, cos) < 0.01
    step = ScheduleConfig(name="step", step_size=3, gamma=0.5)
    assert [lr_factor(e * 10, 10, 9, step) for e in (0, 3, 6)] == [1.0, 0.5, 0.25]
    half = ScheduleConfig(name="cosine", warmup_epochs=0.5)  # 21.5 steps of warmup: the peak is 1, never past it
    assert max(lr_factor(s, 43, 10, half) for s in range(43 * 10)) == 1.0


def test_tiny_run_overfits_64_images(tmp_path, caplog):
    """64 images, no augmentation: the training loop must drive training accuracy near 100%."""
    from PIL import Image

    root = tmp_path / "data"
    images, labels = make_arrays(4, 16, seed=3)
    for i, (img, label) in enumerate(zip(images, labels)):
        (root / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"c{label}" / f"{i}.png")
    cfg = build_config(
        "resnet9_half_cpu",
        tiny_overrides(
            root,
            tmp_path / "cache",
            epochs=15,
            batch_size=16,
            **{"data.val_size": 0, "augment": "none", "lr": 0.02, "label_smoothing": 0.0},
        ),
    )
    with caplog.at_level(logging.WARNING):
        summary = train(cfg, tmp_path / "run")
    assert "data.val_size 0: no validation split" in caplog.text and "cannot be exported" in caplog.text
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["train_acc"] >= 0.95, history[-1]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert summary["epochs_run"] == 15 and (tmp_path / "run" / "training_curves.png").stat().st_size > 1000
    # nothing was held out, so the best epoch is named by the training accuracy it was ranked by
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    top = max(h["train_acc"] for h in history)
    first_at_top = next(h["epoch"] for h in history if h["train_acc"] == top)  # a later tie does not improve
    assert written["best"] == {"train_acc": top, "epoch": first_at_top}


def test_resume_continues_the_same_run(image_folder, tmp_path, monkeypatch):
    overrides = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        epochs=4,
        dropout=0.2,
        ema_decay=0.9,
        **{"augment.cutout": 8, "mixup_alpha": 0.4},
    )
    states = train_straight_and_resumed("resnet9_half_cpu", overrides, tmp_path, monkeypatch)
    a, b = (state["model"] for state in states)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "straight" / "history.json").read_text())
    hb = json.loads((tmp_path / "interrupted" / "history.json").read_text())
    assert [h["val_top1"] for h in ha] == [h["val_top1"] for h in hb]


def test_a_resume_says_config_yaml_was_edited_and_keeps_the_edit(image_folder, tmp_path, caplog):
    """Editing a run's config.yaml and resuming used to continue the started configuration silently and write
    it back over the edit."""
    import yaml

    from training.config_recipes import build_config
    from training.engine import train
    from training.resume import resume

    run = tmp_path / "run"
    train(build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "cache", epochs=1)), run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["optim"]["lr"] = 0.123
    edited = yaml.safe_dump(config)
    (run / "config.yaml").write_text(edited)
    with caplog.at_level("WARNING", logger="training"):
        resume(run, epochs=2)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "was edited since the run started" in said and "optim.lr: 0.05 -> 0.123" in said
    assert (run / "config.edited.yaml").read_text() == edited
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"] == 0.05
    caplog.clear()
    (run / "config.yaml").write_text("optim: [")  # not YAML any more: said, kept, and the run still resumes
    with caplog.at_level("WARNING", logger="training"):
        resume(run, epochs=3)
    assert "no longer reads as a configuration" in " ".join(r.getMessage() for r in caplog.records)
    assert (run / "config.edited.yaml").read_text() == "optim: ["
    caplog.clear()
    with caplog.at_level("WARNING", logger="training"):
        resume(run, epochs=4)  # config.yaml was written back: nothing to say
    assert "edited" not in " ".join(r.getMessage() for r in caplog.records)


def test_checkpoint_every_saves_last_pt_on_its_epochs_new_bests_and_the_end_and_resumes_exactly(
    image_folder, tmp_path, monkeypatch
):
    """last.pt is written every k-th epoch, at the end and with every new best.pt (which is thus never ahead of
    it); history.json shows every epoch; a run interrupted between saves resumes from the last saved epoch and
    ends bit for bit where the uninterrupted one did."""
    import training.engine as engine
    from training.engine import Trainer
    from training.resume import resume

    saves: list[tuple[str, str, int]] = []
    original_save = engine.save_checkpoint

    def spy(state, path):
        saves.append((path.parent.name, path.name, state["epoch"]))
        original_save(state, path)

    monkeypatch.setattr(engine, "save_checkpoint", spy)
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=5, checkpoint_every=3)
    train(build_config("resnet9_half_cpu", overrides), tmp_path / "straight")
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    bests, top = [], -1.0
    for h in history:
        if h["val_top1"] > top:
            bests.append(h["epoch"])
            top = h["val_top1"]
    saved_last = sorted({e for e in range(1, 6) if e % 3 == 0 or e == 5} | set(bests))
    assert [e for run, name, e in saves if name == "last.pt"] == saved_last
    assert [e for run, name, e in saves if name == "best.pt"] == bests
    assert len(saved_last) < 5, (bests, saved_last)  # else this run tests nothing of the option

    # interrupted in an epoch after the last save: the resume trains the unsaved epochs again
    unsaved = [e for e in range(1, 6) if e not in saved_last]
    stop_at = unsaved[0] if unsaved else 4
    original_end = Trainer._end_epoch

    def interrupt(self, record):
        stop = original_end(self, record)
        if record["epoch"] == stop_at:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(Trainer, "_end_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(build_config("resnet9_half_cpu", overrides), tmp_path / "interrupted")
    monkeypatch.setattr(Trainer, "_end_epoch", original_end)
    last = torch.load(tmp_path / "interrupted" / "last.pt", weights_only=True)
    assert last["epoch"] == max(e for e in saved_last if e <= stop_at)
    resume(tmp_path / "interrupted")
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=True)["model"] for r in ("straight", "interrupted"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    again = json.loads((tmp_path / "interrupted" / "history.json").read_text())
    assert [h["val_top1"] for h in again] == [h["val_top1"] for h in history]


def test_a_run_is_a_function_of_its_seed(image_folder, tmp_path):
    """The same recipe and seed train the same weights bit for bit (the default's ResNet-9 came out identical on
    two processors, docs/fast-training.md); another ``train.seed`` reaches the initialisation, the data order and
    the augmentation, and trains other weights."""
    from training.__main__ import main as training_main

    def weights(name: str, seed: int) -> dict:
        overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=1, seed=seed, **{"augment.cutout": 8})
        assert (
            training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(tmp_path / name)])
            == 0
        )
        return torch.load(tmp_path / name / "last.pt", weights_only=True)["model"]

    a, again, other = weights("a", 0), weights("again", 0), weights("other", 1)
    assert a.keys() == again.keys() and all(torch.equal(a[k], again[k]) for k in a)
    assert any(not torch.equal(a[k], other[k]) for k in a if a[k].is_floating_point())


def test_an_interrupt_points_to_resume_only_where_a_run_has_an_epoch_to_continue(
    image_folder, tmp_path, monkeypatch, capsys
):
    from training.__main__ import main as training_main
    from training.engine import Trainer
    from training.reports import cli as reports_cli

    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=2)
    original = Trainer._end_epoch

    def stop_in_epoch_1(self, record):
        raise KeyboardInterrupt

    def stop_after_epoch_1(self, record):
        original(self, record)
        raise KeyboardInterrupt

    for stop, run in ((stop_in_epoch_1, tmp_path / "first"), (stop_after_epoch_1, tmp_path / "second")):
        monkeypatch.setattr(Trainer, "_end_epoch", stop)
        argv = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(run)]
        assert training_main(argv) == 130
    first, second = re.findall(r"interrupted[^\n]*", capsys.readouterr().err)  # after the progress bars
    assert first == f"interrupted before {tmp_path / 'first'} completed an epoch: nothing to continue; run the " + (
        "same command again"
    )
    assert f"continue with `python -m training resume {tmp_path / 'second'}`" in second

    def evaluating(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(reports_cli, "cmd_evaluate", evaluating)
    assert training_main(["evaluate", "--checkpoint", str(tmp_path / "second")]) == 130
    assert capsys.readouterr().err == "interrupted\n"  # no run to resume


@pytest.mark.parametrize("module", ["torch", "matplotlib"])
def test_ctrl_c_while_torch_loads_ends_in_one_line(module):
    """The first seconds of `python -m training` go to importing torch, then matplotlib for the reports' parser;
    a Ctrl-C there is answered as one later would be (exit 130, one line), not with an import traceback. The
    interrupt is raised by an import hook, so the test does not race the import."""
    hook = (
        "import runpy, sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {module!r}:\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "sys.argv = ['training', 'models']\n"
        "runpy.run_module('training', run_name='__main__', alter_sys=True)\n"
    )
    proc = subprocess.run([sys.executable, "-c", hook], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (130, "interrupted\n")


def test_an_interrupt_mid_epoch_closes_the_progress_bars_before_its_message(image_folder, tmp_path, monkeypatch):
    """Ctrl-C inside an epoch: both bars are closed as the interrupt passes, not when they are collected, so
    the message printed next does not land on a half-drawn bar."""
    from training import engine
    from training.__main__ import main as training_main

    bars = []

    class Recorded(engine.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    def ctrl_c(self, x, y):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "tqdm", Recorded)
    monkeypatch.setattr(engine.Trainer, "_forward_backward", ctrl_c)
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=2)
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(tmp_path / "run")]
    assert training_main(argv) == 130
    assert [bar.desc for bar in bars] == ["training", "epoch 1/2"]
    assert all(bar.disable for bar in bars)  # tqdm.close() sets it; an open bar still draws


def test_train_resume_continues_a_run_of_the_same_config_and_refuses_another(
    image_folder, tmp_path, monkeypatch, capsys
):
    from training.__main__ import main as training_main
    from training.engine import Trainer

    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=3)

    def cli(out, *extra, sets=overrides):
        return training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(out), *extra])

    assert cli(tmp_path / "straight") == 0
    original = Trainer._end_epoch

    def interrupt(self, record):
        stop = original(self, record)
        if record["epoch"] == 1:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(Trainer, "_end_epoch", interrupt)
    assert cli(tmp_path / "run", "--resume") == 130  # nothing to continue yet: it starts, and is interrupted
    monkeypatch.setattr(Trainer, "_end_epoch", original)
    capsys.readouterr()
    assert cli(tmp_path / "run") == 2 and "--resume" in capsys.readouterr().err

    last = tmp_path / "run" / "last.pt"
    before = last.read_bytes()
    changed = tiny_overrides(image_folder, tmp_path / "cache", epochs=5, lr=0.01)
    assert cli(tmp_path / "run", "--resume", sets=changed) == 2
    err = capsys.readouterr().err
    assert "optim.lr: 0.05 -> 0.01" in err and "train.epochs: 3 -> 5" in err
    assert last.read_bytes() == before  # refused before anything was written

    assert cli(tmp_path / "run", "--resume") == 0
    a, b = (torch.load(tmp_path / run / "last.pt", weights_only=True) for run in ("straight", "run"))
    assert a["epoch"] == b["epoch"] == 3
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # A finished run has nothing left to do.
    assert cli(tmp_path / "run", "--resume") == 0
    assert len(json.loads((tmp_path / "run" / "history.json").read_text())) == 3
    # Stopped between its last checkpoint and its summary: resuming writes the summary (ablate reads it).
    (tmp_path / "run" / "summary.json").unlink()
    assert cli(tmp_path / "run", "--resume") == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 3
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        cli(tmp_path / "run", "--resume", "--force")
    assert refused.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "size", "said"),
    [("vit_small_patch4", 40, "takes 32x32 images"), ("airbench94", 8, "cannot take 8x8"), ("resnet18", 32, "no_such")],
)
def test_a_network_that_cannot_take_the_image_size_is_refused_before_the_data_is_read(
    model, size, said, image_folder, tmp_path, monkeypatch
):
    import training.trainer_setup as trainer_setup

    def read(*_args, **_kwargs):
        raise AssertionError("the data was read before the network was checked")

    monkeypatch.setattr(trainer_setup, "load_data", read)
    extra = {"model.name": model, "model.args": "{}", "image_size": size, "cutout": 0}  # the recipe's 12 is > 8
    if model == "resnet18":
        extra["model.args"] = "{no_such: 1}"
    config = build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "cache", **extra))
    with pytest.raises(ConfigError, match=said):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_refused_run_into_a_path_through_dot_dot_leaves_no_folder(image_folder, tmp_path, monkeypatch):
    """The folders made to claim the run go again when it is refused, every one of them: `new/../run` makes
    new/ as well as run/ (rmdir of new/.. failed, and new/ stayed)."""
    import training.trainer_setup as trainer_setup

    def read(*_args, **_kwargs):
        raise ConfigError("refused")

    monkeypatch.setattr(trainer_setup, "load_data", read)
    config = build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "cache"))
    with pytest.raises(ConfigError, match="refused"):
        train(config, tmp_path / "new" / ".." / "run")
    assert sorted(tmp_path.iterdir()) == []


def test_a_recipe_or_override_that_is_not_yaml_is_refused_in_one_line(tmp_path, capsys):
    from training.__main__ import main as training_main

    broken, binary = tmp_path / "broken.yaml", tmp_path / "binary.yaml"
    broken.write_text("model: {name: [\n")
    binary.write_bytes(bytes(range(128, 256)))
    for recipe in (broken, binary):
        assert training_main(["train", "--recipe", str(recipe), "--out", str(tmp_path / "run")]) == 2
        assert "is not a YAML file" in capsys.readouterr().err
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", "lr=[1", "--out", str(tmp_path / "r")]) == 2
    assert "value '[1' is not YAML" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "r").exists()


def test_a_recipe_file_that_is_empty_or_has_a_section_that_is_no_mapping_is_refused_naming_it(tmp_path, capsys):
    """The empty file used to train every default (se_resnet18); the list to blame the --set given with it."""
    from training.__main__ import main as training_main

    empty, listed, bare = tmp_path / "empty.yaml", tmp_path / "listed.yaml", tmp_path / "bare.yaml"
    empty.write_text("")
    listed.write_text("model: {name: resnet9}\ntrain: [1, 2]\n")
    bare.write_text("model: {name: resnet9}\ntrain:\n")  # a section with nothing under it: its defaults
    for recipe, said in ((empty, "is empty: it names no model"), (listed, "train is not a mapping of settings")):
        assert training_main(["train", "--recipe", str(recipe), "--set", "epochs=1", "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err
        assert f"recipe {str(recipe)!r}" in err and said in err, err
    assert build_config(str(bare), ["epochs=1"]).train.epochs == 1
    assert not (tmp_path / "r").exists()


def test_recipes_lists_each_recipe_with_its_resolved_settings(capsys):
    from training.__main__ import main as training_main
    from training.config_recipes import list_ensemble_recipes, list_recipes

    assert training_main(["recipes"]) == 0
    networks, _, ensembles = capsys.readouterr().out.partition("\nensemble recipes")
    rows = {line.split()[0]: line.split() for line in networks.splitlines()[1:] if line.strip()}
    assert sorted(rows) == list_recipes()
    # Ensemble recipes are listed apart, with their members: they have no one model, epoch count or optimizer.
    assert [line.split()[0] for line in ensembles.splitlines()[1:]] == list_ensemble_recipes()
    assert "resnet9_half_cpu (tta flip)" in ensembles
    for name, (_, model, epochs, batch, optimizer) in rows.items():
        config = build_config(name)  # defaults included: a recipe that sets no optimizer shows the default's
        assert (model, int(epochs), int(batch), optimizer) == (
            config.model.name,
            config.train.epochs,
            config.train.batch_size,
            config.optim.name,
        )


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path):
    from inference.files import write_atomic

    target = tmp_path / "history.json"
    target.write_text("[1, 2]")

    def crash(f):
        f.write(b"[1, 2, 3")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, crash)
    assert target.read_text() == "[1, 2]" and [p.name for p in tmp_path.iterdir()] == ["history.json"]


def test_every_file_of_a_run_is_written_atomically(image_folder, tmp_path, atomic_writes):
    """Each is synced to disk and renamed into place, so a crash never leaves a truncated one."""
    synced, replaced = atomic_writes
    train(build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "c", epochs=1)), tmp_path / "run")
    names = ("config.yaml", "history.json", "summary.json", "last.pt", "best.pt")
    assert all(name in replaced and replaced[name] in synced for name in names), (replaced, synced)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["epochs_run"] == 1


def test_early_stopping(image_folder, tmp_path):
    cfg = build_config(
        "resnet9_half_cpu",
        tiny_overrides(
            image_folder, tmp_path / "c", epochs=6, lr=1e-9, early_stop_patience=1, early_stop_min_delta=2.0
        ),
    )
    summary = train(cfg, tmp_path / "run")
    assert summary["stopped_early"] and summary["epochs_run"] == 2
    # no epoch beats the threshold (a top-1 above 1): the first is still the best so far, and its checkpoint written
    assert summary["best"]["epoch"] == 1 and load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1


def test_more_epochs_for_a_run_that_stopped_early_are_refused(image_folder, tmp_path, capsys, caplog):
    """Its patience ended it, not its epochs: --epochs would train none, and is refused before the warning that
    it reshapes the schedule; a plain resume still finds it finished."""
    from training.__main__ import main as training_main

    overrides = tiny_overrides(
        image_folder, tmp_path / "c", epochs=6, lr=1e-9, early_stop_patience=1, early_stop_min_delta=2.0
    )
    run = tmp_path / "run"
    assert train(build_config("resnet9_half_cpu", overrides), run)["stopped_early"]
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with caplog.at_level(logging.INFO):
        assert training_main(["resume", str(run), "--epochs", "20"]) == 2
        err = capsys.readouterr().err
        assert f"{run} stopped early at epoch 2 (early_stop_patience 1" in err and "--epochs 20 would train none" in err
        assert "reshapes" not in caplog.text and "Traceback" not in err
        assert training_main(["resume", str(run)]) == 0
        assert "stopped early (no epoch better by early_stop_min_delta 2 for its patience): nothing left" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


def test_a_run_folder_without_its_last_checkpoint_is_not_trained_over(image_folder, tmp_path, capsys):
    """A finished run whose last.pt was deleted to save space still holds its best.pt, history and summary:
    neither train nor train --resume (which has nothing to continue from) replaces them without --force."""
    from training.__main__ import main as training_main

    out = tmp_path / "run"
    train_cli = ["train", "--recipe", "resnet9_half_cpu", "--out", str(out)]
    train_cli += ["--set", *tiny_overrides(image_folder, tmp_path / "cache", epochs=1)]
    assert training_main(train_cli) == 0
    (out / "last.pt").unlink()
    best = (out / "best.pt").read_bytes()
    capsys.readouterr()
    for again in ([], ["--resume"]):
        assert training_main([*train_cli, *again]) == 2
        err = capsys.readouterr().err
        assert f"{out} holds a run's files (best.pt, summary.json, history.json" in err and "--force" in err, err
        assert (out / "best.pt").read_bytes() == best and not (out / "last.pt").exists()
    assert training_main([*train_cli, "--force"]) == 0 and (out / "last.pt").is_file()


# `python -m training ARGS` that stops after each saved epoch until the test lets it go on (files in PAUSES).
PAUSED_TRAINING = """
import os, sys, time
from pathlib import Path
from training.__main__ import main
from training.engine import Trainer

pauses, end_epoch = Path(os.environ["PAUSES"]), Trainer._end_epoch

def paused(self, record):
    stop = end_epoch(self, record)
    (pauses / f"saved-{record['epoch']}").touch()
    while not (pauses / f"go-{record['epoch']}").exists():
        time.sleep(0.05)
    return stop

Trainer._end_epoch = paused
sys.exit(main(sys.argv[1:]))
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.05)


def test_a_second_command_on_a_run_folder_in_use_is_refused_and_the_first_goes_on(image_folder, tmp_path, capsys):
    """The same command started twice (a forgotten nohup job, a second terminal): both trained into one folder,
    interleaving its checkpoints and history, and a --force of one removed the other's files. The second is
    refused at once, naming the first; the first goes on as if alone; a run killed outright leaves no claim."""
    from training.__main__ import main as training_main

    run, pauses = tmp_path / "run", tmp_path / "pauses"
    pauses.mkdir()
    train_cli = ["train", "--recipe", "resnet9_half_cpu", "--out", str(run)]
    train_cli += ["--set", *tiny_overrides(image_folder, tmp_path / "cache", threads=1)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PAUSES": str(pauses)}
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_TRAINING, *train_cli], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(pauses / "saved-1", first)
        files = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
        for again in (train_cli, [*train_cli, "--resume"], [*train_cli, "--force"], ["resume", str(run)]):
            assert training_main(again) == 2, again
            said = f"error: {run} is in use by another training (pid {first.pid}): wait for it to end, or stop it\n"
            assert capsys.readouterr().err == said
        assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == files
        (pauses / "go-1").touch()
        _wait_for(pauses / "saved-2", first)
    finally:
        first.kill()  # SIGKILL, after its last epoch was saved: no cleanup of its own runs
        first.communicate()
    assert [record["epoch"] for record in json.loads((run / "history.json").read_text())] == [1, 2]
    assert training_main(["resume", str(run)]) == 0  # its claim went with it
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 2


def test_a_torchrun_start_refused_for_a_folder_in_use_ends_every_rank_at_once(image_folder, tmp_path):
    """Rank 0 alone claims the run folder; refused, it exits, and torchrun sends SIGTERM to the rank still waiting
    in the process group's setup. That rank's handler could not run there, so it was SIGKILLed after torchrun's
    30 s grace; now SIGTERM ends it outright while it joins the group, where there is nothing to save."""
    import fcntl

    run = tmp_path / "run"
    run.mkdir()
    holder = os.open(run / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another training's claim
        with pytest.raises(AssertionError) as failed:
            torchrun(
                "train",
                "--recipe",
                "resnet9_half_cpu",
                "--out",
                str(run),
                "--set",
                *tiny_overrides(image_folder, tmp_path),
            )
    finally:
        os.close(holder)
    said = str(failed.value)
    assert f"{run} is in use by another training" in said, said
    assert "SIGKILL" not in said and "forcefully exiting" not in said, said


def test_resume_takes_a_runs_last_checkpoint_for_its_folder_and_says_when_nothing_is_left(
    tiny_run, tmp_path, capsys, caplog, monkeypatch
):
    import shutil

    import training.__main__ as cli

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    with caplog.at_level(logging.INFO):
        assert cli.main(["resume", str(run / "last.pt")]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_run"] == 3
    assert f"{run} has trained its 3 epochs: nothing left to train" in caplog.text
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert cli.main(["resume", str(run / "best.pt")]) == 2
    assert f"resume takes a run folder (the one holding last.pt), not the file {run / 'best.pt'}" in (
        capsys.readouterr().err
    )

    def refused_by_the_system(args):  # as mkdir of a run folder in /proc answers
        raise FileNotFoundError(2, "No such file or directory", "/proc/run")

    monkeypatch.setattr(cli, "cmd_resume", refused_by_the_system)
    assert cli.main(["resume", str(run)]) == 2
    assert capsys.readouterr().err == "error: /proc/run: No such file or directory\n"


def test_resume_of_a_folder_that_is_not_there_says_so_and_makes_nothing(tmp_path, capsys, monkeypatch):
    """A mistyped run folder has nothing to continue: it was made to be claimed, so a user who may not write
    where it would be (another's /data/runs) read `error: /data: Permission denied`, not that no run is there."""
    from training.__main__ import main as training_main

    def unwritable(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", unwritable)
    run = tmp_path / "typo" / "run"
    assert training_main(["resume", str(run)]) == 2
    assert capsys.readouterr().err == f"error: no checkpoint at {run / 'last.pt'}: there is no folder {run}\n"
    assert sorted(tmp_path.iterdir()) == []


def test_resume_of_a_run_stopped_in_its_first_epoch_says_there_is_nothing_to_resume(tmp_path, capsys):
    """A run stopped before its first epoch ended (its config.yaml only) was said as "no checkpoint at
    RUN/last.pt", as if the folder were mistyped."""
    from training.__main__ import main as training_main

    run, other = tmp_path / "run", tmp_path / "other"
    run.mkdir()
    other.mkdir()
    (run / "config.yaml").write_text("recipe: resnet9_half_cpu\n")
    assert training_main(["resume", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"error: no checkpoint at {run / 'last.pt'}: {run} holds no finished epoch (a run stopped before its first "
        "one ended saves none): nothing to resume; train again with the same command\n"
    )
    assert training_main(["resume", str(other)]) == 2
    assert capsys.readouterr().err == (
        f"error: no checkpoint at {other / 'last.pt'}: {other} holds no run (no config.yaml either): give the "
        "folder that `train --out` wrote\n"
    )


def test_resume_of_an_ensemble_member_stopped_in_its_first_epoch_names_the_ensemble_run(tmp_path, capsys):
    """A member's folder (config.yaml only) was told to "train again with the same command", which for a member
    is the ensemble's train command, refused without --resume."""
    from training.__main__ import main as training_main

    ensemble = tmp_path / "ens"
    member = ensemble / "1-resnet9_half_cpu"
    member.mkdir(parents=True)
    (ensemble / "ensemble.yaml").write_text("recipe: {name: resnet9_airbench94}\n")
    (member / "config.yaml").write_text("recipe: resnet9_half_cpu\n")
    assert training_main(["resume", str(member)]) == 2
    assert capsys.readouterr().err == (
        f"error: no checkpoint at {member / 'last.pt'}: {member} holds no finished epoch: nothing to resume; it is a "
        f"member of the ensemble run {ensemble}, which `python -m training resume {ensemble}` says how to continue\n"
    )


def test_a_file_or_folder_after_set_of_a_command_without_arguments_is_pointed_to_its_option(capsys):
    """A folder after train's --set was told "give the setting its value, --set runs/x=VALUE"."""
    from training.__main__ import main as training_main

    for argv, said in (
        (
            ["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=1", "runs/x"],
            "'runs/x' after --set is not KEY=VALUE: train takes no arguments of its own (give a folder as --out "
            "runs/x)\n",
        ),
        (
            ["ablate", "--recipe", "resnet9_half_cpu", "--set", "epochs=1", "mine.yaml"],
            "'mine.yaml' after --set is not KEY=VALUE: ablate takes no arguments of its own (give a recipe file as "
            "--recipe mine.yaml)\n",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            training_main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.endswith(said), err


def test_force_starts_over_without_the_previous_runs_files(image_folder, tmp_path, monkeypatch):
    """Stopped during its first epoch, a run started over with --force leaves nothing of the old run that could
    pass for its own (a best.pt, a summary saying it finished, a last.pt a resume would continue)."""
    from training.__main__ import main as training_main
    from training.engine import Trainer

    out = tmp_path / "run"
    train_cli = ["train", "--recipe", "resnet9_half_cpu", "--out", str(out)]
    sets = ["--set", *tiny_overrides(image_folder, tmp_path / "cache", epochs=1)]
    assert training_main([*train_cli, *sets]) == 0
    assert all((out / name).exists() for name in ("last.pt", "best.pt", "summary.json", "history.json"))

    def stopped(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "train_epoch", stopped)
    assert training_main([*train_cli, *sets, "--force"]) == 130
    assert not any((out / name).exists() for name in ("last.pt", "best.pt", "summary.json", "history.json"))


@pytest.mark.parametrize("recipe", ["resnet9_half_cpu", "resnet9_airbench94"])
def test_an_out_that_cannot_be_a_folder_is_refused_before_the_data_is_read(image_folder, tmp_path, capsys, recipe):
    """--out naming a file (or a path through one): one line, exit 2, before the dataset is read (the overrides
    point at a folder that does not exist: reading it would fail with another message)."""
    from training.__main__ import main as training_main

    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    sets = ["--set", *tiny_overrides(tmp_path / "no-such-data", tmp_path / "cache", epochs=1)]
    for out in (a_file, a_file / "run"):
        assert training_main(["train", "--recipe", recipe, "--out", str(out), *sets]) == 2
        err = capsys.readouterr().err
        assert f"error: --out {out} is not a folder" in err and "Traceback" not in err, err
    assert not (a_file / "run").exists() and a_file.is_file()


def test_resume_refuses_a_run_whose_data_has_changed_since_it_started(image_folder, tmp_path, capsys):
    """A class added would not fit the network's head (a traceback before), a class renamed would shift every
    label and images edited change the normalisation: each is named, and the run's files are left alone."""
    import shutil

    from training.__main__ import main as training_main

    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    sets = tiny_overrides(data, tmp_path / "cache", epochs=1)
    run = tmp_path / "run"
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(run)]) == 0
    last = (run / "last.pt").read_bytes()
    _tree(data, [f"delta/{i}.png" for i in range(5)], value=99)
    assert training_main(["resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "was trained on other data than" in err and "'delta'" in err and "Traceback" not in err, err
    shutil.rmtree(data / "delta")
    (data / "alpha").rename(data / "aardvark")  # same images, another class name
    assert training_main(["resume", str(run), "--epochs", "2"]) == 2
    assert "classes ['alpha', 'beta', 'gamma'] -> ['aardvark', 'beta', 'gamma']" in capsys.readouterr().err
    assert (run / "last.pt").read_bytes() == last
    (data / "aardvark").rename(data / "alpha")
    assert training_main(["resume", str(run), "--epochs", "2"]) == 0  # the same data again: it continues


def test_resume_refuses_an_epoch_budget_below_1_as_a_usage_error(tmp_path, capsys):
    from training.__main__ import main as training_main

    with pytest.raises(SystemExit) as refused:
        training_main(["resume", str(tmp_path), "--epochs", "0"])
    assert refused.value.code == 2 and "argument --epochs: 0 is not at least 1" in capsys.readouterr().err


def test_sigterm_is_answered_as_ctrl_c_and_a_resume_elsewhere_takes_only_where_the_run_runs(
    image_folder, tmp_path, monkeypatch, capsys
):
    """A scheduler preempts with SIGTERM: the checkpoint being written goes (no 11 MB .tmp left for good), the
    message says how to go on (with this resume's own --epochs), exit 143. The run then continues from another
    folder of the same images (--set data.root), but not with a setting that changes what it computes."""
    import signal

    from PIL import Image

    import training.checkpoint as checkpoint
    from training.__main__ import main as training_main

    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=2)
    run = tmp_path / "run"
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(run)]
    real_save = checkpoint.torch.save
    calls = []

    def terminated_while_writing_epoch_2(state, f):
        calls.append(state["epoch"])
        if state["epoch"] == 2:
            f.write(b"half a checkpoint")
            os.kill(os.getpid(), signal.SIGTERM)
        return real_save(state, f)

    monkeypatch.setattr(checkpoint.torch, "save", terminated_while_writing_epoch_2)
    handler_before = signal.getsignal(signal.SIGTERM)
    assert training_main(argv) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert f"SIGTERM: interrupted: the last saved epoch is in {run / 'last.pt'}" in err
    assert sorted(p.name for p in run.iterdir() if ".tmp" in p.name) == []
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 1
    assert signal.getsignal(signal.SIGTERM) is handler_before  # main() put the handler back
    monkeypatch.setattr(checkpoint.torch, "save", real_save)

    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    assert training_main(["resume", str(run), "--set", "lr=0.5"]) == 2
    assert "'lr' would make it another run" in capsys.readouterr().err
    assert training_main(["resume", str(run), "--epochs", "1"]) == 2  # 1 of 2 trained: it would train none
    assert "has trained 1 epoch already: --epochs 1 would train none" in capsys.readouterr().err
    # the same folder but for one image: its mean and std barely move, the images and their split do
    edited = tmp_path / "edited"
    shutil.copytree(image_folder, edited)
    one = sorted(edited.glob("*/*.png"))[0]
    pixels = np.asarray(Image.open(one)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(one)
    assert training_main(["resume", str(run), "--set", f"data.root={edited}"]) == 2
    assert "other images, or another split of them" in capsys.readouterr().err
    assert training_main(["resume", str(run), "--epochs", "3", "--set", f"data.root={moved}", "threads=1"]) == 0
    config = torch.load(run / "last.pt", weights_only=True)["config"]
    assert (config["data"]["root"], config["train"]["threads"], config["train"]["epochs"]) == (str(moved), 1, 3)
    assert training_main(["resume", str(run), "--epochs", "2"]) == 2
    assert "has trained 3 epochs already: --epochs 2 would train none" in capsys.readouterr().err
    # train --resume from the new place: the same run (where it runs is not what it is)
    sets = [o for o in overrides if not o.startswith(("data.root=", "epochs="))] + [f"data.root={moved}", "epochs=3"]
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(run), "--resume"]) == 0


def test_the_placement_kept_for_the_advice_after_a_stop_reads_keys_as_set_does():
    """``--set "data.root = /x"`` (one quoted word) sets data.root: the advice to resume must repeat it."""
    from training.config_overrides import placement_overrides

    given = ["data.root = /new/place", "threads =1", "lr = 0.1", "epochs=2"]
    assert placement_overrides(given) == ["data.root = /new/place", "threads =1"]


def test_the_advice_after_an_interrupted_torchrun_run_continues_it_on_as_many_processes(tmp_path, monkeypatch):
    """A run of two processes continues exactly only on two (its steps, batches and each rank's random state):
    the advice named a one-process `python -m training resume`."""
    from training.__main__ import _interrupted, get_args_parser

    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"an epoch")
    args = get_args_parser().parse_args(["resume", str(run)])
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert f"continue with `torchrun --nproc_per_node 2 -m training resume {run}`" in _interrupted(args)
    monkeypatch.delenv("WORLD_SIZE")
    assert f"continue with `python -m training resume {run}`" in _interrupted(args)


def test_the_advice_after_an_interrupted_resume_repeats_its_epochs(image_folder, tmp_path, monkeypatch, capsys):
    from training.__main__ import main as training_main
    from training.engine import Trainer

    run = tmp_path / "run"
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(run)]) == 0
    original = Trainer._end_epoch

    def stop_in_epoch_3(self, record):
        if record["epoch"] == 3:
            raise KeyboardInterrupt
        return original(self, record)

    monkeypatch.setattr(Trainer, "_end_epoch", stop_in_epoch_3)
    capsys.readouterr()
    assert training_main(["resume", str(run), "--epochs", "4"]) == 130
    assert f"continue with `python -m training resume {run} --epochs 4`" in capsys.readouterr().err
    # train --resume from a new place, stopped before an epoch was saved there: last.pt still has the old one
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    sets = [o for o in overrides if not o.startswith(("data.root=", "epochs="))] + [f"data.root={moved}", "epochs=4"]
    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(run), "--resume"]
    assert training_main(argv) == 130  # the run of 4 epochs, at its epoch 3 again
    advice = capsys.readouterr().err.splitlines()[-1]
    assert f"continue with `python -m training resume {run} --set " in advice and f"data.root={moved}`" in advice


def test_a_damaged_last_checkpoint_names_what_is_left_to_go_on_from(image_folder, tmp_path, capsys):
    from training.__main__ import main as training_main

    run = tmp_path / "run"
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *overrides, "--out", str(run)]) == 0
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:1000])  # a copy cut short
    capsys.readouterr()
    assert training_main(["resume", str(run), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "is not a training checkpoint" in err and "best.pt (epoch 1) holds the whole training state" in err
    shutil.copy(run / "best.pt", run / "last.pt")  # as the message says
    assert training_main(["resume", str(run), "--epochs", "2"]) == 0


def test_a_run_killed_between_its_first_best_and_last_checkpoints_is_told_to_go_on_from_best(
    image_folder, tmp_path, monkeypatch, capsys
):
    """best.pt is written before last.pt: a run killed between the two in its first epoch has a best.pt holding
    the whole training state and no last.pt. resume and train --resume say so, not only that last.pt is missing."""
    import training.engine as engine
    from training.__main__ import main as training_main

    run = tmp_path / "run"
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(run)]
    argv += ["--set", *tiny_overrides(image_folder, tmp_path / "cache", epochs=2)]
    real = engine.save_checkpoint

    def killed_before_last(state, path):
        if path.name == "last.pt":
            raise KeyboardInterrupt
        real(state, path)

    monkeypatch.setattr(engine, "save_checkpoint", killed_before_last)
    assert training_main(argv) == 130
    monkeypatch.setattr(engine, "save_checkpoint", real)
    assert (run / "best.pt").is_file() and not (run / "last.pt").exists()
    capsys.readouterr()
    advice = "Its best.pt (epoch 1) holds the whole training state too: copy it to last.pt"
    assert training_main(["resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no checkpoint at {run / 'last.pt'}. {advice} to continue from that epoch"), err
    assert training_main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"{advice} and train with --resume to continue from that epoch" in err and err.count("\n") == 1, err
    shutil.copy(run / "best.pt", run / "last.pt")  # as the message says
    assert training_main([*argv, "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_a_cut_library_message_ends_at_a_sentence_or_says_it_is_cut(tmp_path):
    """torch's text for a truncated checkpoint runs on into advice; cut at 200 characters it ended mid-sentence
    ("... your checkpoint file is"), as if that were all it said."""
    from inference.messages import exception_summary

    two = ValueError("The archive is damaged: no central directory. " + "This part is advice, " * 20)
    assert exception_summary(two, limit=80) == "The archive is damaged: no central directory."
    summary = exception_summary(ValueError("one sentence " * 30), limit=60)
    assert summary == "one sentence one sentence one sentence one sentence one ..."  # cut between words
    assert exception_summary(ValueError("short. text"), limit=60) == "short. text"


class _RunsCode:
    # os.getenv: a function no test replaces (Ray's tqdm replaces print once it has run in the process); torch
    # refuses its module as a whole, in other words than an object of an allowed module
    def __reduce__(self):
        return (os.getenv, ("HOME",))


class _MakesAnObject:
    def __reduce__(self):
        import fractions

        return (fractions.Fraction, (1, 3))


@pytest.mark.parametrize(
    "kind, said",
    [
        ("a function", "it holds a os.getenv object, which loading with weights_only refuses"),
        ("an object", "it holds a fractions.Fraction object, which loading with weights_only refuses"),
        ("a text file", "it is not the zip archive torch.save writes"),
        ("a plain pickle", "it is not the zip archive torch.save writes"),
        ("cut short", "it is not the zip archive torch.save writes: another kind of file, or the start of one cut"),
        ("damaged", "a truncated or damaged copy of one? torch said: "),
        # a zip of another kind was asked whether it was a damaged checkpoint, in torch's inline_container.cc words
        ("a NumPy archive", "(it is not a PyTorch checkpoint: a NumPy .npz archive, such as a report's predictions"),
        ("another zip", "(it is not a PyTorch checkpoint: a zip archive of other files (notes.txt))"),
        # a checkpoint's archive that lost its data.pkl was "a zip archive of other files (archive/byteorder, ...)"
        ("a checkpoint without its pickle", "a truncated or damaged copy of one? torch said: "),
        ("an empty zip", "(it is not a PyTorch checkpoint: an empty zip archive)"),  # was "of other files (empty)"
    ],
)
def test_an_unreadable_checkpoint_says_what_it_is_and_never_to_allow_its_objects(tmp_path, kind, said):
    """torch's refusal of a checkpoint holding an object advised allowing that very object (add_safe_globals,
    which would run its code); a text file was "torch said: 101"; a plain pickle added two lines of warning."""
    import pickle
    import warnings

    path = tmp_path / "model.pt"
    if kind in ("a function", "an object"):
        torch.save({"meta": _RunsCode() if kind == "a function" else _MakesAnObject(), "model": {}}, path)
    elif kind == "a text file":
        path.write_text("epoch,loss\n1,0.5\n")
    elif kind == "a plain pickle":
        path.write_bytes(pickle.dumps({"meta": {}, "model": {}}, protocol=4))
    elif kind == "a NumPy archive":
        with path.open("wb") as out:
            np.savez(out, logits=np.zeros((2, 3)), labels=np.zeros(2))
    elif kind == "another zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("notes.txt", "not weights")
    elif kind == "an empty zip":
        zipfile.ZipFile(path, "w").close()
    elif kind == "a checkpoint without its pickle":
        whole = tmp_path / "whole.pt"
        torch.save({"meta": {}, "model": {}}, whole)
        with zipfile.ZipFile(whole) as source, zipfile.ZipFile(path, "w") as archive:
            for entry in source.namelist():
                if not entry.endswith("/data.pkl"):
                    archive.writestr(entry, source.read(entry))
    else:
        torch.save({"meta": {}, "model": {"w": torch.zeros(4096)}}, path)
        data = bytearray(path.read_bytes())
        if kind == "cut short":
            del data[1000:]
        else:  # the pickle's first bytes inverted, the archive's directory intact
            start = data.find(b"data.pkl") + 20
            data[start : start + 40] = bytes(b ^ 0xFF for b in data[start : start + 40])
        path.write_bytes(bytes(data))
    with warnings.catch_warnings(record=True) as warned, pytest.raises(ValueError) as refused:
        warnings.simplefilter("always")
        load_checkpoint(path)
    message = str(refused.value)
    assert said in message and "safe_globals" not in message, message
    assert ("torch said" in message) == (kind in ("damaged", "a checkpoint without its pickle")), message
    assert not warned, [str(w.message) for w in warned]


def test_a_resume_removes_the_temporary_checkpoints_of_killed_writers_only(tmp_path):
    from training.checkpoint import remove_stale_temporaries

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale, live = tmp_path / f"last.pt.{int(dead.stdout)}.tmp", tmp_path / f"best.pt.{os.getppid()}.tmp"
    # a predecessor killed under the pid this process now has (a restarted container's small pids)
    own = tmp_path / f"best.pt.{os.getpid()}.tmp"
    # the run's other files are written the same way: small, but left forever
    history, curves = (tmp_path / f"{name}.{int(dead.stdout)}.tmp" for name in ("history.json", "training_curves.png"))
    others = tmp_path / "notes.txt.1.tmp", tmp_path / f"notes.txt.{int(dead.stdout)}.tmp"
    for path in (stale, live, own, history, curves, *others):
        path.write_bytes(b"x")
    remove_stale_temporaries(tmp_path)
    assert not stale.exists() and not own.exists() and live.exists()
    assert not history.exists() and not curves.exists() and all(other.exists() for other in others)


def test_nohup_keeps_a_run_alive_when_its_terminal_closes():
    """nohup ignores SIGHUP; the commands take over SIGTERM and SIGHUP only where they are not ignored."""
    import signal

    from inference.interrupts import raise_terminated, terminations_as_interrupts

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with terminations_as_interrupts():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is raise_terminated
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_checkpoint_the_disk_cannot_hold_is_an_os_error_naming_the_file(tmp_path):
    """torch wraps the OSError of a full disk in its own RuntimeError ("unexpected pos ..."): the user is told
    what ran out, on which file, and no temporary file is left."""
    import errno
    import resource

    from training.checkpoint import save_checkpoint

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(OSError) as raised:
            save_checkpoint({"weights": torch.zeros(100_000)}, tmp_path / "last.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert raised.value.errno == errno.EFBIG and raised.value.filename == str(tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_setting_is_one_line_naming_each_problem(tmp_path, capsys):
    from training.__main__ import main as training_main

    argv = ["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=abc", "bogus.x=3", "--out", str(tmp_path / "r")]
    assert training_main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pydantic" not in err, err
    assert "train.epochs: Input should be a valid integer" in err and "(got 'abc')" in err
    assert "bogus: no such setting" in err


def test_a_damaged_dataset_cache_is_decoded_again_and_a_failed_write_leaves_nothing(
    image_folder, tmp_path, monkeypatch, caplog
):
    import importlib

    folder = importlib.import_module("training.data.folder_cache")
    cache = tmp_path / "cache"
    first = read_image_folder(image_folder, cache_dir=cache)
    (written,) = cache.iterdir()
    written.write_bytes(b"")  # an interrupted copy, a full disk at the time
    with caplog.at_level("WARNING"):
        again = read_image_folder(image_folder, cache_dir=cache)
    assert "is damaged" in caplog.text and np.array_equal(first.images, again.images)
    assert written.stat().st_size > 0  # written anew

    def full_disk(f, **arrays):
        f.write(b"part")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder.np, "savez", full_disk)
    other = tmp_path / "other"
    with caplog.at_level("WARNING"):
        assert np.array_equal(read_image_folder(image_folder, cache_dir=other).images, first.images)
    assert "could not write the dataset cache" in caplog.text and list(other.iterdir()) == []


def test_best_is_written_before_last(image_folder, tmp_path, monkeypatch):
    """last.pt is where a resume starts: once it is written the epoch is done, so best.pt must already be."""
    import training.engine as engine

    written = []
    real = engine.save_checkpoint
    monkeypatch.setattr(engine, "save_checkpoint", lambda state, path: (written.append(path.name), real(state, path)))
    train(build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "c", epochs=1)), tmp_path / "run")
    assert written == ["best.pt", "last.pt"]


def test_cli_lists_models_and_rejects_bad_overrides(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "training", "models"], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0 and "se_resnet18" in out.stdout and "11,263,042" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "training", "train", "--set", "epochs=0", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "epochs" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("backend, device", [("nccl", torch.device("cuda", 1)), ("gloo", torch.device("cpu"))])
def test_a_flag_is_broadcast_from_where_the_backend_can_send_it(backend, device, monkeypatch):
    from training import distributed

    monkeypatch.setattr(distributed.dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert distributed.collective_device() == device


def test_torchrun_resume_gives_each_rank_its_own_random_stream_back(image_folder, tmp_path):
    """Two ranks draw different dropout masks; a run interrupted after epoch 1 and resumed must end with the
    weights of the uninterrupted run (a constant schedule, so a 1-epoch run resumed to 2 is the same run)."""
    sets = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        threads=1,
        **{"model.args": "{width: 8, dropout: 0.5}", "schedule.name": "constant", "ema_decay": 0},
    )
    torchrun("train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "straight"), "--set", *sets)
    one = [s if not s.startswith("epochs=") else "epochs=1" for s in sets]
    torchrun("train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "resumed"), "--set", *one)
    torchrun("resume", str(tmp_path / "resumed"), "--epochs", "2")
    straight, resumed = (torch.load(tmp_path / r / "last.pt", weights_only=True) for r in ("straight", "resumed"))
    assert resumed["epoch"] == straight["epoch"] == 2 and len(resumed["rng_ranks"]) == 2
    assert not torch.equal(resumed["rng_ranks"][0]["cpu"], resumed["rng_ranks"][1]["cpu"])
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key


@pytest.mark.parametrize(
    "recipe, extra",
    [
        ("resnet9_half_cpu", {}),
        # its whitening bias freezes after epoch 1, under a DDP built while it trained; 2 steps an epoch
        (
            "airbench94",
            {
                "model.name": "airbench94",
                "model.args": "{widths: [8, 8, 8]}",
                "batch_size": 8,
                "whiten_bias_epochs": 1,
                "lookahead_every": 0,
            },
        ),
    ],
)
def test_torchrun_two_processes_gloo(recipe, extra, image_folder, tmp_path):
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=2, threads=1, **extra)
    torchrun("train", "--recipe", recipe, "--out", str(tmp_path / "ddp"), "--set", *overrides)
    history = json.loads((tmp_path / "ddp" / "history.json").read_text())
    assert len(history) == 2
    assert history[0]["train_images_per_s"] > 0 and (tmp_path / "ddp" / "best.pt").exists()
    # each of the 2 ranks sees half of the 45 training images per epoch: 22 // 16 = 1 batch (2 of 8), where one
    # process alone would take 2 (5); the schedule counts the steps taken
    last = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert len(last["rng_ranks"]) == 2
    assert last["scheduler"]["last_epoch"] == 2 * ((45 // 2) // last["config"]["train"]["batch_size"])


def test_the_curves_say_when_the_training_loss_is_label_smoothed(tmp_path, monkeypatch):
    """A smoothed loss cannot fall below about 0.5 (0.1 over 10 classes) and sits above the validation loss for
    that reason alone: the legend must say which loss it is."""
    import matplotlib.axes

    labels: list[str] = []
    real_plot = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        labels.append(kwargs.get("label", ""))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    history = [
        {"epoch": e, "train_loss": 0.6, "val_loss": 0.4, "train_acc": 0.9, "val_top1": 0.9, "lr": 0.1} for e in (1, 2)
    ]
    for smoothing, said in (
        (0.1, "label-smoothed 0.1"),
        (None, "label-smoothed if its recipe smooths"),
        (0.0, "train"),
    ):
        labels.clear()
        plot_training_curves(history, tmp_path / "curves.png", CurveInfo(smoothing))
        assert labels[0] == said if smoothing == 0.0 else said in labels[0], labels


@pytest.mark.parametrize(
    "train, optim, weights, smoothing, lr_says",
    [
        ({"ema_decay": 0.99, "lookahead_every": 0, "label_smoothing": 0.2}, {"name": "sgd"}, "EMA", 0.2, None),
        # lookahead writes its slow weights into the network, which validation runs as it is
        ({"ema_decay": 0.0, "lookahead_every": 5, "label_smoothing": 0.1}, {"name": "sgd"}, None, 0.1, None),
        ({"ema_decay": 0.0, "lookahead_every": 0, "label_smoothing": 0.0}, {"name": "muon"}, None, 0.0, "muon_lr"),
    ],
)
def test_the_curves_say_which_weights_validation_ran_on_and_whose_rate(train, optim, weights, smoothing, lr_says):
    """Validation runs on the EMA or lookahead weights where the recipe keeps them (so it can sit above the
    training accuracy, a running mean over augmented batches); the history's rate is the first group's."""
    info = CurveInfo.from_config({"train": train, "optim": optim})
    assert (info.eval_weights, info.label_smoothing) == (weights, smoothing)
    assert info.validation_label("validation") == (f"validation ({weights} weights)" if weights else "validation")
    assert (lr_says in info.lr_title()) if lr_says else info.lr_title() == "learning rate (end of epoch)"
    assert CurveInfo.from_config(None) == CurveInfo() and CurveInfo().label_smoothing is None  # not known


def test_every_set_counts_and_a_key_set_twice_is_refused(tmp_path, capsys):
    """`--set a --set b` is a and b (argparse's default keeps only the last --set: a wrong run, silently);
    one key given twice, an empty key and a resume override without '=' are refused in one line."""
    from training.__main__ import get_args_parser
    from training.__main__ import main as training_main

    parser = get_args_parser()
    assert parser.parse_args(["train", "--set", "epochs=1", "--set", "lr=0.1", "momentum=0.8"]).set == [
        "epochs=1",
        "lr=0.1",
        "momentum=0.8",
    ]
    assert parser.parse_args(["resume", "r", "--set", "train.threads=1", "--set", "device=cpu"]).set == [
        "train.threads=1",
        "device=cpu",
    ]
    assert parser.parse_args(["ensemble", "a", "b", "--tta", "flip", "--tta", "none"]).tta == ["flip", "none"]
    assert parser.parse_args(["ablate", "--recipe", "x", "--set", "lr=0.1", "--set", "epochs=1"]).set == [
        "lr=0.1",
        "epochs=1",
    ]
    out = ["--out", str(tmp_path / "run")]
    nowhere = ["--set", f"data.root={tmp_path / 'no-data'}", *out]
    for argv, said in (
        (["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=abc", "--set", "lr=0.1", *out], "epochs"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=1", "--set", "epochs=2", *out], "set twice"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "lr=0.1", "optim.lr=0.2", *out], "optim.lr is set twice"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "=5", *out], "'=5' has no key before '='"),
        # a preset or a section after a field would undo it, whichever came first winning without a word (no data
        # there: a regression fails at once instead of training)
        (["train", "--recipe", "resnet9_half_cpu", "--set", "cutout=8", "augment=basic", *nowhere], "would undo it"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=5", "train={epochs: 6}", *nowhere], "set twice"),
        # true is not a number (pydantic reads it as 1), and an empty data root is not the current folder
        (["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=true", *nowhere], "must be a number, not true"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "data.root=", *out], "data.root: is empty"),
        # a model's name given as a recipe points to its recipes; a missing file is named as a file
        (["train", "--recipe", "resnet9_half", *out], "(recipes named like it: resnet9_half_cpu, resnet9_half_muon)"),
        (["train", "--recipe", str(tmp_path / "mine.yaml"), *out], f"recipe file {tmp_path / 'mine.yaml'} does not"),
    ):
        assert training_main(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "run").exists()  # refused before anything was made
    # a preset first and a field after it is a preset tweaked, in that order
    from training.config_overrides import check_distinct
    from training.config_recipes import build_config

    check_distinct(["augment=basic", "cutout=8"])
    assert build_config("resnet9_half_cpu", ["augment=basic", "cutout=8"]).augment.cutout == 8
    # a preset sets only its own fields (ablate checks each variant's values, not the --vary text), an empty
    # mapping of a merged section sets nothing, and a mapping for model.args replaces the whole dict
    check_distinct(["pad_mode=reflect", "augment=basic"])
    check_distinct(["epochs=5", "train={}"])
    with pytest.raises(ConfigError, match="would undo it"):
        check_distinct(["model.args.width=24", "model.args={}"])
    # an empty --out is an unset variable, not the default folder; a setting given as a flag is pointed to --set
    for argv, said in (
        (["train", "--recipe", "resnet9_half_cpu", "--out", ""], "argument --out: is empty"),
        (["train", "--recipe", "resnet9_half_cpu", "--epochs", "3"], "settings are given with --set: --set epochs=3"),
        (["resume", str(tmp_path / "run"), "--set", "bogus"], "'bogus' after --set is not KEY=VALUE"),
        # the run folder after --set was taken for a setting, and argparse said the run was missing
        (["resume", "--set", "device=cpu", str(tmp_path / "run")], "so give the run folder before --set"),
        # train takes no word of its own: the one without =VALUE is a setting whose value is missing
        (
            ["train", "--recipe", "resnet9_half_cpu", "--set", "augment.cutout"],
            "'augment.cutout' after --set is not KEY=VALUE: give the setting its value, --set augment.cutout=VALUE "
            "(train takes no arguments of its own)",
        ),
    ):
        with pytest.raises(SystemExit) as exit_:
            training_main(argv)
        assert exit_.value.code == 2 and said in capsys.readouterr().err, argv
    # the recipe file that is the run folder's config.yaml would be overwritten by the run's own
    own = tmp_path / "own"
    own.mkdir()
    (own / "config.yaml").write_text(f"# my notes\nmodel: {{name: resnet9_half}}\ndata: {{root: {tmp_path / 'no'}}}\n")
    for again in ([], ["--resume"]):  # --resume with nothing to resume starts a run all the same
        assert training_main(["train", "--recipe", str(own / "config.yaml"), "--out", str(own), *again]) == 2
        assert "is the config.yaml a run in" in capsys.readouterr().err
    assert (own / "config.yaml").read_text().startswith("# my notes")


def test_a_checkpoint_whose_meta_or_weights_do_not_hold_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    from training.__main__ import main as training_main

    ckpt = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    cases = {
        "meta-text.pt": ({**ckpt, "meta": "resnet9_half"}, "its meta is not a mapping"),
        "meta-short.pt": ({**ckpt, "meta": {"arch": "resnet9_half"}}, "its meta lacks 'num_classes'"),
        "classes.pt": (
            {**ckpt, "meta": {**ckpt["meta"], "num_classes": 5, "classes": list("abcde")}},
            "weights do not fit the network its meta describes (resnet9, 5 classes): size mismatch",
        ),
        # each used to end in a TypeError traceback inside the network's constructor or the data reader
        "args.pt": ({**ckpt, "meta": {**ckpt["meta"], "model_args": None}}, "its meta's model_args is not of the kind"),
        "size.pt": (
            {**ckpt, "meta": {**ckpt["meta"], "input_size": "big"}},
            "its meta's input_size is not of the kind",
        ),
        "count.pt": (
            {**ckpt, "meta": {**ckpt["meta"], "num_classes": 5}},
            "its meta names 3 classes for num_classes 5",
        ),
        "no-weights.pt": ({**ckpt, "model": {}, "ema": None}, "weights do not fit the network its meta describes"),
    }
    for name, (content, said) in cases.items():
        torch.save(content, tmp_path / name)
        for argv in (
            ["evaluate", "--checkpoint", str(tmp_path / name), "--device", "cpu"],
            ["compare", str(tiny_run), str(tmp_path / name)],
        ):
            assert training_main(argv) == 2, (name, argv)
            err = capsys.readouterr().err
            assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)


def test_an_os_error_names_the_file_in_the_way(tmp_path):
    """`--out afile/sub` where afile is a file: "afile is a file, not a folder", not errno's "File exists"."""
    from inference.messages import os_error_text

    (tmp_path / "afile").write_text("")
    for target in (tmp_path / "afile", tmp_path / "afile" / "sub" / "deeper"):
        with pytest.raises(OSError) as raised:
            target.mkdir(parents=True, exist_ok=True)
        assert os_error_text(raised.value) == f"{tmp_path / 'afile'} is a file, not a folder"
    with pytest.raises(OSError) as raised:
        open(tmp_path / "missing" / "x")
    assert os_error_text(raised.value) == f"{tmp_path / 'missing' / 'x'}: No such file or directory"


def test_a_batch_size_that_leaves_much_of_each_epoch_out_is_said(image_folder, tmp_path, caplog):
    """45 training images in batches of 30: one batch an epoch, a third of the images left for the next."""
    from training.engine import Trainer

    for batch_size, warned in ((30, True), (15, False)):
        cfg = build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "cache", batch_size=batch_size))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            Trainer(cfg, tmp_path / f"run{batch_size}")
        said = "each epoch trains on 30 of the 45 training images (whole batches of 30" in caplog.text
        assert said == warned, caplog.text


def test_a_recipe_that_is_a_folder_is_said_to_be_one(tmp_path, capsys):
    """`--recipe training/recipes` (a completion stopped short) was answered "no recipe", as if mistyped."""
    from training.__main__ import main as training_main

    (tmp_path / "mine.yaml").write_text("model: {name: resnet9}\n")
    for recipe in (str(tmp_path), f"{tmp_path}/"):
        assert training_main(["train", "--recipe", recipe, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert f"recipe {recipe} is a folder" in err and "mine.yaml" in err, err
    assert not (tmp_path / "run").exists()


def test_a_mistyped_setting_is_answered_with_the_setting_meant():
    """A typo was said as "no such setting", or for a bare key as an argument the model does not take, without
    the name the user meant; and a key with spaces around '=' became a model argument named "lr "."""
    from training.preflight import check_network_takes_its_input

    tiny = ["model.name=resnet9", "model.args={width: 8}"]
    for override, meant in (
        ("train.epohcs=1", "did you mean train.epochs?"),
        ("optim.lrr=0.1", "did you mean optim.lr?"),
        ("trian.epochs=1", "did you mean train?"),
    ):
        with pytest.raises(ConfigError, match=re.escape(meant)):
            build_config("resnet9_half_cpu", [*tiny, override])
    for override, meant in (
        ("epohcs=1", "did you mean train.epochs?"),
        ("model.args.dropuot=0.1", "did you mean dropout?"),
    ):
        config = build_config("resnet9_half_cpu", [*tiny[:1], override])
        with pytest.raises(ConfigError, match=re.escape(meant)):
            check_network_takes_its_input(config)
    with pytest.raises(ConfigError) as refused:
        check_network_takes_its_input(build_config("resnet9_half_cpu", [*tiny[:1], "bogus=1"]))
    assert "did you mean" not in str(refused.value)  # nothing is like it: no guess
    assert build_config("resnet9_half_cpu", ["lr = 0.1"]).optim.lr == 0.1


def test_a_run_folder_inside_the_image_folder_it_trains_on_is_refused(image_folder, tmp_path):
    """Its training_curves.png was read back by the next run on that folder: the run folder became a class."""
    data = tmp_path / "data"
    shutil.copytree(image_folder, data)
    config = build_config("resnet9_half_cpu", tiny_overrides(data, tmp_path / "cache", epochs=1))
    for out in (data / "run", data, data / "alpha" / "run"):
        with pytest.raises(ConfigError, match="is inside the dataset"):
            train(config, out)
    assert sorted(p.name for p in data.iterdir()) == ["alpha", "beta", "gamma"] and not (data / "run").exists()


def test_every_train_command_the_help_shows_builds_a_config():
    """The examples in `python -m training train --help` are what users copy first; one set its epochs to the
    recipe's warmup and was refused."""
    import shlex

    from training.__main__ import get_args_parser

    parser = get_args_parser()
    train = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["train"]
    examples = re.findall(r"`(python -m training train [^`]+)`", train.description)
    assert examples, train.description
    for example in examples:
        args = parser.parse_args(shlex.split(example)[3:])
        build_config(args.recipe, args.set)  # raises ConfigError if the example is refused
