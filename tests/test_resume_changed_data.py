"""A resume on data that changed is told so first, and no refusal of a resume suggests a setting it refuses."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import tiny_overrides
from training.config import ConfigError
from training.config_recipes import build_config
from training.distributed import DistInfo
from training.engine import Trainer, train

# the run's own settings, which a resume keeps: no refusal of one may suggest changing them
KEPT_SETTINGS = (
    "data.val_size=",
    "lower data.val_size",
    "raise data.val_size",
    "set batch_size",
    "set it to at most",
    "set it to 0",
)


@pytest.fixture(scope="module")
def started(image_folder, tmp_path_factory) -> tuple[Path, Path]:
    """A one-epoch run on a copy of the generated folder (60 images), validated on 20 of them; its folder and its
    data's."""
    tmp = tmp_path_factory.mktemp("started")
    data = tmp / "data"
    shutil.copytree(image_folder, data)
    sets = tiny_overrides(data, tmp / "cache", epochs=1, batch_size=8, **{"data.val_size": 20, "lookahead_every": 4})
    train(build_config("resnet9_half_cpu", sets), tmp / "run")
    return tmp / "run", data


def _copy_keeping(data: Path, to: Path, per_class: int, classes: int = 3) -> Path:
    """``data`` with only the first ``per_class`` images of each of its first ``classes`` classes."""
    for folder in sorted(data.iterdir())[:classes]:
        (to / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.png"))[:per_class]:
            shutil.copy(image, to / folder.name / image.name)
    return to


@pytest.mark.parametrize(
    ("classes", "said"),
    [
        (3, "(6 images now, too few for its validation split of 20)"),
        (1, "(classes ['alpha', 'beta', 'gamma'] -> ['alpha']; 2 images now, too few for its validation split of 20)"),
    ],
)
def test_a_resume_on_images_too_few_for_its_split_is_told_the_data_changed(started, tmp_path, capsys, classes, said):
    """Most images gone since the run started: the resume was refused with advice to lower data.val_size and
    batch_size, which a resume refuses in turn, and never heard that the data had changed."""
    from training.__main__ import main as training_main

    run, data = started
    fewer = _copy_keeping(data, tmp_path / "fewer", per_class=2, classes=classes)
    last = (run / "last.pt").read_bytes()
    assert training_main(["resume", str(run), "--epochs", "2", "--set", f"data.root={fewer}"]) == 2
    err = capsys.readouterr().err
    assert f"error: {run} was trained on other data than {fewer} holds now {said}: it cannot be continued" in err, err
    assert not any(setting in err for setting in KEPT_SETTINGS) and "Traceback" not in err, err
    assert (run / "last.pt").read_bytes() == last


def test_a_resume_on_fewer_images_that_still_split_is_told_the_data_changed_alone(started, tmp_path, capsys, caplog):
    """Images gone, the split still made but larger than what it leaves to train on: the changed data was said
    after a warning to lower data.val_size, which a resume refuses."""
    from training.__main__ import main as training_main

    run, data = started
    fewer = _copy_keeping(data, tmp_path / "fewer", per_class=8)  # 24 images: 4 left to train on
    assert training_main(["resume", str(run), "--epochs", "2", "--set", f"data.root={fewer}"]) == 2
    said = capsys.readouterr().err + caplog.text
    assert f"{run} was trained on other data than {fewer} holds now (" in said, said
    assert not any(setting in said for setting in KEPT_SETTINGS), said


@pytest.mark.parametrize(
    ("processes", "said"),
    [
        (
            8,
            "batch_size 8 exceeds the 5 training images per process on 8 processes: resume it on at most 5 processes "
            "with --epochs 4 or more, or on at most 2 processes",
        ),
        (
            4,
            "train.lookahead_every 4 is more than the 2 optimizer steps of its 2 epochs on 4 processes: the run would "
            "end on its initial weights; resume it with --epochs 4 or more, or on at most 2 processes",
        ),
    ],
)
def test_a_resume_on_more_processes_too_many_for_its_settings_says_to_use_fewer(started, monkeypatch, processes, said):
    """The same data on more processes: fewer images each, so no whole batch, or fewer steps than the lookahead
    period. The refusal said to change batch_size or lookahead_every, which a resume keeps."""
    from training.resume import resume

    run, _ = started
    monkeypatch.setattr("training.trainer_setup.distributed.setup", lambda device_type: DistInfo(0, processes, 0))
    with pytest.raises(ConfigError) as refused:
        resume(run, epochs=2)
    assert str(refused.value) == said


def test_a_pruning_run_resumed_on_several_processes_is_told_to_resume_in_one(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("training.trainer_setup.distributed.setup", lambda device_type: DistInfo(0, 2, 0))
    config = build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path, epochs=4, prune_ratio=0.5))
    with pytest.raises(ConfigError, match="^train.prune_ratio works in one process only: resume it in one process$"):
        Trainer(config, tmp_path / "run", resuming=True, started_on={})
    with pytest.raises(ConfigError, match="set it to 0 to train on several$"):  # a new run may change it
        Trainer(config, tmp_path / "run")


@pytest.mark.parametrize("processes", [11, 10, 2])
def test_the_processes_or_epochs_a_resume_is_told_to_take_pass_both_checks(processes):
    """1,000 images, batches of 100, a lookahead every 25 steps, 3 epochs: it fits in one process only. Told 'at most
    10 processes' for the batch, the next start was refused for the lookahead."""
    from training.run_length import check_resumed_run_length

    config = build_config(
        "resnet9_half_cpu", ["batch_size=100", "lookahead_every=25", "epochs=3", "ema_decay=0", "warmup_epochs=0"]
    )
    with pytest.raises(ConfigError) as refused:
        check_resumed_run_length(config, 1000, processes)
    said = str(refused.value)
    told = re.search(
        r"resume it (?:on at most (\d+) process(?:es)? )?with --epochs (\d+) or more, or on at most 1 process$", said
    )
    assert told is not None, said
    check_resumed_run_length(config, 1000, 1)  # the process count it names
    longer = ["batch_size=100", "lookahead_every=25", f"epochs={told[2]}", "ema_decay=0", "warmup_epochs=0"]
    # the epochs it names, on the processes it names with them
    check_resumed_run_length(build_config("resnet9_half_cpu", longer), 1000, int(told[1] or processes))


def test_a_resume_does_not_repeat_the_split_warning_whose_advice_it_refuses(caplog):
    """A class too small for a share of the validation split is said when the run starts, with 'raise
    data.val_size'; every resume said it again, with advice a resume refuses."""
    import numpy as np

    from training.data import ImageArrays
    from training.run_data import split_data

    labels = np.array([0] * 20 + [1] * 20 + [2] * 2)
    full = ImageArrays(np.zeros((len(labels), 8, 8, 3), np.uint8), labels, ["a", "b", "c"])
    config = build_config("resnet9_half_cpu", ["data.val_size=2"])
    with caplog.at_level("WARNING", logger="training"):
        split_data(config, full, 1)
    assert "no validation image for class 'c'" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="training"):
        split_data(config, full, 1, started_on={"classes": ["a", "b", "c"]}, run="run")
    assert "no validation image" not in caplog.text
