"""A count of things in a message is in the singular for one: "1 image", not "1 images"."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from export.calibration import calibration_summary, fit_calibration
from export.parity import Parity, judge
from export.pipeline import unfinished_run
from inference.errors import UsageError
from inference.messages import counted
from inference.runtime import softmax
from service.score.accuracy import FolderAccuracy
from service.score.sinks import Prediction, Row
from training.checkpoint import LAST_FILE
from training.config import ConfigError
from training.config_recipes import build_config
from training.data import DatasetError
from training.data.folder import read_image_folder
from training.data.split import SplitTooLarge, stratified_split
from training.ensemble import join_checkpoints
from training.lookahead import LookaheadError, check_lookahead
from training.run_length import check_resumed_run_length, check_run_length


@pytest.mark.parametrize(
    "count,noun,said",
    [
        (0, "image", "0 images"),
        (1, "image", "1 image"),
        (2, "image", "2 images"),
        (1234, "image", "1,234 images"),
        (1, "optimizer step", "1 optimizer step"),
        (1, "class", "1 class"),
        (3, "class", "3 classes"),
        (2, "epoch", "2 epochs"),
        (np.int64(1), "image", "1 image"),
    ],
)
def test_counted_says_one_in_the_singular_and_thousands_apart(count, noun, said):
    assert counted(count, noun) == said


def test_counted_takes_another_plural_and_no_separator():
    assert counted(2, "batch", "batches") == "2 batches"
    assert counted(2, "entry", "entries") == "2 entries"
    assert counted(1, "entry", "entries") == "1 entry"
    assert counted(1234, "image", separator="") == "1234 images"


def test_lookahead_refused_for_a_run_of_one_step_says_one_step():
    with pytest.raises(LookaheadError) as refused:
        check_lookahead(2, 1)
    assert "more than the run's 1 optimizer step: the run would end" in str(refused.value), refused.value


def test_a_parity_on_one_image_says_one_image():
    parity = Parity("fp32", 1, 1.0, 1.0, 1.0, 1.0, 0.0, 10.0, 10.0)
    assert ", 1 image; throughput" in parity.summary(), parity.summary()
    recorded = Parity("fp32", 1, 1.0, 1.0, 1.0, float("nan"), float("nan"), float("nan"), 10.0)
    assert "1 image; no checkpoint here" in recorded.summary(), recorded.summary()


def test_one_broken_image_of_many_is_said_in_the_singular():
    labels = np.zeros(1234, dtype=int)
    logits = np.tile([2.0, 0.0], (1234, 1))
    graph = logits.copy()
    graph[7] = np.nan
    with np.errstate(invalid="ignore"):
        parity = judge("fp32", softmax(logits), softmax(graph), labels, 1.0, 1, 1)
    assert "1 of 1,234 images gives NaN or infinite outputs (first: image 7)" in parity.failures, parity.failures


def test_an_unfinished_run_of_one_epoch_says_one_epoch(tmp_path):
    (tmp_path / LAST_FILE).write_bytes(b"")
    (tmp_path / "history.json").write_text(json.dumps([]))
    said = unfinished_run(tmp_path, {"config": {"train": {"epochs": 1}}})
    assert said is not None and "(0 of its 1 epoch trained, " in said, said


def test_pruning_a_one_epoch_run_says_one_epoch():
    with pytest.raises(ConfigError, match="prune_until 0.875 of 1 epoch: no epoch would prune"):
        build_config("resnet9_half_cpu", ["epochs=1", "warmup_epochs=0", "prune_ratio=0.3"])


def test_one_tta_for_two_members_says_one_tta(tmp_path):
    with pytest.raises(UsageError, match="^1 test-time augmentation for 2 members: give one per member"):
        join_checkpoints([tmp_path / "a.pt", tmp_path / "b.pt"], tmp_path / "joined.pt", tta=["flip"])


def test_a_resume_to_one_epoch_of_one_step_under_the_lookahead_period_says_one_step_of_one_epoch():
    config = build_config(
        "resnet9_half_cpu", ["warmup_epochs=0", "ema_decay=0", "batch_size=8", "epochs=1", "lookahead_every=2"]
    )
    with pytest.raises(ConfigError) as refused:
        check_resumed_run_length(config, 8)
    said = "train.lookahead_every 2 is more than the 1 optimizer step of its 1 epoch on 1 process: the run would end"
    assert str(refused.value).startswith(said), refused.value


def test_a_batch_over_one_image_per_process_says_one_training_image():
    config = build_config("resnet9_half_cpu", ["warmup_epochs=0", "batch_size=2", "lookahead_every=0"])
    with pytest.raises(ConfigError, match="^batch_size 2 exceeds the 1 training image per process: set batch_size"):
        check_run_length(config, 3, world_size=3)
    with pytest.raises(ConfigError, match="^batch_size 2 exceeds the 1 training image per process on 3 processes"):
        check_resumed_run_length(config, 3, world_size=3)
    with pytest.raises(ConfigError, match="^the 1 training image leaves none to each of 2 processes: train in one"):
        check_run_length(config, 1, world_size=2)


def test_the_accuracy_of_one_image_with_one_in_no_class_folder_says_one_image():
    accuracy = FolderAccuracy(["cat", "dog"], "photos", "tiny")
    accuracy.add(Row("cat/1.png", [Prediction("cat", 0, 0.9)]))
    accuracy.add(Row("cat/2.png", error="not a readable image"))
    accuracy.add(Row("pets/3.png", [Prediction("dog", 1, 0.8)]))
    said = accuracy.report()
    assert "accuracy against folder names (1 image): top-1 100.00% (1/1); 1 image that could not be" in said, said
    assert "(their 1 image is left out of the accuracy): 'pets' (1)" in said, said


def test_a_validation_split_of_one_image_is_said_in_the_singular_on_the_card_and_in_the_summary(caplog):
    logits = np.array([[3.0, 0.0]])
    calibration = fit_calibration(logits, np.array([0]), "temperature", "the checkpoint")
    assert calibration.fitted_on.startswith("NLL on the validation split (1 image), FP32"), calibration.fitted_on
    assert "its 1 validation image carries no calibration signal" in caplog.text, caplog.text
    metrics = {"ece": 0.1, "nll": 0.1, "brier": 0.1, "mean_confidence": 0.9, "accuracy": 1.0}
    summary = calibration_summary({"samples": 1, "temperature": 0.5, "before": metrics, "after": metrics})
    assert summary.startswith("calibration on 1 validation image (ECE with 15 bins):"), summary


def test_a_split_of_a_one_image_dataset_says_one_image():
    with pytest.raises(SplitTooLarge, match="must be smaller than the dataset's 1 image: give a smaller one, or 0"):
        stratified_split(np.array([0]), 1)


def test_a_folder_of_one_unreadable_image_says_one_of_one_image(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r": 1 of 1 image cannot be used \(remove or fix them\): cat/broken.png"):
        read_image_folder(tmp_path)


def test_a_default_measured_on_one_validation_image_says_one_image(tiny_run, tmp_path, caplog):
    """``--max-val-images 1 --default`` warned of figures 'measured on 1 validation images only'."""
    from export.pipeline import export_checkpoint

    with caplog.at_level("WARNING"):
        export_checkpoint(
            tiny_run / "best.pt",
            "one",
            "fp32",
            tmp_path / "models",
            make_default=True,
            cache_dir=None,
            calibrate="none",
            max_val_images=1,
        )
    assert "figures measured on 1 validation image only" in caplog.text, caplog.text


def test_the_doctor_on_one_model_and_one_labelled_image_says_each_in_the_singular(tiny_run, tmp_path):
    """The report said "1 model(s)", "1 labelled image(s)", "1 image(s) could not be read" and "sub-folder(s)"
    for one of each."""
    from export.pipeline import export_checkpoint
    from service.doctor import diagnose
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "one", "fp32", models, cache_dir=None, calibrate="none", max_val_images=8)
    folder = tmp_path / "labelled"
    (folder / "alpha").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 40, 40)).save(folder / "alpha" / "0.png")
    (folder / "alpha" / "cut.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (folder / "delta").mkdir()
    Image.new("RGB", (32, 32), (40, 40, 200)).save(folder / "delta" / "0.png")
    steps: list[str] = []
    settings = ServiceSettings(models_dir=models, device="cpu")
    report = diagnose(
        "cpu", models, str(folder), 100, speed=False, gpus=GpuReport([], None), settings=settings, say=steps.append
    )
    assert f"checking the sha256 of 1 model file in {models}" in steps, steps
    said = {(f.topic, f.status): f.text for f in report.findings}
    assert said["manifest", "ok"] == f"{models}: 1 model, every file matches its sha256", said
    assert said["folder", "info"].startswith(f"{folder}: 1 labelled image, at 32x32"), said
    warned = [f.text for f in report.findings if f.topic == "folder" and f.status == "warn"]
    assert any(text.startswith("1 image could not be read, left out of the accuracy") for text in warned), warned
    assert any(text.startswith("sub-folder named after no class of one, not read: 'delta'") for text in warned), warned


def test_a_folder_with_one_of_each_thing_left_out_says_each_in_the_singular(tmp_path, caplog):
    """One image beside the class folders, one file that is no image, one hidden folder and one empty folder were
    each said as "(s)"."""
    root = tmp_path / "pets"
    for name in ("cat/0.png", "dog/0.png", "beside.png", ".thumbnails/0.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name) * 9, 0, 0)).save(root / name)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "fish").mkdir()
    with caplog.at_level("WARNING"):
        assert read_image_folder(root).classes == ["cat", "dog"]
    said = caplog.text
    assert "1 image beside the class folders left out, in no class: beside.png" in said, said
    assert "1 file left out, not images by their extension: .txt (1)" in said, said
    assert "hidden folder left out, not classes (a name starting with a dot): .thumbnails" in said, said
    assert "folder without images left out, not classes: fish" in said, said


def test_an_archive_with_one_image_beside_its_class_folders_says_one_image(tmp_path, caplog):
    root = tmp_path / "pets"
    for name in ("cat/0.png", "dog/0.png", "beside.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (len(name) * 9, 0, 0)).save(root / name)
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="pets")
    with caplog.at_level("WARNING"):
        assert len(read_image_folder(archive)) == 2
    assert "1 image beside the class folders left out, in no class: beside.png" in caplog.text, caplog.text


def test_a_folder_of_one_loose_image_or_one_dangling_link_says_one(tmp_path):
    (tmp_path / "loose").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "loose" / "0.png")
    with pytest.raises(DatasetError, match=r"holds no class folders, only 1 image directly in it: an image's class"):
        read_image_folder(tmp_path / "loose")
    (tmp_path / "linked" / "dog").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "linked" / "dog" / "0.png")
    (tmp_path / "linked" / "dog" / "1.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(DatasetError, match=r": 1 image link points to nothing \(remove or fix them\): dog/1.png"):
        read_image_folder(tmp_path / "linked")
