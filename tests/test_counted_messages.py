"""A count of things in a message is in the singular for one: "1 image", not "1 images"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from export.parity import Parity, judge
from export.pipeline import unfinished_run
from inference.errors import UsageError
from inference.messages import counted
from inference.runtime import softmax
from training.checkpoint import LAST_FILE
from training.config import ConfigError, build_config
from training.ensemble import join_checkpoints
from training.lookahead import LookaheadError, check_lookahead


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
