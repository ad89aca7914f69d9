"""What `python -m service score` writes, and where it refuses to write: the output file against the folder it
scores, empty flag values, and the rows of each format."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from service.score import engines
from service.score.cli import main as score_main
from service.score.walk import walk


def _score(*args) -> int:
    return score_main([str(a) for a in args])


@pytest.fixture
def no_engine_opens(monkeypatch):
    """The refusals below come before any model is loaded."""

    def opened(*args, **kwargs):
        raise AssertionError("an engine was opened before the refusal")

    monkeypatch.setattr(engines, "chosen_model", opened)
    monkeypatch.setattr(engines, "RemoteBackend", opened)


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "0.png").write_bytes(b"")  # the walk goes by the name
    (root / "sub" / "1.png").write_bytes(b"")
    return root


@pytest.mark.parametrize("where", ["sub/preds.png", "new/preds.png", "preds.gif"])
def test_an_output_named_as_an_image_under_the_folder_is_refused_before_it_exists(
    where, photos, no_engine_opens, capsys
):
    """A new --out named as an image inside DIR (a CSV given --format) was created, then reached by the walk, which
    lists a folder only when it gets there, and scored: the run's own rows as an unreadable image."""
    out = photos / where
    out.parent.mkdir(exist_ok=True)
    assert _score(photos, "--out", out, "--format", "csv", "--no-progress") == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {out} would be one of the images under {photos}: write the rows elsewhere\n"
    assert not out.exists()


def test_an_output_under_the_folder_not_named_as_an_image_is_written(photos, no_engine_opens, capsys):
    """The walk skips a name without an image extension: such an output beside the images is not refused (the
    refusal that follows is the stubbed engine's)."""
    with pytest.raises(AssertionError, match="an engine was opened"):
        _score(photos, "--out", photos / "sub" / "preds.csv", "--no-progress")
    assert "one of the images" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--out", ""], "--out"),
        (["--out", " ", "--format", "csv"], "--out"),
        (["--models-dir", ""], "--models-dir"),
        (["--url", ""], "--url"),
        (["--url", "", "--engine", "remote"], "--url"),
        (["--address", "", "--engine", "ray"], "--address"),
    ],
)
def test_an_empty_flag_value_is_refused_not_taken_for_another(flags, named, photos, no_engine_opens, capsys):
    """An unset variable (--models-dir "$MODELS") scored with the current folder's manifest; an empty --url chose
    the local engine, which then said "--url is not for --engine local"; an empty --out was "cannot write : ..."."""
    assert _score(photos, *flags, "--no-progress") == 2
    assert capsys.readouterr().err == f"error: {named} is empty: give a value, or leave the flag out for its default\n"


def test_an_empty_folder_argument_is_refused_by_name(no_engine_opens, capsys):
    """An empty DIR said "error:  does not exist"."""
    assert _score("", "--no-progress") == 2
    assert capsys.readouterr().err == "error: DIR is empty: name the folder to score\n"


def test_a_closed_standard_output_is_a_usage_error_not_a_traceback(photos, no_engine_opens, monkeypatch, capsys):
    """`score DIR >&-`: Python starts without standard output (sys.stdout is None), and opening it for the rows was
    an AttributeError traceback, after the model had loaded."""
    monkeypatch.setattr("sys.stdout", None)
    assert _score(photos, "--no-progress") == 2
    assert capsys.readouterr().err == "error: standard output is closed: give --out FILE\n"


def test_a_link_to_a_device_or_fifo_is_no_regular_file_not_a_broken_link(tmp_path):
    """The walk took every link that is neither a folder nor a regular file for a broken one: a link to /dev/zero
    or to a FIFO was written "broken symlink (target ... does not exist ...)", of a target that exists."""
    root = tmp_path / "photos"
    root.mkdir()
    os.mkfifo(tmp_path / "fifo")
    os.symlink(tmp_path / "fifo", root / "fifo.png")
    os.symlink(os.devnull, root / "null.png")
    os.symlink(tmp_path / "missing.png", root / "gone.png")
    errors = {entry.rel: entry.error for entry in walk(root)}
    assert errors == {
        "fifo.png": "not a regular file",
        "gone.png": f"broken symlink (target {str(tmp_path / 'missing.png')!r} does not exist or cannot be reached)",
        "null.png": "not a regular file",
    }


def test_a_closed_standard_error_costs_no_rows(image_folder, tiny_models_dir, tmp_path, monkeypatch):
    """`score DIR 2>&-` (Python starts with sys.stderr None): the progress bar raised AttributeError on it after
    the header was written, so the run ended with no rows and nowhere to say why; on standard output, the summary
    would have been printed into the rows."""
    monkeypatch.setattr("sys.stderr", None)
    args = [image_folder, "--models-dir", tiny_models_dir, "--workers", "0"]
    assert _score(*args, "--out", tmp_path / "p.csv") == 0
    images = sorted(p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*.png"))
    with open(tmp_path / "p.csv", newline="") as f:
        assert [row["path"] for row in csv.DictReader(f)] == images
