"""The python-format CIFAR folders as they are published (Python 2's pickles) and as users re-save them: every
way a batch can be readable is read, every way it can be wrong is one line naming the file, before training."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import make_arrays, tiny_overrides
from training.__main__ import main as training_main
from training.data import DATASETS, DatasetError, load_split

FINE = [f"fine{i:02d}" for i in range(100)]


class _Python2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Writes every str and bytes as Python 2's cPickle wrote its str (BINSTRING), as the published batches hold
    their keys, class names and numpy buffers."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def _py2_dump(value: object, path: Path) -> None:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(value)
    path.write_bytes(buffer.getvalue())


def _published_cifar100(root: Path, per_class: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """cifar-100-python laid out as the official archive: train, test and meta with every key it has."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    images, labels = make_arrays(100, per_class)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for split in ("train", "test"):
        batch = {
            "filenames": [f"{split}_{i}.png" for i in range(len(labels))],
            "batch_label": f"{split}ing batch 1 of 1",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": rows,
        }
        _py2_dump(batch, folder / split)
    _py2_dump({"fine_label_names": FINE, "coarse_label_names": [f"coarse{i}" for i in range(20)]}, folder / "meta")
    return images, labels


def _resave(path: Path, change=None, encoding: str = "latin1", protocol: int = 2) -> None:
    value = pickle.loads(path.read_bytes(), encoding=encoding)
    path.write_bytes(pickle.dumps(change(value) if change else value, protocol=protocol))


@pytest.fixture
def published(tmp_path) -> Path:
    _published_cifar100(tmp_path)
    return tmp_path


def test_the_published_layout_reads_pixel_for_pixel(tmp_path):
    images, labels = _published_cifar100(tmp_path)
    for split in ("all", "test"):
        data = load_split("cifar100", tmp_path, split)
        assert data.classes == FINE and np.array_equal(data.images, images) and np.array_equal(data.labels, labels)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_batches_resaved_with_bytes_keys_and_names_read_as_text(published, protocol):
    """A batch loaded with encoding='bytes' (the usual Python 3 recipe for these files) and saved again holds
    bytes keys and bytes class names: the same dataset, not b'apple'."""
    folder = published / "cifar-100-python"
    for name in ("train", "meta"):
        _resave(folder / name, encoding="bytes", protocol=protocol)
    data = load_split("cifar100", published, "all")
    assert data.classes == FINE and all(type(name) is str for name in data.classes)
    assert data.labels.max() == 99


def _set(key, value):
    return lambda batch: {**batch, key: value}


def _first_label(value):
    return lambda batch: {**batch, "fine_labels": [value, *batch["fine_labels"][1:]]}


@pytest.mark.parametrize(
    "file, change, message",
    [
        (
            "train",
            _first_label(100),
            r"/train: its labels \('fine_labels', of 100 named classes\) must lie in \[0, 99\], got 0 to 100",
        ),
        ("train", _first_label(-1), r"must lie in \[0, 99\], got -1 to 99"),
        ("meta", _set("fine_label_names", FINE[:10]), r"must lie in \[0, 9\], got 0 to 99"),
        ("train", _first_label(2.5), "labels .* must be whole numbers, got fractions"),
        ("train", _set("fine_labels", [i % 100 for i in range(150)]), "200 images but"),
        ("train", lambda b: {**b, "data": b["data"].astype(np.int64) * 2}, r"pixels must lie in \[0, 255\]"),
        ("train", lambda b: {k: v for k, v in b.items() if k != "fine_labels"}, "train has no 'fine_labels' entry"),
        ("train", lambda b: [b], "train is not a python-format CIFAR file: it holds a list"),
        ("meta", lambda b: {"label_names": FINE}, r"meta has no 'fine_label_names' entry \(it holds 'label_names'\)"),
        ("meta", _set("fine_label_names", "fine00"), "'fine_label_names' must be a list of class names, got str"),
        ("meta", _set("fine_label_names", ["same"] * 100), "'fine_label_names' names 'same' more than once"),
    ],
)
def test_a_wrong_batch_is_one_line_naming_its_file(published, file, change, message):
    _resave(published / "cifar-100-python" / file, change)
    with pytest.raises(DatasetError, match=message):
        load_split("cifar100", published, "all")


@pytest.mark.parametrize(
    "asked, holds, hint",
    [
        ("cifar10", "cifar-100-python", "holds 'cifar-100-python', the python-format cifar100: data.dataset=cifar100"),
        ("cifar100", "cifar-10-batches-py", "holds 'cifar-10-batches-py', the python-format cifar10"),
    ],
)
def test_a_root_holding_the_other_cifar_says_which_dataset_it_is(tmp_path, asked, holds, hint):
    (tmp_path / holds).mkdir()
    with pytest.raises(DatasetError, match=hint):
        DATASETS.get(asked)(tmp_path)
    with pytest.raises(DatasetError, match=f"{tmp_path / holds} is {holds!r}"):
        DATASETS.get(asked)(tmp_path / holds)


def test_an_archive_given_as_the_root_says_to_unpack_it(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    archive.write_bytes(b"\x1f\x8b")
    with pytest.raises(DatasetError, match="is a file: unpack a downloaded python-format archive"):
        DATASETS.get("cifar100")(archive)


def test_training_on_a_label_past_the_class_names_is_refused_before_it_starts(published, tmp_path, capsys):
    """Such a label passed the reader and failed the loss mid-epoch with a traceback (on a GPU, a device-side
    assert that takes the process down)."""
    _resave(published / "cifar-100-python" / "train", _first_label(100))
    overrides = tiny_overrides(published, tmp_path / "cache", **{"data.dataset": "cifar100", "data.val_size": 0})
    code = training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "must lie in [0, 99], got 0 to 100" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()


def test_the_reports_dataset_option_offers_what_the_registry_holds(capsys):
    """Its help named three datasets by hand; a registered one would be missing from it."""
    from training.__main__ import main as training_main
    from training.data import DATASETS

    with pytest.raises(SystemExit) as stopped:
        training_main(["evaluate", "--checkpoint", "x.pt", "--dataset", "CIFAR100"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'CIFAR100'" in err and all(name in err for name in DATASETS.names())
