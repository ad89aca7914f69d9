"""A batch too large for a small dataset, under a recipe that computes it in micro-batches (airbench94_muon: batch
2000 in micro-batches of 250): each refusal names values that the next start takes, micro_batch_size included.

A user following "set batch_size to at most 156" met "micro_batch_size 250 does not divide train.batch_size 156:
pick a divisor", and micro_batch_size=0 was refused as below 1: only micro_batch_size=null, said nowhere, worked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.__main__ import main as training_main
from training.config import ConfigError
from training.config_recipes import build_config
from training.run_length import check_run_length

RECIPE = "airbench94_muon"


def _write_folder(root: Path, per_class: int) -> None:
    """Two classes of small random images: the folder dataset of a first try on one's own data."""
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")


def _refusal(tmp_path: Path, capsys, *settings: str) -> str:
    data = tmp_path / "photos"
    argv = ["train", "--recipe", RECIPE, "--out", str(tmp_path / "run"), "--set", "data.dataset=folder"]
    argv += [f"data.root={data}", f"data.cache_dir={tmp_path / 'cache'}", "data.val_size=24", "epochs=2", *settings]
    assert training_main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def test_a_small_folder_is_told_batch_and_micro_batch_sizes_that_the_next_start_takes(tmp_path, capsys):
    _write_folder(tmp_path / "photos", per_class=90)  # 180 images, 24 held out: 156 to train on
    said = _refusal(tmp_path, capsys)
    assert said == (
        "error: batch_size 2000 exceeds the 156 training images: set batch_size to at most 156 and "
        "micro_batch_size=null (one forward per step), as micro_batch_size 250 exceeds them too"
    ), said
    # the batch_size alone, as the old refusal said: the micro-batch refusal now names the divisors to pick from
    said = _refusal(tmp_path, capsys, "batch_size=156")
    assert said.endswith(
        "train.micro_batch_size 250 does not divide train.batch_size 156: set micro_batch_size to 78 (the divisor "
        "of 156 nearest 250), or micro_batch_size=null for one forward per step"
    ), said
    # each of the values suggested passes both checks
    for micro in ("78", "null"):
        check_run_length(build_config(RECIPE, ["batch_size=156", f"micro_batch_size={micro}"]), 156)


def test_a_batch_too_large_for_the_images_but_not_the_micro_batch_is_told_a_multiple_of_it():
    config = build_config(RECIPE, [])
    with pytest.raises(ConfigError) as refused:
        check_run_length(config, 600)
    assert str(refused.value) == (
        "batch_size 2000 exceeds the 600 training images: set batch_size to 500 (micro_batch_size 250 divides it), "
        "or to at most 600 with micro_batch_size=null (one forward per step)"
    )
    check_run_length(build_config(RECIPE, ["batch_size=500"]), 600)
    check_run_length(build_config(RECIPE, ["batch_size=600", "micro_batch_size=null"]), 600)


def test_too_few_images_for_the_processes_says_the_micro_batch_too():
    with pytest.raises(ConfigError) as refused:
        check_run_length(build_config(RECIPE, []), 3, world_size=4)
    assert str(refused.value) == (
        "the 3 training images leave none to each of 4 processes: train in one process; set batch_size to at most 3 "
        "and micro_batch_size=null (one forward per step), as micro_batch_size 250 exceeds them too"
    )


@pytest.mark.parametrize(
    "batch_size, said",
    [
        (600, "set micro_batch_size to 200 or 300 (the divisors of 600 nearest 250), or micro_batch_size=null"),
        (400, "set micro_batch_size to 200 (the divisor of 400 nearest 250), or micro_batch_size=null"),
        # neither 1 (BatchNorm of one image) nor the batch itself (null says that): only null is left
        (157, "does not divide train.batch_size 157: set micro_batch_size=null for one forward per step"),
    ],
)
def test_a_micro_batch_that_does_not_divide_the_batch_is_told_the_divisors_nearest_it(batch_size, said):
    with pytest.raises(ConfigError) as refused:
        build_config(RECIPE, [f"batch_size={batch_size}"])
    assert said in str(refused.value), refused.value
    for micro in ("200", "300", "null") if batch_size == 600 else ("null",):
        build_config(RECIPE, [f"batch_size={batch_size}", f"micro_batch_size={micro}"])
