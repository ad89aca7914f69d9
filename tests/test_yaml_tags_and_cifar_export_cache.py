"""A tag that YAML's own constructor fails on other than with ValueError or KeyError (!!timestamp on text that is
no date, !!map or !!set on text or a list) is refused in one line too; and a CIFAR run's export, which decodes
nothing into a cache, is not warned of a recorded cache it never wrote."""

from __future__ import annotations

import logging

import pytest
import yaml

from export.data_cache import RUNS_CACHE, export_cache_dir
from training.__main__ import main as training_main
from training.config_yaml import read_yaml


@pytest.mark.parametrize(
    "value, said",
    [
        ("!!timestamp abc", "'abc' is no timestamp"),
        ("!!map ab", "takes a mapping {...}, not a "),
        ("!!set ab", "takes a mapping {...}, not a "),
        ("!!map [x, y]", "takes a mapping {...}, not a "),
    ],
)
def test_a_tag_its_value_cannot_take_is_refused_in_one_line(value, said, tmp_path, capsys):
    with pytest.raises(yaml.YAMLError, match=said):
        read_yaml(f"a: {value}")
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", f"seed={value}"]
    assert training_main([*argv, f"data.root={tmp_path / 'no-images'}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and said in err, err


def test_a_timestamp_tagged_explicitly_is_still_read():
    assert str(read_yaml("a: !!timestamp 2001-12-14")["a"]) == "2001-12-14"


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_a_cifar_runs_recorded_cache_is_not_warned_of(tmp_path, caplog, dataset):
    """CIFAR's batches are read as they are, never into data.cache_dir: a cache_dir set for the run (a recipe shared
    with folder runs) was never made, and 'no longer there: decoding the images into .cache/datasets' is false."""
    ckpt = {"config": {"data": {"cache_dir": str(tmp_path / "big" / "cache")}}, "meta": {"dataset": dataset}}
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, ckpt) is None
    assert not caplog.records
    ensemble = {"meta": {"dataset": dataset, "cache_dir": str(tmp_path / "gone")}}
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, ensemble) is None
    assert not caplog.records
