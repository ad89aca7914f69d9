"""The decode cache `python -m export --checkpoint` reads the validation images through: by default the one the
run cached its data in (its data.cache_dir), not a second decode and copy in .cache/datasets; --cache-dir wins."""

from __future__ import annotations

import logging

import pytest

import export.data_cache
import export.pipeline
from export.__main__ import main as export_main
from export.data_cache import DEFAULT_CACHE_DIR, RUNS_CACHE, export_cache_dir

META = {"dataset": "folder", "data_root": "data", "val_size": 8, "split_seed": 42, "input_size": 32}


def _run(cache_dir: object) -> dict:
    """A run's checkpoint as far as the cache goes: its configuration and meta."""
    return {"config": {"data": {"root": "data", "cache_dir": cache_dir}}, "meta": dict(META)}


def test_a_runs_recorded_cache_is_the_default(tmp_path):
    big = tmp_path / "big" / "cache"
    big.mkdir(parents=True)
    assert export_cache_dir(RUNS_CACHE, _run(str(big))) == str(big)


def test_an_ensembles_cache_is_read_from_its_meta(tmp_path):
    """An ensemble's checkpoint has no configuration: it copies a member run's cache into its meta."""
    (tmp_path / "cache").mkdir()
    ensemble = {"meta": {**META, "cache_dir": str(tmp_path / "cache")}}
    assert export_cache_dir(RUNS_CACHE, ensemble) == str(tmp_path / "cache")


@pytest.mark.parametrize("given", ["elsewhere", "", None])
def test_a_given_cache_dir_wins(tmp_path, given):
    (tmp_path / "big").mkdir()
    assert export_cache_dir(given, _run(str(tmp_path / "big"))) == given


@pytest.mark.parametrize(
    "ckpt",
    [
        {"meta": dict(META)},  # a recovered network, an old ensemble
        {"config": {"data": {"root": "data"}}, "meta": dict(META)},  # a run from before it was recorded
        {"config": None, "meta": {**META, "cache_dir": None}},  # an ensemble whose members recorded none
    ],
)
def test_without_a_recorded_cache_the_old_default(ckpt, caplog):
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, ckpt) == DEFAULT_CACHE_DIR
    assert not caplog.records


def test_the_default_recorded_is_not_warned_of_when_not_made_yet(tmp_path, monkeypatch, caplog):
    """Training's own default, from a folder where no run has cached anything yet: the same place, made as needed."""
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, _run(f"./{DEFAULT_CACHE_DIR}")) == DEFAULT_CACHE_DIR
    assert not caplog.records


def test_a_run_that_kept_no_cache_is_exported_without_one():
    assert export_cache_dir(RUNS_CACHE, _run("")) is None


@pytest.mark.parametrize("case", ["gone", "file", "unreadable"])
def test_an_unusable_recorded_cache_falls_back_with_one_warning(tmp_path, monkeypatch, caplog, case):
    recorded = tmp_path / "big" / "cache"
    if case == "file":
        recorded.parent.mkdir()
        recorded.write_text("")
    elif case == "unreadable":  # tests may run as root, whom a folder's mode does not stop
        recorded.mkdir(parents=True)
        monkeypatch.setattr(export.data_cache.os, "access", lambda path, mode: False)
    with caplog.at_level(logging.WARNING, logger="export"):
        assert export_cache_dir(RUNS_CACHE, _run(str(recorded))) == DEFAULT_CACHE_DIR
    [record] = caplog.records
    said = record.getMessage()
    assert "\n" not in said and str(recorded) in said and DEFAULT_CACHE_DIR in said and "--cache-dir" in said
    reason = {"gone": "no longer there", "file": "not a folder", "unreadable": "cannot be read"}[case]
    assert reason in said


class _Read(Exception):
    """Where the export would have read the validation images through; raised there, so nothing else runs."""


@pytest.fixture
def cache_read(monkeypatch, tmp_path):
    """`python -m export` on a run that cached its data in tmp_path/big/cache: the cache it would read through."""
    big = tmp_path / "big" / "cache"
    big.mkdir(parents=True)
    ckpt = _run(str(big))
    monkeypatch.setattr(export.pipeline, "load_checkpoint_and_sha256", lambda path: (ckpt, "0" * 64))

    def data_source(meta, checkpoint, cache_dir, data_root=None):
        raise _Read(cache_dir)

    monkeypatch.setattr(export.pipeline, "_data_source", data_source)

    def read(*flags: str) -> object:
        argv = ["--checkpoint", str(tmp_path / "run" / "best.pt"), "--name", "tiny", *flags]
        with pytest.raises(_Read) as seen:
            export_main(argv)
        return seen.value.args[0]

    return read, str(big)


def test_the_command_line_reads_through_the_runs_cache_unless_told(cache_read, tmp_path):
    read, big = cache_read
    assert read() == big
    assert read("--cache-dir", str(tmp_path / "other")) == str(tmp_path / "other")
    assert read("--cache-dir", "") in ("", None)
