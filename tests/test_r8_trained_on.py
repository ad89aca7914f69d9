"""evaluate's word on images the run trained on, where the run's own data is read from another folder: a copy of
it (the data sent to another machine with the model, or CIFAR-10 kept elsewhere) holds the very images the run
held out, and ``--split all`` of it scores the images it trained on as much as the recorded folder does."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from training.__main__ import main

OPTIMISTIC = "so the figures, read as its accuracy on images it has not seen, are optimistic."


def _notes(tiny_run: Path, out: Path, *args: str) -> list[str]:
    argv = ["evaluate", "--checkpoint", str(tiny_run / "best.pt"), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--no-sample-figures", *args]) == 0
    return json.loads((out / "metrics.json").read_text())["notes"]


def test_split_all_of_a_copy_of_the_runs_data_says_how_many_images_it_trained_on(
    tiny_run, image_folder, tmp_path, caplog
):
    copy = tmp_path / "copied"
    shutil.copytree(image_folder, copy)  # another path, not a link: the same images
    with caplog.at_level(logging.WARNING):
        notes = _notes(tiny_run, tmp_path / "r", "--data", str(copy), "--split", "all")
    said = f"The run trained on 45 of the 60 images scored here (folder {copy}, split all), {OPTIMISTIC}"
    assert [note for note in notes if note.startswith("The run trained on")] == [said], notes
    assert said[:-1].replace("The run", "the run") in caplog.text
