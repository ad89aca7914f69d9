"""Whether a dataset decodes into the cache and whether it has a test split are fields of its registry entry, and
loading, the ablation and export read them there rather than each keeping its own list of names."""

from __future__ import annotations

import dataclasses

import pytest

from export.data_cache import DEFAULT_CACHE_DIR, RUNS_CACHE, export_cache_dir
from inference.errors import UsageError
from training.config import Config
from training.data import DATASETS, DatasetError, load_split
from training.reports.ablate import _data_spec


@pytest.mark.parametrize(
    "name, cached, has_test",
    [("cifar10", False, True), ("cifar100", False, True), ("folder", True, False)],
)
def test_each_registered_dataset_states_its_cache_and_test_split(name, cached, has_test):
    kind = DATASETS.get(name)
    assert (kind.cached, kind.has_test) == (cached, has_test)


def test_every_registered_dataset_states_both():
    for name in DATASETS.names():
        kind = DATASETS.get(name)
        assert isinstance(kind.cached, bool) and isinstance(kind.has_test, bool), name


def _restated(monkeypatch, name: str, **fields) -> None:
    monkeypatch.setitem(DATASETS._entries, name, dataclasses.replace(DATASETS.get(name), **fields))


def test_export_reads_whether_the_run_decoded_into_a_cache_from_the_registry(monkeypatch):
    ckpt = {"meta": {"dataset": "cifar10"}}
    assert export_cache_dir(RUNS_CACHE, ckpt) is None
    _restated(monkeypatch, "cifar10", cached=True)
    assert export_cache_dir(RUNS_CACHE, ckpt) == DEFAULT_CACHE_DIR


def test_a_test_split_is_refused_where_the_registry_says_there_is_none(monkeypatch, tmp_path):
    _restated(monkeypatch, "cifar10", has_test=False)
    with pytest.raises(DatasetError, match="a cifar10 dataset has no separate test split"):
        load_split("cifar10", tmp_path, "test")


def test_the_ablation_reads_the_test_split_from_the_registry(monkeypatch):
    config = Config()
    assert config.data.dataset == "folder"
    with pytest.raises(UsageError, match="no separate test split"):
        _data_spec(config, "test")
    _restated(monkeypatch, "folder", has_test=True)
    assert _data_spec(config, "test").split == "test"
