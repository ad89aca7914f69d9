"""A class folder that names no class is left out, as before, and the line that lists it names the class it most
likely meant (a plural, a letter off), never scoring or training its images as that class: the scorer's summary,
the doctor's left-out line and `training evaluate`'s refusal of classes the model does not predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.classes import ClassMatcher
from service.score.accuracy import FolderAccuracy
from service.score.sinks import Prediction, Row
from training.data import ImageArrays
from training.reports.samples import DataSpec, match_classes
from training.reports.sources import ModelSource

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.mark.parametrize(
    ("folder", "meant"),
    [("Cats", "cat"), ("dogs", "dog"), ("Horses", "horse"), ("trucks", "truck")],
)
def test_a_plural_folder_suggests_its_singular_class(folder, meant):
    assert ClassMatcher(CIFAR10).suggestion(folder) == meant


def test_plural_endings_es_and_ies_are_dropped_too():
    matcher = ClassMatcher(["box", "cherry", "bus"])
    assert matcher.suggestion("boxes") == "box"
    assert matcher.suggestion("Cherries") == "cherry"
    assert matcher.suggestion("buses") == "bus"


@pytest.mark.parametrize(("folder", "meant"), [("aeroplane", "airplane"), ("automobil", "automobile")])
def test_a_folder_a_letter_off_suggests_the_one_close_class(folder, meant):
    assert ClassMatcher(CIFAR10).suggestion(folder) == meant


def test_no_suggestion_where_two_classes_are_as_near():
    assert ClassMatcher(["automobile", "automobiles"]).suggestion("automobil") is None
    assert ClassMatcher(["box", "boxe"]).suggestion("boxes") is None  # boxes -> box (es) and boxe (s)


@pytest.mark.parametrize(
    ("classes", "folder"),
    [
        (["n01440764", "n01443537"], "n01440765"),  # ImageNet's WordNet ids
        (["class_1", "dog"], "class_7"),
        (["cam01", "dog"], "cam02"),
        (["cat", "dog"], "cat2"),
        # the plural of another of the series: class_7s was "did you mean class_1?"
        (["class_1", "dog"], "class_7s"),
        (["n01440764", "n01443537"], "n01440765s"),
    ],
)
def test_no_suggestion_between_names_that_differ_only_in_digits(classes, folder):
    assert ClassMatcher(classes).suggestion(folder) is None
    assert ClassMatcher(classes).meant(folder) == ""


def test_a_letter_typo_in_a_numbered_name_is_still_suggested():
    matcher = ClassMatcher(["camera01", "dog"])
    assert matcher.suggestion("camra01") == "camera01"
    assert matcher.suggestion("Camera01s") == "camera01"


def test_names_under_four_letters_are_not_guessed_at():
    assert ClassMatcher(CIFAR10).suggestion("at") is None  # within difflib's 0.8 of "cat"
    assert ClassMatcher(["a", "bee"]).suggestion("as") is None  # not the plural of "a"
    assert ClassMatcher(CIFAR10).suggestion("Cats") == "cat"


def test_no_suggestion_for_a_folder_near_no_class():
    matcher = ClassMatcher(CIFAR10)
    assert matcher.suggestion("car") is None  # not "cat": too short a name for a letter off to be a typo
    assert matcher.suggestion("misc") is None


def test_a_folder_that_names_a_class_gets_no_suggestion_and_its_match_is_unchanged():
    matcher = ClassMatcher(["cat", "cats", "dog"])
    for folder, label in (("cat", "cat"), ("cats", "cats"), ("Cat", "cat"), ("DOG", "dog")):
        assert matcher.label(folder) == label
        assert matcher.suggestion(folder) is None
    # said, never matched: a plural folder still names no class
    assert ClassMatcher(CIFAR10).index("Cats") is None


def test_the_scorer_names_the_class_a_left_out_folder_likely_meant():
    accuracy = FolderAccuracy(CIFAR10, "photos", "tiny")
    accuracy.add(Row("cat/1.png", [Prediction("cat", 3, 0.9)]))
    accuracy.add(Row("Cats/2.png", [Prediction("cat", 3, 0.9)]))
    accuracy.add(Row("Cats/3.png", [Prediction("cat", 3, 0.9)]))
    accuracy.add(Row("misc/4.png", [Prediction("dog", 5, 0.8)]))
    said = accuracy.report()
    assert "accuracy against folder names (1 image): top-1 100.00% (1/1)" in said, said
    assert (
        "folder names that are not classes of model 'tiny' (their 3 images are left out of the accuracy): "
        "'Cats' (2; did you mean cat?), 'misc' (1)\n"
    ) in said, said


def test_evaluate_refusing_a_plural_class_folder_names_the_class_it_meant():
    model = ["alpha", "beta", "gamma"]
    source = ModelSource("checkpoint", Path("run/best.pt"), model, "resnet9", 32)
    data = ImageArrays(np.zeros((3, 32, 32, 3), np.uint8), np.array([0, 1, 2]), ["alpha", "Betas", "zzz"])
    with pytest.raises(Exception, match="does not predict") as refusal:
        match_classes(source, data, DataSpec("folder", "/data/mine"))
    message = str(refusal.value)
    assert "does not predict: Betas (did you mean beta?), zzz (its classes: alpha, beta, gamma)" in message, message


def test_the_doctor_names_the_class_a_left_out_folder_meant(tiny_run, tmp_path):
    from export.pipeline import export_checkpoint
    from service.doctor import diagnose
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    models = tmp_path / "models"
    export_checkpoint(tiny_run / "best.pt", "one", "fp32", models, cache_dir=None, calibrate="none", max_val_images=8)
    folder = tmp_path / "labelled"
    for name in ("alpha", "Gammas", "misc"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (200, 40, 40)).save(folder / name / "0.png")
    settings = ServiceSettings(models_dir=models, device="cpu")
    report = diagnose(
        "cpu", models, str(folder), 100, speed=False, gpus=GpuReport([], None), settings=settings, say=lambda _: None
    )
    warned = [f.text for f in report.findings if f.topic == "folder" and f.status == "warn"]
    assert any(
        text.startswith("sub-folders named after no class of one, not read: 'Gammas' (did you mean gamma?), 'misc' ")
        for text in warned
    ), warned


def test_a_folder_that_two_classes_are_but_for_case_matches_neither_and_says_why():
    """Was: ``CAR/`` matched the first of ``Car`` and ``car`` silently, and its images were scored as ``Car``."""
    matcher = ClassMatcher(["Car", "dog", "car"])
    assert matcher.index("CAR") is None
    assert matcher.label("Car") == "Car" and matcher.label("car") == "car"  # an exact name is still its class
    assert matcher.label("DOG") == "dog"  # and a name one class is once folded still that one
    assert matcher.suggestion("CAR") == "Car or car"
    assert matcher.meant("CAR") == " (it is Car or car but for case: name the folder exactly)"
    assert matcher.meant("Car") == ""
    # a plural or a typo of such a pair is no one class either
    assert matcher.suggestion("Cars") is None


def test_classes_alike_but_for_unicode_form_say_so():
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    matcher = ClassMatcher([composed, decomposed])
    assert matcher.index("CAF\u00c9") is None
    assert matcher.meant("CAF\u00c9") == (
        f" (it is {composed} or {decomposed} but for case or Unicode form: name the folder exactly)"
    )
