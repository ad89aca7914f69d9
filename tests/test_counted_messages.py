"""A count of things in a message is in the singular for one: "1 image", not "1 images"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.calibration import calibration_summary, fit_calibration
from export.parity import Parity, judge
from export.pipeline import unfinished_run
from inference.errors import UsageError
from inference.messages import counted
from inference.runtime import softmax
from service.score.accuracy import FolderAccuracy
from service.score.sinks import Prediction, Row
from training.checkpoint import LAST_FILE
from training.config import ConfigError, build_config
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
