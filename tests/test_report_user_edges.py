"""Reports as a user meets them at the edges: an --out that cannot be written, a class the scored split holds no
image of, long class names that cut alike, and the refusals that name many classes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training.__main__ import main
from training.data import ImageArrays
from training.reports import figures
from training.reports.predictions import METRICS_FILE, save_predictions
from training.reports.samples import DataSpec, match_classes
from training.reports.sources import ModelSource


@pytest.fixture
def unwritable(monkeypatch, tmp_path) -> Path:
    """A folder this user may not write in (``os.access`` says so: root writes anywhere, whatever its mode)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access

    def fake_access(path, mode, *args, **kwargs):
        if Path(path).absolute() == locked.absolute() and mode & os.W_OK:
            return False
        return access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", fake_access)
    return locked


@pytest.fixture
def captured_figures(monkeypatch) -> list:
    """The figures the report's plots would save, kept open to read their labels."""
    kept: list = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, tight=False: kept.append(fig))
    return kept


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_an_out_that_cannot_be_written_is_refused_before_the_evaluation(tiny_run, unwritable, monkeypatch, capsys):
    """A read-only --out was found only when the first file was written, after the whole evaluation pass, and the
    error named a temporary file (``.../predictions.npz.1234.tmp: Permission denied``)."""
    from training.reports import compare as compare_module

    monkeypatch.setattr(ModelSource, "predict", lambda *a, **k: pytest.fail("evaluated before refusing"))
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: pytest.fail("compared before refusing"))
    for out in (unwritable, unwritable / "report"):
        assert main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(out), "--device", "cpu"]) == 2
        err = _one_error_line(capsys)
        assert f"--out {out}: cannot write in {unwritable.absolute()}" in err and "give --out a folder" in err, err
    assert main(["compare", str(tiny_run), str(tiny_run), "--out", str(unwritable / "cmp"), "--device", "cpu"]) == 2
    assert f"cannot write in {unwritable.absolute()}" in _one_error_line(capsys)


def test_a_class_the_split_holds_no_image_of_is_named_in_the_report(tiny_run, image_folder, tmp_path):
    """A class too small for a share of the held-out images vanished from the bar chart and report.md without a
    word, while the report said "3 classes"; its confusion-matrix row was blank, as if never predicted right."""
    data = tmp_path / "skewed"
    for name in ("alpha", "beta"):
        shutil.copytree(image_folder / name, data / name)
    (data / "gamma").mkdir()
    for png in sorted((image_folder / "gamma").iterdir())[:2]:
        shutil.copy(png, data / "gamma")
    out = tmp_path / "report"
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--data", str(data), "--val-size", "8", "--out", str(out)]
    assert main([*argv, "--device", "cpu", "--no-sample-figures"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    gamma = metrics["per_class"][2]
    assert gamma["class"] == "gamma" and gamma["support"] == 0  # the case itself: 2 of 42 images earn no share
    said = [note for note in metrics["notes"] if "no image of gamma" in note]
    assert len(said) == 1 and "not measured here" in said[0], metrics["notes"]
    assert said[0] in (out / "report.md").read_text()


def test_the_figures_keep_a_class_without_images_and_say_so(tmp_path, captured_figures):
    figures.plot_per_class_accuracy([1.0, 0.0, None], ["a", "b", "c"], tmp_path / "bars.png")
    (bars,) = captured_figures.pop().axes
    assert [t.get_text() for t in bars.get_xticklabels()] == ["a", "b", "c"]
    assert any(t.get_text() == "no\nimages" for t in bars.texts)
    figures.plot_confusion_matrix(np.array([[2, 0, 0], [1, 1, 0], [0, 1, 0]]), ["a", "b", "c"], tmp_path / "cm.png")
    matrix = captured_figures.pop().axes[0]
    assert [t.get_text() for t in matrix.get_yticklabels()] == ["a", "b", "c"]  # c was predicted once: it has images
    figures.plot_confusion_matrix(np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]), ["a", "b", "c"], tmp_path / "cm.png")
    matrix = captured_figures.pop().axes[0]
    assert [t.get_text() for t in matrix.get_yticklabels()] == ["a", "b", "c (no images)"]
    assert [t.get_text() for t in matrix.get_xticklabels()] == ["a", "b", "c"]


