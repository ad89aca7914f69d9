"""The problems a run's settings have with its data, said together in one refusal before training: fixed one at a
time, each start waited for the data to load again only to meet the next (training/run_data.py, run_length.py,
preflight.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_overrides
from training.config_recipes import build_config
from training.data import DatasetError
from training.lookahead import LookaheadError
from training.preflight import check_run_lengths
from training.run_data import load_data
from training.run_length import SettingsRefused, check_run_length


def _folder(root: Path, classes: list[str], per_class: int = 10) -> Path:
    from PIL import Image

    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (8, 8), (25 * c, 10 * i, 100)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def pets(tmp_path_factory) -> Path:
    """3 classes x 10 tiny PNGs: 30 images."""
    return _folder(tmp_path_factory.mktemp("pets"), ["cat", "dog", "fox"])


def test_train_says_every_problem_with_the_data_under_one_heading_and_their_values_work_together(
    pets, tmp_path, capsys
):
    from training.__main__ import main as training_main

    bad = {"data.val_size": 5000, "batch_size": 512, "epochs": 10, "ema_decay": 0, "lookahead_every": 20}
    sets = tiny_overrides(pets, tmp_path / "cache", **bad)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--set", *sets, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    lines = err[err.index("error:") :].strip().splitlines()  # after the decoding bar
    assert lines[0] == "error: 3 problems found before training; fix them all, then start again:", err
    assert len(lines) == 4 and all(line.startswith("  - ") for line in lines[1:]), err
    assert "data.val_size 5000" in lines[1] and "--set data.val_size=3" in lines[1], err
    # measured on the 27 images the suggested val_size leaves, and the one step an epoch of the suggested batch
    assert "batch_size 512 exceeds the 27 training images data.val_size 3 would leave" in lines[2], err
    assert lines[2].endswith("set batch_size to at most 27"), err
    assert "train.lookahead_every 20 is more than the run's 10 optimizer steps" in lines[3], err
    assert "set it to at most 10" in lines[3] and "Traceback" not in err, err
    fixed = {**bad, "data.val_size": 3, "batch_size": 27, "lookahead_every": 10}
    config = build_config("resnet9_half_cpu", tiny_overrides(pets, tmp_path / "cache", **fixed))
    train, val = load_data(config)
    assert val is not None and (len(train), len(val)) == (27, 3)
    check_run_length(config, len(train))


def test_one_class_and_a_batch_too_large_are_said_together(tmp_path):
    one = _folder(tmp_path / "one", ["cat"])
    config = build_config("resnet9_half_cpu", tiny_overrides(one, tmp_path / "cache", **{"data.val_size": 2}))
    with pytest.raises(SettingsRefused) as refused:
        load_data(config)
    said = [str(problem) for problem in refused.value.problems]
    assert len(said) == 2 and "holds 1 class (cat)" in said[0], said
    assert said[1] == "batch_size 16 exceeds the 8 training images: set batch_size to at most 8", said


def test_a_split_that_empties_a_class_and_a_batch_too_large_are_said_together(tmp_path):
    # 3 of 4 images to validation: no class can spare its share, and the rare one's is its only image
    uneven = _folder(tmp_path / "uneven", ["cat"], per_class=3)
    _folder(uneven, ["rare"], per_class=1)
    config = build_config("resnet9_half_cpu", tiny_overrides(uneven, tmp_path / "cache", **{"data.val_size": 3}))
    with pytest.raises(SettingsRefused) as refused:
        load_data(config)
    said = [str(problem) for problem in refused.value.problems]
    assert len(said) == 2 and "takes every image of class rare" in said[0], said
    assert "a val_size of at most 2 leaves every class an image" in said[0], said
    # measured on what the largest val_size allowed leaves, not on the refused split's 1 image
    assert said[1] == (
        "batch_size 16 exceeds the 2 training images data.val_size 2 would leave: set batch_size to at most 2"
    ), said


def test_a_run_length_says_its_batch_and_its_lookahead_together_and_one_problem_as_it_is():
    sets = ["warmup_epochs=0", "batch_size=64", "epochs=3", "ema_decay=0", "lookahead_every=5"]
    config = build_config("resnet9_half_cpu", sets)
    with pytest.raises(SettingsRefused) as refused:
        check_run_length(config, 63)
    said = [str(problem) for problem in refused.value.problems]
    assert said[0] == "batch_size 64 exceeds the 63 training images: set batch_size to at most 63", said
    # measured with the batch_size suggested: one step an epoch
    assert "lookahead_every 5 is more than the run's 3 optimizer steps" in said[1], said
    with pytest.raises(LookaheadError, match="^train.lookahead_every 5 is more than the run's 3 optimizer steps"):
        check_run_length(config, 64)


def test_several_runs_problems_are_said_together_each_named(pets, tmp_path):
    """An ablation's (or an ensemble's) variants: the second's problem was said only once the first was fixed."""
    sets = tiny_overrides(pets, tmp_path / "cache", **{"data.val_size": 3})
    configs = [build_config("resnet9_half_cpu", [*sets, f"batch_size={size}"]) for size in (64, 8, 32)]
    with pytest.raises(SettingsRefused) as refused:
        check_run_lengths(configs, ["variant 'batch_size=64'", "variant 'batch_size=8'", "variant 'batch_size=32'"])
    said = [str(problem) for problem in refused.value.problems]
    assert said == [
        "variant 'batch_size=64': batch_size 64 exceeds the 27 training images: set batch_size to at most 27",
        "variant 'batch_size=32': batch_size 32 exceeds the 27 training images: set batch_size to at most 27",
    ]
    gone = tiny_overrides(tmp_path / "none", tmp_path / "cache")
    missing = [build_config("resnet9_half_cpu", [*gone, f"batch_size={size}"]) for size in (8, 64)]
    with pytest.raises(DatasetError, match="^variant 1: .*does not exist") as unread:
        check_run_lengths(missing, ["variant 1", "variant 2"])
    assert "variant 2" not in str(unread.value), "the same unreadable data said once"


def test_variants_that_differ_only_in_their_split_read_the_images_once(pets, tmp_path, monkeypatch):
    """An ablation over data.val_size decoded the same folder once per variant (no cache: a large folder, minutes)."""
    import training.preflight as preflight

    reads = []
    read = preflight.read_data

    def counted(config):
        reads.append(config.data.val_size)
        return read(config)

    monkeypatch.setattr(preflight, "read_data", counted)
    sets = tiny_overrides(pets, tmp_path / "cache")
    configs = [build_config("resnet9_half_cpu", [*sets, f"data.val_size={size}", "batch_size=8"]) for size in (3, 6, 9)]
    check_run_lengths(configs, ["a", "b", "c"])
    assert reads == [3]
    other = build_config("resnet9_half_cpu", [*sets, "data.val_size=3", "batch_size=8", "data.image_size=16"])
    check_run_lengths([configs[0], other], ["a", "d"])
    assert reads == [3, 3, 3], "another image size is another read"
