"""A folder with two class folders for one class of the model (``Cat/`` beside ``cat/``) is refused naming that pair
and the class, not every folder it holds as a Python list."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inference.errors import UsageError
from training.__main__ import main
from training.data import ImageArrays
from training.reports.samples import DataSpec, match_classes
from training.reports.sources import ModelSource

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _refusal(model: list[str], folders: list[str]) -> str:
    source = ModelSource("checkpoint", Path("run/best.pt"), model, "resnet9", 32)
    labels = np.arange(len(folders))
    data = ImageArrays(np.zeros((len(folders), 32, 32, 3), np.uint8), labels, folders)
    with pytest.raises(UsageError) as refusal:
        match_classes(source, data, DataSpec("folder", "cs"))
    return str(refusal.value)


def test_two_folders_for_one_class_are_named_with_that_class():
    """Was: ``folder cs has two class folders for one class of the model: ['Automobile', 'Cat', 'DOG', 'cat']``."""
    message = _refusal(CIFAR10, ["Automobile", "Cat", "DOG", "cat"])
    assert message == ("folder cs has two class folders for the model's class cat: Cat and cat; rename or merge one"), (
        message
    )
    assert "Automobile" not in message and "DOG" not in message and "[" not in message, message


def test_three_folders_for_one_class_and_clashes_for_several_classes_are_each_named():
    three = _refusal(CIFAR10, ["CAT", "Cat", "bird", "cat"])
    assert "3 class folders for the model's class cat: CAT, Cat and cat; rename or merge all but one" in three
    assert "bird" not in three and "[" not in three, three
    several = _refusal(CIFAR10, ["Cat", "DOG", "Frog", "cat", "dog"])
    assert "the model's classes cat (Cat and cat), dog (DOG and dog); rename or merge all but one of each" in several
    assert "Frog" not in several and "[" not in several, several


def test_a_folder_that_two_model_classes_are_but_for_case_is_refused_as_neither():
    """Was: ``CAR/`` was evaluated as ``Car``, the first of the model's ``Car`` and ``car``, with no word."""
    message = _refusal(["Car", "car", "dog"], ["CAR", "dog"])
    assert "does not predict: CAR (it is Car or car but for case: name the folder exactly) (its classes" in message, (
        message
    )
    source = ModelSource("checkpoint", Path("run/best.pt"), ["Car", "car", "dog"], "resnet9", 32)
    data = ImageArrays(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ["car", "DOG"])
    mapped, _ = match_classes(source, data, DataSpec("folder", "cs"))
    assert mapped.labels.tolist() == [1, 2]  # an exact name is still its class, a name one class folds to that one


def test_the_note_of_an_assumed_label_order_does_not_cut_a_short_list():
    source = ModelSource("checkpoint", Path("run/best.pt"), ["a", "b"], "resnet9", 32)
    data = ImageArrays(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ["x", "y"])
    _, note = match_classes(source, data, DataSpec("folder", "cs"))
    assert note == "no class name of the data is one of the model's (x, y): label order assumed equal", note


def test_evaluate_on_a_folder_with_two_folders_for_one_class_says_which(tiny_run, image_folder, tmp_path, capsys):
    data = tmp_path / "cs"
    shutil.copytree(image_folder / "alpha", data / "alpha")
    shutil.copytree(image_folder / "beta", data / "Beta")
    shutil.copytree(image_folder / "beta", data / "beta")
    argv = ["evaluate", "--checkpoint", str(tiny_run / "best.pt"), "--data", str(data), "--split", "all"]
    assert main([*argv, "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert "two class folders for the model's class beta: Beta and beta; rename or merge one" in err, err
    assert "alpha" not in err.split(" has ", 1)[1], err