def test_long_class_names_that_cut_alike_stay_apart_in_the_figures(tmp_path, captured_figures):
    """Names cut at 24 characters drew ``vehicle_large_category_one`` and ``..._two`` as one label twice."""
    names = ["vehicle_large_category_one", "vehicle_large_category_two", "x" * 40 + "end", "x" * 41 + "end", "dog"]
    figures.plot_confusion_matrix(np.eye(5, dtype=int), names, tmp_path / "cm.png")
    matrix = captured_figures.pop().axes[0]
    labels = [t.get_text() for t in matrix.get_xticklabels()]
    assert len(set(labels)) == 5 and labels[-1] == "dog", labels
    assert all(len(label) <= figures.LABEL_CHARS for label in labels), labels
    assert labels[0].endswith("_one") and labels[1].endswith("_two"), labels
    figures.plot_misclassified(
        np.zeros((2, 8, 8, 3), np.uint8), np.array([0, 1]), np.array([1, 0]), np.ones(2), names, tmp_path / "m.png"
    )
    titles = [ax.get_title() for ax in captured_figures.pop().axes]
    assert titles[0] != titles[1] and labels[0] in titles[1] and labels[1] in titles[0], titles
    assert figures.short_labels(["cat", "dog"]) == ["cat", "dog"]


def _report(folder: Path, classes: list[str]) -> Path:
    folder.mkdir()
    labels = np.arange(len(classes)) % len(classes)
    logits = np.eye(len(classes), dtype=np.float32)
    save_predictions(folder / "predictions.npz", logits, labels, classes, "same")
    (folder / METRICS_FILE).write_text('{"tta": "none"}')
    return folder


def test_compare_of_many_classes_says_where_they_differ(tmp_path, capsys):
    """Two 100-class models of other class lists were refused with both lists whole, some 1,800 characters with
    the one difference buried among them."""
    names = [f"class{i:02d}" for i in range(100)]
    a = _report(tmp_path / "a", names)
    swapped = names.copy()
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert main(["compare", str(a), str(_report(tmp_path / "swapped", swapped))]) == 2
    err = _one_error_line(capsys)
    assert "the same 100 classes in different orders (from index 3: A class03, B class04)" in err
    assert len(err) < 300, err
    other = names.copy()
    other[7] = "tractor"
    assert main(["compare", str(a), str(_report(tmp_path / "other", other))]) == 2
    err = _one_error_line(capsys)
    assert "A predicts classes B does not (class07) and B classes A does not (tractor): not the same task" in err
    assert len(err) < 300, err


def test_a_folder_class_the_model_lacks_is_refused_without_listing_a_hundred_classes():
    model = [f"class{i:02d}" for i in range(100)]
    source = ModelSource("checkpoint", Path("run/best.pt"), model, "resnet9", 32)
    data = ImageArrays(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ["class00", "delta"])
    with pytest.raises(Exception, match="does not predict: delta") as refusal:
        match_classes(source, data, DataSpec("folder", "/data/mine"))
    message = str(refusal.value)
    assert "class00, class01" in message and "(100 in all)" in message and "class99" not in message, message


def test_the_summary_line_of_a_calibrated_graph_says_its_loss_is_after_its_temperature(
    tiny_models_dir, tiny_run, tmp_path, capsys
):
    """The ONNX export of a checkpoint printed another loss and ECE than the checkpoint's own evaluation, unsaid:
    its graph divides by a temperature."""
    assert main(["evaluate", "--onnx", str(tiny_models_dir / "tiny.onnx"), "--out", str(tmp_path / "onnx")]) == 0
    metrics = json.loads((tmp_path / "onnx" / "metrics.json").read_text())
    t = metrics["calibration"]["temperature"]
    assert f"ECE {metrics['ece']:.4f} (its graph divides by T = {t:.4f})" in capsys.readouterr().out
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "ckpt"), "--no-sample-figures"]
    assert main([*argv, "--device", "cpu"]) == 0
    assert "divides by T" not in capsys.readouterr().out


