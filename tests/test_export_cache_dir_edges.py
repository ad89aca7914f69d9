"""The run's recorded decode cache at export, where it is relative or cannot be written: read as training, evaluate
and resume read it, not skipped for a second decode and copy in .cache/datasets."""

from __future__ import annotations

import logging
import os

import pytest

import export.data_cache
from export.data_cache import DEFAULT_CACHE_DIR, RUNS_CACHE, export_cache_dir


def _run(cache_dir: str) -> dict:
    return {"config": {"data": {"root": "data", "cache_dir": cache_dir}}, "meta": {"dataset": "folder"}}


def test_a_read_only_recorded_cache_is_read_through(tmp_path, monkeypatch, caplog):
    """It holds the run's decode (a shared cache, a disk mounted read-only): the reader reads it, and says so where
    it must decode again; falling back decoded every image again into .cache/datasets."""
    recorded = tmp_path / "big" / "cache"
    recorded.mkdir(parents=True)
    # tests may run as root, whom a folder's mode does not stop
    monkeypatch.setattr(export.data_cache.os, "access", lambda path, mode: not mode & os.W_OK)
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, _run(str(recorded))) == str(recorded)
    assert not caplog.records


@pytest.mark.parametrize("recorded", ["cache", "data/cache"])
def test_a_relative_recorded_cache_not_made_here_yet_is_made_here(tmp_path, monkeypatch, caplog, recorded):
    """Like the default, it stands under the folder the command runs in (where training, evaluate and resume make
    and read it): not 'no longer there', nor a second copy of the decode in .cache/datasets."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, _run(recorded)) == recorded
    assert not caplog.records


def test_a_relative_recorded_cache_there_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    assert export_cache_dir(RUNS_CACHE, _run("cache")) == "cache"


def test_a_relative_link_to_a_folder_that_is_gone_still_falls_back(tmp_path, monkeypatch, caplog):
    """A link to another disk that is not mounted now: not made again through it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").symlink_to(tmp_path / "unmounted" / "cache")
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, _run("cache")) == DEFAULT_CACHE_DIR
    [record] = caplog.records
    assert "no longer there" in record.getMessage()
