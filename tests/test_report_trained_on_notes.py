"""evaluate's word on images the run trained on. An exported model whose checkpoint is gone (deleted, or the graph
copied to another machine) read the run's held-out fingerprint from the checkpoint only, though its card records it:
another validation split was scored as the held-out one unsaid. And ``--split all`` or ``train`` of the run's own
data scored images it trained on, its figures read as the model's accuracy, unsaid."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from conftest import make_arrays
from training.__main__ import main

NOT_HELD_OUT = "is not the set of validation images the run held out"
OPTIMISTIC = "so the figures, read as its accuracy on images it has not seen, are optimistic."


def _evaluate(model: list[str], out: Path, *args: str) -> dict[str, Any]:
    argv = ["evaluate", *model, "--out", str(out), "--device", "cpu", "--no-sample-figures", *args]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _trained_on(metrics: dict[str, Any]) -> list[str]:
    return [note for note in metrics["notes"] if note.startswith("The run trained on")]


@pytest.fixture(scope="module")
def orphan_onnx(tiny_run, tmp_path_factory) -> Path:
    """The tiny run exported, its checkpoint then removed: the graph's card is all that is left of the run."""
    from export.pipeline import export_checkpoint

    tmp = tmp_path_factory.mktemp("orphan")
    (tmp / "run").mkdir()
    shutil.copy(tiny_run / "best.pt", tmp / "run" / "best.pt")
    export_checkpoint(tmp / "run" / "best.pt", "orphan", "fp32", tmp / "models", cache_dir=None)
    (tmp / "run" / "best.pt").rename(tmp / "run" / "gone.pt")
    return tmp / "models" / "orphan.onnx"


def test_an_export_without_its_checkpoint_still_knows_the_runs_held_out_images(orphan_onnx, tmp_path, caplog):
    model = ["--onnx", str(orphan_onnx)]
    with caplog.at_level(logging.WARNING):
        other = _evaluate(model, tmp_path / "seed7", "--split-seed", "7")
    said = [note for note in other["notes"] if NOT_HELD_OUT in note]
    assert len(said) == 1 and "(seed 7, 15 held out)" in said[0], other["notes"]
    assert NOT_HELD_OUT in caplog.text
    assert NOT_HELD_OUT in (tmp_path / "seed7" / "report.md").read_text()
    # its own split, read as the card records it, is the one held out: nothing to warn of
    own = _evaluate(model, tmp_path / "own")
    assert own["source"]["val_fingerprint"] and not any(NOT_HELD_OUT in note for note in own["notes"]), own["notes"]


def test_split_all_of_the_runs_own_data_says_how_many_images_it_trained_on(tiny_run, image_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        metrics = _evaluate(["--checkpoint", str(tiny_run / "best.pt")], tmp_path / "all", "--split", "all")
    said = f"The run trained on 45 of the 60 images scored here (folder {image_folder}, split all), {OPTIMISTIC}"
    assert _trained_on(metrics) == [said], metrics["notes"]
    assert said[:-1].replace("The run", "the run") in caplog.text
    assert said in (tmp_path / "all" / "report.md").read_text()


def test_split_all_of_a_copy_of_the_runs_data_says_how_many_images_it_trained_on(
    tiny_run, image_folder, tmp_path, caplog
):
    """The run's data read from another folder: a copy of it (the data sent to another machine with the model, or
    CIFAR-10 kept elsewhere) holds the very images the run held out, and ``--split all`` of it scores the images it
    trained on as much as the recorded folder does."""
    copy = tmp_path / "copied"
    shutil.copytree(image_folder, copy)  # another path, not a link: the same images
    with caplog.at_level(logging.WARNING):
        metrics = _evaluate(
            ["--checkpoint", str(tiny_run / "best.pt")], tmp_path / "r", "--data", str(copy), "--split", "all"
        )
    said = f"The run trained on 45 of the 60 images scored here (folder {copy}, split all), {OPTIMISTIC}"
    assert _trained_on(metrics) == [said], metrics["notes"]
    assert said[:-1].replace("The run", "the run") in caplog.text


def test_split_all_of_an_export_without_its_checkpoint_counts_by_its_cards_split(orphan_onnx, image_folder, tmp_path):
    metrics = _evaluate(["--onnx", str(orphan_onnx)], tmp_path / "all", "--split", "all")
    assert _trained_on(metrics) == [
        f"The run trained on 45 of the 60 images scored here (folder {image_folder}, split all), {OPTIMISTIC}"
    ], metrics["notes"]


def test_split_all_of_another_folder_has_no_such_note(tiny_run, tmp_path, caplog):
    other = tmp_path / "other"
    images, labels = make_arrays(3, 8, seed=7)
    for i, (image, label) in enumerate(zip(images, labels)):
        (other / ["alpha", "beta", "gamma"][label]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(other / ["alpha", "beta", "gamma"][label] / f"{i:03d}.png")
    with caplog.at_level(logging.WARNING):
        metrics = _evaluate(
            ["--checkpoint", str(tiny_run / "best.pt")], tmp_path / "r", "--data", str(other), "--split", "all"
        )
    assert not _trained_on(metrics), metrics["notes"]
    assert "the run trained on" not in caplog.text


def test_split_train_of_the_runs_own_data_says_it_trained_on_them(tiny_run, image_folder, tmp_path):
    checkpoint = ["--checkpoint", str(tiny_run / "best.pt")]
    own = _evaluate(checkpoint, tmp_path / "train", "--split", "train")
    assert _trained_on(own) == [
        f"The run trained on all 45 images scored here (folder {image_folder}, split train: its own training "
        f"split), {OPTIMISTIC}"
    ], own["notes"]
    seed7 = _evaluate(checkpoint, tmp_path / "seed7", "--split", "train", "--split-seed", "7")
    assert _trained_on(seed7) == [
        f"The run trained on at least 30 of the 45 images scored here (folder {image_folder}, split train, 15 held "
        f"out with seed 7, where it held out 15 with seed 42), {OPTIMISTIC}"
    ], seed7["notes"]


def test_split_all_of_the_runs_data_changed_since_gives_no_count_of_a_split_not_the_runs(
    tiny_run, image_folder, tmp_path
):
    grown = tmp_path / "grown"
    shutil.copytree(image_folder, grown)
    images, labels = make_arrays(3, 10, seed=7)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(grown / ["alpha", "beta", "gamma"][label] / f"new{i:03d}.png")
    ckpt = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    ckpt["meta"]["data_root"] = str(grown)  # the run's own folder, 30 images added since it trained
    (tmp_path / "run").mkdir()
    torch.save(ckpt, tmp_path / "run" / "best.pt")
    metrics = _evaluate(["--checkpoint", str(tmp_path / "run" / "best.pt")], tmp_path / "r", "--split", "all")
    assert _trained_on(metrics) == [
        f"The run trained on some of the 90 images scored here (folder {grown}, split all), {OPTIMISTIC}"
    ], metrics["notes"]