def test_a_graphs_temperature_is_said_in_sample_only_on_its_own_validation_split():
    """A calibrated ONNX model evaluated on another dataset's validation split was said to have its temperature
    "fitted at export on these validation images"."""
    from types import SimpleNamespace

    from training.reports.report_calibration import temperature_for
    from training.reports.samples import DataSpec

    source = SimpleNamespace(
        kind="onnx",
        info={"calibration": {"method": "temperature", "temperature": 0.5}},
        data_defaults={"dataset": "cifar10", "root": "data/cifar", "val_size": 5000, "split_seed": 42},
    )
    logits = np.zeros((2, 3), dtype=np.float32)
    own = temperature_for(source, DataSpec("cifar10", "data/cifar"), None, logits, "none", 8)
    other = temperature_for(source, DataSpec("folder", "/tmp/pets"), None, logits, "none", 8)
    share = temperature_for(source, DataSpec("cifar10", "data/cifar", val_size=1000), None, logits, "none", 8)
    assert "on these validation images" in own[2], own
    for said in (other, share):
        assert "on these validation images" not in said[2] and "not these images" in said[2], said


def test_a_run_folder_with_only_its_last_checkpoint_points_to_it(tmp_path):
    """A run stopped before its best.pt (or one that lost it) given as a folder was "not a checkpoint, a run folder
    with best.pt, ...": true, but not that its last.pt is there to be given."""
    from training.reports.compare import classify

    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"is a run folder without best.pt: give its .*last.pt"):
        classify(run)
    (run / "last.pt").unlink()
    with pytest.raises(FileNotFoundError, match="is not a checkpoint, a run folder with best.pt"):
        classify(run)


def test_a_val_split_other_than_the_one_the_run_held_out_is_said_to_be_one(tiny_run, tmp_path, caplog):
    """`evaluate --split val --split-seed 7` of a run held out with seed 42 scored images the run trained on, and
    its report compared the figure with the run's own validation accuracy, without a word."""
    own = tmp_path / "own"
    assert main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(own), "--no-sample-figures"]) == 0
    assert "may have been trained on" not in (own / "report.md").read_text() + caplog.text
    other = tmp_path / "other"
    argv = ["evaluate", "--checkpoint", str(tiny_run), "--out", str(other), "--split-seed", "7", "--no-sample-figures"]
    assert main(argv) == 0
    assert "is not the set of validation images the run held out" in caplog.text
    assert (
        "some of them may have been trained on, so the figures may be optimistic" in (other / "report.md").read_text()
    )


def test_a_models_recorded_data_that_is_gone_is_refused_with_the_data_option(tmp_path):
    """A run's folder moved since it trained: the refusal names --data, which reads it where it lies now; a
    folder the user named with --data that is missing is refused without it."""
    from types import SimpleNamespace

    from training.data import DatasetError
    from training.reports.samples import resolve_data

    gone = str(tmp_path / "pets")
    source: Any = SimpleNamespace(data_defaults={"dataset": "folder", "root": gone}, image_size=32)
    with pytest.raises(DatasetError) as recorded:
        resolve_data(source, split="all").load()
    assert str(recorded.value).endswith("(the recorded data folder: pass --data ROOT where it lies now)")
    # where the root came from is not part of the split a report records (its JSON, the pairing of two reports)
    assert resolve_data(source, split="all").record() == resolve_data(source, root=gone, split="all").record()
    with pytest.raises(DatasetError) as given:
        resolve_data(source, root=gone, split="all").load()
    assert "does not exist" in str(given.value) and "--data" not in str(given.value)
