"""`evaluate --data OTHER` fits a checkpoint's temperature on the run's own validation split, never on the
"validation split" of the folder given: a folder holding the run's images and more fitted T on a share of it,
a third of which the run had trained on, and a folder smaller than the run's held-out size got no calibration
section though the run's own split was there. Where the run's data cannot be read, the report says so and has no
calibration section."""

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


def _evaluate(checkpoint: Path, out: Path, *args: str) -> dict[str, Any]:
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", *args]) == 0
    return json.loads((out / "metrics.json").read_text())


def _own_temperature(tiny_run: Path, tmp_path: Path) -> float:
    """T fitted on the run's own validation split: evaluate of its own data, today's behaviour kept."""
    own = _evaluate(tiny_run / "best.pt", tmp_path / "own")["calibration"]
    assert "these validation images, so the after row is in-sample" in own["temperature_origin"], own
    return float(own["temperature"])


def _bigger(image_folder: Path, to: Path) -> Path:
    """The run's own image folder plus 30 new images of its classes (as the user's petsbig was)."""
    shutil.copytree(image_folder, to)
    images, labels = make_arrays(3, 10, seed=7)
    for i, (image, label) in enumerate(zip(images, labels)):
        Image.fromarray(image).save(to / ["alpha", "beta", "gamma"][label] / f"new{i:03d}.png")
    return to


def _elsewhere(tiny_run: Path, to: Path, data_root: Path) -> Path:
    """A copy of the run's checkpoint recording its data at ``data_root`` (moved, or gone)."""
    ckpt = torch.load(tiny_run / "best.pt", map_location="cpu", weights_only=True)
    ckpt["meta"]["data_root"] = str(data_root)
    to.mkdir()
    torch.save(ckpt, to / "best.pt")
    return to / "best.pt"


def test_a_folder_of_the_runs_images_and_more_is_calibrated_with_the_runs_own_temperature(
    tiny_run, image_folder, tmp_path
):
    t_own = _own_temperature(tiny_run, tmp_path)
    big = _bigger(image_folder, tmp_path / "big")
    every = _evaluate(tiny_run / "best.pt", tmp_path / "all", "--data", str(big), "--split", "all")["calibration"]
    assert every["temperature"] == pytest.approx(t_own, rel=1e-5), every["temperature_origin"]
    assert every["temperature_origin"].startswith(
        "fitted here on the run's validation split (15 images, which are among the images scored here: "
        "in-sample for those)"
    ), every["temperature_origin"]
    # --split val of the bigger folder is its own share, not the run's held-out images: T is still the run's
    val = _evaluate(tiny_run / "best.pt", tmp_path / "val", "--data", str(big))["calibration"]
    assert val["temperature"] == pytest.approx(t_own, rel=1e-5), val["temperature_origin"]
    assert "these validation images" not in val["temperature_origin"], val["temperature_origin"]
    assert val["temperature_origin"].startswith("fitted here on the run's validation split (15 images")


def test_a_folder_smaller_than_the_held_out_size_still_gets_the_runs_temperature(tiny_run, image_folder, tmp_path):
    t_own = _own_temperature(tiny_run, tmp_path)
    small = tmp_path / "small"
    for name in ("alpha", "beta"):
        (small / name).mkdir(parents=True)
        for f in sorted((image_folder / name).iterdir())[:5]:
            shutil.copy(f, small / name / f.name)
    metrics = _evaluate(tiny_run / "best.pt", tmp_path / "r", "--data", str(small), "--split", "all")
    assert "calibration" in metrics, metrics["notes"]
    assert metrics["calibration"]["temperature"] == pytest.approx(t_own, rel=1e-5)
    assert not any("No calibration section" in note for note in metrics["notes"]), metrics["notes"]


def test_a_run_whose_data_is_gone_gets_no_temperature_fitted_on_another_folder(
    tiny_run, image_folder, tmp_path, caplog
):
    gone = tmp_path / "gone"
    checkpoint = _elsewhere(tiny_run, tmp_path / "run", gone)
    big = _bigger(image_folder, tmp_path / "big")
    with caplog.at_level(logging.WARNING):
        metrics = _evaluate(checkpoint, tmp_path / "r", "--data", str(big), "--split", "all")
    assert "calibration" not in metrics
    said = [note for note in metrics["notes"] if note.startswith("No calibration section")]
    assert len(said) == 1 and f"the run's own validation split (folder {gone}, 15 held out" in said[0], said
    assert "cannot be read now" in said[0] and "does not exist" in said[0], said
    assert "No calibration section: the run's own validation split" in (tmp_path / "r" / "report.md").read_text()
    warned = [r.getMessage() for r in caplog.records if "no calibration section" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0], warned


def test_the_runs_data_moved_to_the_folder_given_is_still_its_own_split(tiny_run, image_folder, tmp_path):
    """--data naming where the run's data is now (README): the very images it held out, by their fingerprint."""
    t_own = _own_temperature(tiny_run, tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(image_folder, moved)
    checkpoint = _elsewhere(tiny_run, tmp_path / "run", tmp_path / "was-here")
    val = _evaluate(checkpoint, tmp_path / "val", "--data", str(moved))["calibration"]
    assert val["temperature"] == pytest.approx(t_own, rel=1e-5)
    assert "these validation images, so the after row is in-sample" in val["temperature_origin"]
    every = _evaluate(checkpoint, tmp_path / "all", "--data", str(moved), "--split", "all")["calibration"]
    assert every["temperature"] == pytest.approx(t_own, rel=1e-5)
    assert f"the run's validation split (15 images, read from {moved}, which are among" in every["temperature_origin"]
