"""A dataset of one's own: class names with spaces, accents, digits only; folders copied from macOS (NFD names),
in other case or with hidden files; a tiny validation split. What the scorer, the doctor and the export's card
and calibration make of them."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, make_arrays

CLASSES = ["5", "Golden Retriever", "café-au-lait", "ünïcode"]


def nfd(name: str) -> str:
    return unicodedata.normalize("NFD", name)


def entry_with(classes: list[str]):
    """A shipped model's manifest entry with these classes (its figures and file are beside the point)."""
    from inference.manifest import ModelEntry, load_manifest

    shipped = load_manifest(ROOT / "models", verify=False).models[0]
    return ModelEntry.model_validate({**shipped.model_dump(), "classes": classes})


def write_images(folder: Path, count: int, label: int = 0, size: tuple[int, int] = (45, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = make_arrays(num_classes=label + 1, per_class=count, size=max(size))
    for i, img in enumerate(images[-count:]):
        Image.fromarray(img).resize(size).save(folder / f"img {i:02d}.png")


def test_a_folder_name_matches_its_class_exactly_else_in_nfc_and_any_case():
    from inference.classes import ClassMatcher

    match = ClassMatcher(CLASSES)
    assert [match.label(name) for name in CLASSES] == CLASSES
    assert match.label(nfd("café-au-lait")) == "café-au-lait"  # a folder copied from a Mac
    assert match.label(nfd("ÜNÏCODE")) == "ünïcode" and match.label("golden retriever") == "Golden Retriever"
    assert match.index("5") == 0 and match.index("05") is None
    # spaces are part of the name: another spelling is no class, not a guess
    assert match.label("Golden_Retriever") is None and match.label("GoldenRetriever") is None
    # a class spelled exactly wins over one equal only once folded; a folder two classes are once folded is neither
    assert ClassMatcher(["Cat", "cat"]).label("cat") == "cat" and ClassMatcher(["Cat", "cat"]).label("CAT") is None


def test_folder_accuracy_without_the_models_classes_counts_a_macos_folder_as_its_class():
    """A service that does not list its models gives the scorer no classes: the folder's name is the truth,
    compared as a class name (NFC, case) with the labels the image got, not byte for byte."""
    from service.score.accuracy import FolderAccuracy
    from service.score.sinks import Prediction, Row

    accuracy = FolderAccuracy(None, "photos", "m")
    top = [Prediction("café-au-lait", 2, 0.9), Prediction("5", 0, 0.1)]
    accuracy.add(Row(f"{nfd('café-au-lait')}/a.jpg", top))
    accuracy.add(Row("CAFÉ-AU-LAIT/b.jpg", top))
    accuracy.add(Row("5/c.jpg", top))
    assert dict(accuracy.images) == {"café-au-lait": 2, "5": 1}
    assert dict(accuracy.top1) == {"café-au-lait": 2} and dict(accuracy.topk) == {"café-au-lait": 2, "5": 1}
    assert "top-1 66.67% (2/3)" in accuracy.report()


def test_folder_accuracy_with_the_models_classes_matches_unicode_case_and_digits():
    from service.score.accuracy import FolderAccuracy
    from service.score.sinks import Prediction, Row

    accuracy = FolderAccuracy(CLASSES, "photos", "m")
    for folder, truth in [(nfd("ÜNÏCODE"), 3), ("golden retriever", 1), ("5", 0), ("Golden_Retriever", 1)]:
        accuracy.add(Row(f"{folder}/x.png", [Prediction(CLASSES[truth], truth, 1.0)]))
    assert dict(accuracy.top1) == {"ünïcode": 1, "Golden Retriever": 1, "5": 1}
    assert dict(accuracy.unknown) == {"Golden_Retriever": 1}


def test_the_doctors_folder_reads_macos_and_other_case_folders_as_their_classes_and_skips_hidden_files(tmp_path):
    from service.doctor_folder import class_folders, read_folder

    root = tmp_path / "labelled"
    write_images(root / nfd("café-au-lait"), 3)
    write_images(root / "GOLDEN RETRIEVER", 2)
    write_images(root / "5", 1)
    write_images(root / "5" / ".thumbnails", 4)  # a viewer's copies: no images of the class
    (root / "5" / "._img 00.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # a Mac's metadata
    write_images(root / "Golden_Retriever", 2)  # no class: said, not read
    write_images(root / ".Trash" / "x", 2)
    images, labels, unreadable = read_folder(root, entry_with(CLASSES), max_images=100)
    assert sorted(labels.tolist()) == [0, 1, 1, 2, 2, 2] and images.shape == (6, 3, 32, 32) and unreadable == []
    assert class_folders(root, entry_with(CLASSES))[1] == ["Golden_Retriever"]


def test_the_doctor_says_which_folders_are_no_class_and_counts_a_case_variant(tiny_models_dir, tmp_path):
    from service.doctor import diagnose
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    root = tmp_path / "labelled"
    write_images(root / "ALPHA", 2)
    write_images(root / "beta", 2, label=1)
    write_images(root / "delta", 2)
    settings = ServiceSettings(models_dir=tiny_models_dir, device="cpu")
    report = diagnose("cpu", tiny_models_dir, str(root), 100, speed=False, gpus=GpuReport([], None), settings=settings)
    folder = [f for f in report.findings if f.topic == "folder"]
    assert report.passed and "4 labelled images" in folder[0].text, report.render()
    warned = [f.text for f in folder if f.status == "warn"]
    assert warned and "'delta'" in warned[0] and "alpha, beta, gamma" in warned[0]


def test_the_doctor_says_which_images_of_the_folder_it_could_not_read(tiny_models_dir, tmp_path):
    """Training refuses a folder with an unreadable image; the doctor left it out of its accuracy unsaid."""
    from service.doctor import diagnose
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    root = tmp_path / "labelled"
    write_images(root / "alpha", 2)
    (root / "alpha" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    settings = ServiceSettings(models_dir=tiny_models_dir, device="cpu")
    report = diagnose("cpu", tiny_models_dir, str(root), 100, speed=False, gpus=GpuReport([], None), settings=settings)
    folder = [f for f in report.findings if f.topic == "folder"]
    assert "2 labelled images" in folder[0].text, report.render()
    warned = [f.text for f in folder if f.status == "warn"]
    assert warned and warned[0].startswith("1 image could not be read") and "cut.jpg" in warned[0], warned


def test_a_temperature_fitted_where_every_validation_image_is_right_is_marked_on_the_card(caplog):
    from export.calibration import fit_calibration

    rng = np.random.default_rng(0)
    labels = np.arange(24) % 4
    easy = rng.normal(0, 0.1, (24, 4)) + 0.5 * np.eye(4)[labels]  # all right, by small margins
    calibration = fit_calibration(easy, labels, "temperature", "the checkpoint")
    assert calibration.method == "temperature" and calibration.fitted_on is not None
    assert "means little" in calibration.fitted_on and "--calibrate none" in caplog.text
    assert caplog.text.count("means little") == 1, caplog.text  # said once, with the way out

    caplog.clear()
    hard = rng.normal(0, 1.0, (400, 4)) + 1.5 * np.eye(4)[np.arange(400) % 4]  # some wrong: a real fit
    calibration = fit_calibration(hard, np.arange(400) % 4, "temperature", "the checkpoint")
    assert calibration.fitted_on is not None and "means little" not in calibration.fitted_on
    assert 0.1 < calibration.temperature < 10 and "--calibrate none" not in caplog.text


@pytest.mark.parametrize(
    ("classes", "shown"),
    [
        (CLASSES, "| classes | 4: 5, Golden Retriever, café-au-lait, ünïcode |"),
        (["a|b", "c"], "| classes | 2: a\\|b, c |"),
        ([f"c{i}" for i in range(12)], "| classes | 12: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 and 2 more |"),
    ],
)
def test_the_card_table_names_the_models_classes(tmp_path, classes, shown):
    from export.card import card_table

    entry = entry_with(classes)
    (tmp_path / entry.file).write_bytes(b"onnx")
    table = card_table([entry], tmp_path)
    assert shown in table.splitlines(), table
