"""The default dataset cache folder is one constant (training.dataset_cache): training's data.cache_dir, the
evaluation's samples and every export entry point that reads a run's data default to it."""

from __future__ import annotations

import dataclasses
import inspect

import export.data_cache
from export.recover import recover_checkpoint
from export.rederive import rederive
from export.verify import verify_model
from training.config import DataConfig
from training.dataset_cache import DEFAULT_CACHE_DIR
from training.reports.samples import DataSpec, resolve_data


def test_every_default_cache_folder_is_the_one_constant():
    assert DEFAULT_CACHE_DIR == ".cache/datasets"  # where docs/own-dataset.md says the decoded images are kept
    assert DataConfig().cache_dir == DEFAULT_CACHE_DIR
    assert export.data_cache.DEFAULT_CACHE_DIR == DEFAULT_CACHE_DIR  # export's --cache-dir default
    for export_step in (verify_model, recover_checkpoint, rederive):
        assert inspect.signature(export_step).parameters["cache_dir"].default == DEFAULT_CACHE_DIR, export_step
    spec_default = {field.name: field.default for field in dataclasses.fields(DataSpec)}["cache_dir"]
    assert spec_default == DEFAULT_CACHE_DIR
    assert resolve_data(None, dataset="folder", root="data").cache_dir == DEFAULT_CACHE_DIR
