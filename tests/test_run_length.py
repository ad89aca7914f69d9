"""A run's settings against the number of images it trains on (training/run_length.py)."""

from __future__ import annotations

import pytest

from training.config import Config, ConfigError
from training.config_recipes import build_config
from training.run_length import check_run_length


def _config(**train: object) -> Config:
    return build_config("resnet9_half_cpu", ["warmup_epochs=0", *(f"{key}={value}" for key, value in train.items())])


def test_a_batch_larger_than_the_training_images_is_refused_with_the_largest_that_fits():
    config = _config(batch_size=64, lookahead_every=0)
    check_run_length(config, 64)
    said = "^batch_size 64 exceeds the 63 training images: set batch_size to at most 63$"
    with pytest.raises(ConfigError, match=said):
        check_run_length(config, 63)
    # each process takes its share: 100 images on two processes leave 50 to each
    with pytest.raises(ConfigError, match="exceeds the 50 training images per process: set batch_size to at most 50"):
        check_run_length(config, 100, world_size=2)
    with pytest.raises(ConfigError, match="the 3 training images leave none to each of 4 processes"):
        check_run_length(config, 3, world_size=4)


def test_a_lookahead_period_is_measured_in_the_runs_steps_max_batches_included():
    # 100 images in batches of 10: 10 steps an epoch (99: 9), or 2 with max_batches_per_epoch 2; 3 epochs
    config = _config(batch_size=10, epochs=3, ema_decay=0, lookahead_every=30)
    check_run_length(config, 100)
    with pytest.raises(ConfigError, match="lookahead_every 30 is more than the run's 27 optimizer steps"):
        check_run_length(config, 99)
    capped = _config(batch_size=10, epochs=3, ema_decay=0, lookahead_every=7, max_batches_per_epoch=2)
    with pytest.raises(ConfigError, match="lookahead_every 7 is more than the run's 6 optimizer steps"):
        check_run_length(capped, 100)


def test_fewer_training_images_than_processes_are_refused_with_a_number_of_processes_that_fits():
    """The refusal said "train on fewer", naming neither what (processes) nor how many; each process must take a
    whole batch."""
    with pytest.raises(
        ConfigError, match="^the 3 training images leave none to each of 4 processes: train on at most 3 processes$"
    ):
        check_run_length(_config(batch_size=1, lookahead_every=0), 3, world_size=4)
    with pytest.raises(ConfigError, match="leave none to each of 4 processes: train in one process$"):
        check_run_length(_config(batch_size=2, lookahead_every=0), 3, world_size=4)
    with pytest.raises(
        ConfigError, match="leave none to each of 4 processes: train in one process with batch_size at most 3$"
    ):
        check_run_length(_config(batch_size=64, lookahead_every=0), 3, world_size=4)
