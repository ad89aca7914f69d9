"""Training on a folder of one's own images: what the reader takes, what it tells, and that the tensor training
sees for a file is the one the service computes for the same file (no train/serve skew)."""

from __future__ import annotations

import importlib
import logging
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import count_folder_decodes
from training.data import DatasetError, load_split
from training.data.augment import AugmentParams, augment_batch
from training.data.folder import read_image_folder
from training.data.loader import TensorLoader

SIZE = 32


def _noise(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _modes(folder: Path) -> list[str]:
    """One file per image mode and format a user's folder may hold, most of them not 32x32."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    made = {
        "rgb.png": _noise(32, 32, 0),
        "grey.png": _noise(40, 30, 1).convert("L"),
        "palette.png": _noise(32, 32, 2).convert("P"),
        "upper.JPG": _noise(64, 48, 3),
        "photo.jpeg": _noise(300, 200, 4),  # decoded at a reduced size (DCT scaling)
        "lossless.webp": _noise(45, 33, 5),
        "bitmap.bmp": _noise(33, 31, 6),
        "scan.tif": _noise(20, 20, 7),
        "big.png": _noise(1300, 900, 8),  # over a megapixel: box-reduced before fitting
    }
    for name, image in made.items():
        image.save(folder / name, lossless=name.endswith(".webp"))  # ignored by the other formats
    rgba = np.dstack([np.asarray(_noise(32, 32, 9)), rng.integers(0, 256, (32, 32), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    keyed = _noise(32, 32, 10).convert("P")
    keyed.save(folder / "keyed.png", transparency=3)  # palette entry 3 is clear
    _noise(36, 36, 11).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65536, (30, 34), dtype=np.uint16)).save(folder / "deep.png")  # 16-bit grey
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter
    _noise(48, 32, 12).save(folder / "turned.jpg", exif=exif)
    _noise(40, 40, 13).save(folder / "progressive.jpg", progressive=True)
    frames = [_noise(30, 40, 14 + i).convert("P") for i in range(3)]  # the first frame is the image
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return sorted(p.name for p in folder.iterdir())


def _served(path: Path, fit: str) -> np.ndarray:
    """What the service's /classify and the batch scorer feed the model for ``path``: float32 [1, 3, H, W]."""
    from inference.preprocess import pixels_to_model_input
    from service.score.decode import decode_chunk
    from service.uploads import Upload, decode_upload

    pixels = decode_upload(0, Upload(path.name, path.read_bytes()), (SIZE, SIZE), 40_000_000, fit)
    assert isinstance(pixels, bytes), pixels
    upload = pixels_to_model_input(pixels, 1, (SIZE, SIZE))
    scored = decode_chunk([str(path)], (SIZE, SIZE), fit=fit)
    assert scored.errors == {}
    np.testing.assert_array_equal(upload, scored.batch)
    return upload


@pytest.mark.parametrize("fit", ["center_crop", "squash", "pad"])
def test_every_image_mode_reaches_training_as_the_service_computes_it(tmp_path, fit):
    """Each file through the folder reader (a tree, its cache, a .tar.gz) and the training loader, against the
    same file through the service's upload and scorer paths: the same float32 tensor, bit for bit."""
    root = tmp_path / "tree"
    names = _modes(root / "dog")
    (root / "cat").mkdir()
    _noise(32, 32, 99).save(root / "cat" / "0.png")
    archive = tmp_path / "tree.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="tree")
    expected = np.concatenate([_served(root / "dog" / name, fit) for name in names])
    for source, cache in ((root, tmp_path / "cache"), (root, tmp_path / "cache"), (archive, None)):
        data = read_image_folder(source, SIZE, cache, fit=fit)
        assert data.classes == ["cat", "dog"]
        dog = data.subset(np.flatnonzero(data.labels == 1))
        plain = next(iter(TensorLoader(dog, batch_size=len(dog))))[0].numpy()
        np.testing.assert_array_equal(plain, expected)
        params = AugmentParams(crop_padding=0, flip=False)  # the training batches, with nothing drawn at random
        images = torch.from_numpy(dog.images).permute(0, 3, 1, 2)
        trained = augment_batch(images, params, torch.Generator().manual_seed(0)).numpy()
        np.testing.assert_array_equal(trained, expected)


def test_a_cache_decoded_by_another_decoder_or_pillow_is_decoded_again(tmp_path, monkeypatch):
    """The cache holds pixels: an edit to the shared decoder (inference.preprocess, inference.fits) or another
    Pillow would compute other ones for the service, while training went on reading the old ones."""
    import PIL

    import inference.fits

    root = tmp_path / "tree"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        _noise(48, 40, len(cls)).save(root / cls / "0.jpg")
    cache = tmp_path / "cache"
    read_image_folder(root, SIZE, cache)
    decoded = count_folder_decodes(monkeypatch)
    read_image_folder(root, SIZE, cache)
    assert decoded == []  # the same decoder: the cache is read
    edited = tmp_path / "fits.py"
    edited.write_bytes(Path(inference.fits.__file__).read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(inference.fits, "__file__", str(edited))
    read_image_folder(root, SIZE, cache)
    assert len(decoded) == 2
    monkeypatch.setattr(PIL, "__version__", "0.0.other")
    read_image_folder(root, SIZE, cache)
    assert len(decoded) == 4
    assert len(list(cache.glob("*.npz"))) == 1  # each new decode replaced the one the older decoder made


def test_files_left_out_for_their_name_are_counted_and_hidden_class_folders_named(tmp_path, caplog):
    """A class of iPhone photos (.HEIC), a folder named with a leading dot, or one inside a class folder, is not
    trained on: said, with counts by extension, for a tree and for its archive; the litter of a Mac or Windows
    (.DS_Store, ._x.jpg, Thumbs.db) is not worth a word."""
    folder_module = importlib.import_module("training.data.folder_layout")
    root = tmp_path / "photos"
    for name in ("cat/0.png", "dog/0.JPG", "dog/1.jpeg", ".secret/0.png", "dog/.thumbnails/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _noise(40, 30, len(name)).save(root / name, format="PNG" if name.endswith("png") else "JPEG")
    for name in ("dog/IMG_1.HEIC", "dog/IMG_2.heic", "cat/notes.txt", "labels", "dog/.DS_Store", "dog/._0.JPG"):
        (root / name).write_bytes(b"not read")
    (root / "cat" / "Thumbs.db").write_bytes(b"")
    folder_module._said_left_out.clear()
    with caplog.at_level(logging.WARNING):
        data = read_image_folder(root)
    assert data.classes == ["cat", "dog"] and len(data) == 3
    said = caplog.text
    assert "4 files left out, not images by their extension: .heic (2), .txt (1), no extension (1)" in said
    assert ".jpg" in said.split("(read: ")[1]  # what would have been read
    assert "hidden folder left out, not classes (a name starting with a dot): .secret" in said
    assert "hidden folder in class folders left out, not read: dog/.thumbnails" in said
    assert "Thumbs" not in said and "DS_Store" not in said
    archive = tmp_path / "photos.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="photos")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert len(read_image_folder(archive)) == 3
    assert "4 files left out, not images by their extension: .heic (2), .txt (1), no extension (1)" in caplog.text


@pytest.mark.parametrize("packed", ["with the folder's name", "from inside the folder"])
def test_an_archive_of_a_folder_is_read_as_the_folder_is(tmp_path, caplog, packed):
    """An image beside the class folders and a hidden folder: the folder itself trains on its classes, warning of
    both; its archive, packed as `tar czf pets.tar.gz pets`, was refused ("more than one level") for the stray
    image, and packed from inside left both out without a word."""
    folder_module = importlib.import_module("training.data.folder_layout")
    root = tmp_path / "pets"
    for name in ("cat/0.png", "cat/1.png", "dog/0.png", "beside.png", ".thumbnails/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _noise(40, 30, len(name)).save(root / name)
    folder_module._said_left_out.clear()
    with caplog.at_level(logging.WARNING):
        tree = read_image_folder(root)
    assert "1 image beside the class folders left out, in no class: beside.png" in caplog.text
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            tar.add(path, arcname=f"pets/{rel}" if packed == "with the folder's name" else rel, recursive=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        packed_data = read_image_folder(archive)
    assert packed_data.classes == tree.classes == ["cat", "dog"]
    np.testing.assert_array_equal(packed_data.images, tree.images)
    np.testing.assert_array_equal(packed_data.labels, tree.labels)
    assert "1 image beside the class folders left out, in no class: beside.png" in caplog.text
    assert "hidden folder left out" in caplog.text and ".thumbnails" in caplog.text
    # images in folders of two levels are still refused: a class folder's subfolder would become a class
    nested = tmp_path / "nested.tar.gz"
    with tarfile.open(nested, "w:gz") as tar:
        tar.add(root / "cat" / "0.png", arcname="pets/cat/0.png")
        tar.add(root / "dog" / "0.png", arcname="pets/dog/0.png")
        tar.add(root / "cat" / "1.png", arcname="pets/cat/kittens/1.png")
    with pytest.raises(DatasetError, match="more than one level"):
        read_image_folder(nested)


def test_the_order_and_split_do_not_depend_on_the_unicode_form_of_file_names(tmp_path):
    """The same photos, their names written composed (Linux, Windows) or decomposed (copied from a Mac's HFS+):
    the same images in the same order, so the same validation split and the same fingerprint to resume on."""
    import unicodedata

    names = ["é.png", "f.png", "e.png", "ö.png", "p.png"]
    trees = []
    for form in ("NFC", "NFD"):
        root = tmp_path / form
        for cls in ("cat", "dog"):
            (root / cls).mkdir(parents=True)
            for i, name in enumerate(names):
                _noise(32, 32, 10 * len(cls) + i).save(root / cls / unicodedata.normalize(form, name))
        trees.append(root)
    assert sorted(os.listdir(trees[0] / "cat")) != sorted(os.listdir(trees[1] / "cat"))
    composed, decomposed = (read_image_folder(root) for root in trees)
    assert composed.fingerprint() == decomposed.fingerprint()
    for split in ("train", "val"):
        a, b = (load_split("folder", root, split, val_size=4) for root in trees)
        np.testing.assert_array_equal(a.images, b.images)


def _litter_tree(root: Path) -> Path:
    """Class folders as a user's disk holds them: hidden files and folders, a Mac's ._ copies, a system's files,
    non-images, links to an image and to folders (one beside the tree, a second name of a class, a loop), and a
    class folder whose name macOS wrote decomposed."""
    import unicodedata

    cafe = unicodedata.normalize("NFD", "café")
    images = ["cat/0.png", "cat/1.jpg", "dog/0.png", f"{cafe}/0.png"]
    hidden = ["cat/.2.png", ".thumbnails/0.png", "dog/.cache/0.png", ".cats/0.png"]
    for i, name in enumerate(images + hidden + ["../elsewhere/0.png"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _noise(32, 32, i).save(root / name)
    for name in ("cat/._0.png", "cat/.DS_Store", "cat/Thumbs.db", "dog/desktop.ini", "dog/notes.txt", "dog/a.HEIC"):
        (root / name).write_bytes(b"\x00\x05\x16\x07 not an image")
    (root / "dog" / "link.png").symlink_to(root / "cat" / "0.png")
    (root / "bird").symlink_to(root.parent / "elsewhere", target_is_directory=True)
    (root / "kitty").symlink_to(root / "cat", target_is_directory=True)  # read once, as cat
    (root / "cat" / "up").symlink_to(root, target_is_directory=True)  # a loop
    (root / "fish").mkdir()
    return root


def test_the_training_reader_and_the_scorer_take_the_same_images_with_the_same_labels(tmp_path):
    """`training evaluate --data DIR` and `service score DIR --labels-from-folders` on one tree: the same files,
    each with the same class. The root's own name is hidden: the folder a user names is read all the same."""
    from service.score.accuracy import FolderAccuracy
    from service.score.walk import WalkStats, walk
    from training.data.folder_tree import _iter_tree, _tree_images

    root = _litter_tree(tmp_path / ".photos")
    data = read_image_folder(root)
    images, _, _ = _tree_images(root)
    trained = {(rel, cls) for rel, cls, _ in _iter_tree(root, images)}
    stats = WalkStats()
    entries = list(walk(root, stats))
    assert [e.error for e in entries] == [None] * len(entries)
    accuracy = FolderAccuracy(data.classes, root.name, "m")
    scored = {(e.rel, accuracy.label_of(e.rel)) for e in entries}
    assert scored == trained
    assert {rel.split("/")[0] for rel, _ in trained} == {"bird", "cat", "dog", "cafe\u0301"}
    assert len(trained) == len(data) == 6
    assert stats.hidden_dirs_skipped == [".cats", ".thumbnails", "dog/.cache"]
    assert stats.linked_dirs_skipped == ["cat/up", "kitty"]


def test_a_second_link_to_a_class_folder_is_named_as_one_not_as_a_folder_without_images(tmp_path, caplog):
    """A folder read under another name (a link to it, sorted before or after it) left out: said as such, naming
    both, not as a folder without images, which would send the user looking for images that are there."""
    folder_module = importlib.import_module("training.data.folder_layout")
    root = tmp_path / "tree"
    for name in ("cat/0.png", "dog/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _noise(32, 32, len(name)).save(root / name)
    (root / "kitty").symlink_to(root / "cat", target_is_directory=True)  # after cat: cat is read
    # before dog: still read as dog, its own name (the class), the link left out
    (root / "animals").symlink_to(root / "dog", target_is_directory=True)
    (root / "fish").mkdir()
    folder_module._said_left_out.clear()
    with caplog.at_level(logging.WARNING):
        data = read_image_folder(root)
    assert data.classes == ["cat", "dog"]
    said = caplog.text
    assert (
        "folders left out, not classes, the same folder as a class already read: animals is a link to dog, read by "
        "its own name; kitty is a link to cat, read by its own name" in said
    )
    assert "folder without images left out, not classes: fish\n" in said


def _photos(root: Path, per_class: int, side: int) -> int:
    """Class folders of noise PNGs stored uncompressed, as large as photos relative to their pixels; their total
    size in bytes."""
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            _noise(side, side, 100 * len(cls) + i).save(root / cls / f"{i}.png", compress_level=0)
    return sum(p.stat().st_size for p in root.rglob("*.png"))


@pytest.mark.parametrize("packed", [False, True])
def test_the_reader_holds_one_file_at_a_time_not_the_whole_folder(tmp_path, packed):
    """A folder of phone photos (a few MB each) is larger than the memory of the machine training on it: each file
    is decoded as it is read and only its 32x32 pixels are kept, for a tree and for its archive alike. The reader
    held every file's bytes until the last was read (the peak was the folder's size)."""
    import tracemalloc

    root = tmp_path / "photos"
    total = _photos(root, per_class=8, side=600)  # 16 files of about 1 MB
    source = root
    if packed:
        source = tmp_path / "photos.tar"
        with tarfile.open(source, "w") as tar:
            tar.add(root, arcname="photos")
    expected = read_image_folder(root)  # also imports and warms up whatever the reader uses
    tracemalloc.start()
    try:
        data = read_image_folder(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data.fingerprint() == expected.fingerprint() and data.classes == ["cat", "dog"]
    assert peak < total / 4, f"peak {peak} bytes while reading {total} bytes of files"


@pytest.mark.parametrize(
    "damage",
    [
        lambda a: {"images": a.images[:, :16, :16], "labels": a.labels, "classes": np.array(a.classes)},
        lambda a: {"images": a.images, "labels": a.labels + 5, "classes": np.array(a.classes)},
        lambda a: {"images": a.images, "labels": a.labels * 0, "classes": np.array(a.classes[:1])},
        lambda a: {"images": a.images[:3], "labels": a.labels[:3], "classes": np.array(a.classes)},
        lambda a: {"images": a.images, "labels": a.labels, "classes": np.array(["dog", "cat"])},
    ],
    ids=["other-size", "labels-past-the-classes", "a-class-missing", "images-missing", "classes-unsorted"],
)
def test_a_cache_that_reads_but_does_not_fit_the_tree_is_decoded_again(tmp_path, caplog, monkeypatch, damage):
    """A cache file that numpy reads but that cannot be this tree's decode (another image size, labels past the
    classes, other classes or image count than the tree's): said and rebuilt, not trained on. It was returned as
    it was, and training failed later or learnt the wrong classes."""
    root = tmp_path / "tree"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            _noise(40, 30, 10 * len(cls) + i).save(root / cls / f"{i}.png")
    cache_dir = tmp_path / "cache"
    fresh = read_image_folder(root, SIZE, cache_dir)
    (cache,) = cache_dir.glob("*.npz")
    arrays = damage(fresh)
    with open(cache, "wb") as f:
        np.savez(f, images=arrays["images"], labels=arrays["labels"], classes=arrays["classes"])
    decoded = count_folder_decodes(monkeypatch)
    with caplog.at_level(logging.WARNING):
        again = read_image_folder(root, SIZE, cache_dir)
    assert again.fingerprint() == fresh.fingerprint() and again.classes == fresh.classes
    assert len(decoded) == 6 and f"the dataset cache {cache} is damaged" in caplog.text
    assert read_image_folder(root, SIZE, cache_dir).fingerprint() == fresh.fingerprint()
    assert len(decoded) == 6  # rewritten: the next run reads it


def test_a_class_too_small_for_a_validation_share_is_named(tmp_path, caplog):
    """A class of one image among larger ones gets no validation image: it was trained on and never measured,
    unsaid (its report row only showed recall null)."""
    from PIL import Image

    from training.data import load_split

    root = tmp_path / "tree"
    for name, count in (("big", 30), ("other", 30), ("tiny", 1)):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (i * 8, 0, 0)).save(root / name / f"{i}.png")
    with caplog.at_level(logging.WARNING):
        val = load_split("folder", root, "val", val_size=6, image_size=8)
    assert sorted(set(val.labels.tolist())) == [0, 1], val.labels
    assert "no validation image for class 'tiny' (1 image)" in caplog.text, caplog.text
    assert "'big'" not in caplog.text and "'other'" not in caplog.text, caplog.text


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "archive"])
def test_the_decode_progress_bar_ends_on_the_images_decoded(tmp_path, capsys, packed):
    """A small folder decodes before the bar's first refresh: its last line, the one a log keeps, read `0img`
    (`0/3` for a folder) however many images it decoded."""
    root = tmp_path / "pets"
    for name in ("cat/0.png", "cat/1.png", "dog/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        _noise(12, 10, len(name)).save(root / name)
    source = root
    if packed:
        source = tmp_path / "pets.tar"
        with tarfile.open(source, "w") as tar:
            tar.add(root, arcname="pets")
    capsys.readouterr()

    assert len(read_image_folder(source)) == 3

    drawn = [line.strip() for line in capsys.readouterr().err.split("\r") if line.strip()]
    assert drawn and drawn[0].startswith(f"decoding {source.name}"), drawn
    assert ("3img" if packed else "3/3") in drawn[-1], drawn
