"""`score --resume` of a folder some of whose images were replaced since the output was written: their rows were
kept as done (the old picture's label), or, among the rows the resume scores again, blamed on another model.

The runs go through the real run loop and output with an engine of this file's: an image's label is its file's
text ("cat", "dog"; "bad" fails), so a replaced picture is one with another text."""

from __future__ import annotations

import csv
import json
import os
import tempfile
import time
import types
from pathlib import Path
from typing import Iterator

import pytest

from service.score import run as run_module
from service.score.cli import main as score_main
from service.score.engines import choose_engine
from service.score.sinks import Prediction, Row
from service.score.walk import Entry

CLASSES = ["cat", "dog"]


class _ByContent:
    batch_size = 4
    k = 2
    name = "fake"
    classes = CLASSES
    confidence = 0.9

    def rows(self, chunks: Iterator[list[Entry]]) -> Iterator[list[Row]]:
        for chunk in chunks:
            yield [self._row(entry) for entry in chunk]

    def _row(self, entry: Entry) -> Row:
        label = Path(entry.path).read_text()
        if label not in CLASSES:
            return Row(entry.rel, [], "not a readable image")
        other = CLASSES[1 - CLASSES.index(label)]
        return Row(
            entry.rel,
            [Prediction(label, CLASSES.index(label), self.confidence), Prediction(other, 0, 1 - self.confidence)],
        )

    def close(self) -> None:
        pass


@pytest.fixture
def engine(monkeypatch) -> type[_ByContent]:
    """The engine class every run opens; a test may change its ``confidence`` (as another model would)."""
    backend = type("Engine", (_ByContent,), {})

    def chosen(args):
        choose_engine(args)  # the flags' defaults
        return types.SimpleNamespace(open=lambda args: backend())

    monkeypatch.setattr(run_module, "choose_engine", chosen)
    return backend


SECOND = 10**9  # in nanoseconds


def _folder(root: Path, count: int, bad: tuple[int, ...] = (), ago_s: int = 60) -> Path:
    """``count`` cat pictures (``bad``: unreadable ones among them), in two subfolders, made ``ago_s`` seconds ago
    (a minute; negative: in the future)."""
    made = time.time_ns() - ago_s * SECOND
    for i in range(count):
        path = root / ("a" if i < count // 2 else "b") / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("bad" if i in bad else "cat")
        os.utime(path, ns=(made, made))
    return root


def _replace(image: Path, out: Path, text: str = "dog") -> None:
    """Another picture in ``image``'s place, modified after ``out`` was last written: ``out`` is dated 20 s back,
    ``image`` 10 s (in the past, so that the rows a resume writes now are later)."""
    image.write_text(text)
    written = os.stat(out).st_mtime_ns - 20 * SECOND
    os.utime(out, ns=(written, written))
    os.utime(image, ns=(written + 10 * SECOND, written + 10 * SECOND))


def _labels(out: Path) -> list[tuple[str, str, str]]:
    """(path, top label, error) of each row, in the file's order."""
    if out.suffix == ".csv":
        with open(out, newline="") as f:
            return [(r["path"], r["label_1"], r["error"]) for r in csv.DictReader(f)]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return [(r["path"], r["top_k"][0]["label"] if r["top_k"] else "", r["error"] or "") for r in records]


def _score(folder: Path, out: Path, *extra: str) -> int:
    return score_main([str(folder), "--out", str(out), "--no-progress", *extra])


@pytest.mark.parametrize("name", ["p.csv", "p.jsonl"])
def test_an_image_replaced_since_is_scored_again_in_its_one_row(engine, tmp_path, capsys, name):
    """Two images past the rows the resume checks (the eighth on) replaced by dog pictures: their cat rows stayed,
    and nothing was said."""
    folder = _folder(tmp_path / "photos", 12)
    out = tmp_path / name
    assert _score(folder, out) == 0
    _replace(folder / "b" / "0009.jpg", out)
    _replace(folder / "b" / "0011.jpg", out)
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    rows = _labels(out)
    paths = [path for path, _, _ in rows]
    assert len(paths) == len(set(paths)) == 12, rows
    labels = {path: label for path, label, _ in rows}
    assert labels["b/0009.jpg"] == labels["b/0011.jpg"] == "dog", rows
    assert [label for label in labels.values()].count("cat") == 10, rows
    assert f"scored 2, failed 0, skipped 0 (not images, or hidden), 2 changed since {out} was written, " in err, err
    assert f"scored again, 10 already in {out} (resumed);" in err, err
    # resumed once more, nothing changed since: all kept
    assert _score(folder, out, "--resume") == 0
    assert _labels(out) == rows
    assert "changed since" not in capsys.readouterr().err


def test_an_unchanged_folder_resumes_as_before(engine, tmp_path, capsys):
    """A run stopped after its first rows, resumed: the same file as one run, no file taken for changed."""
    folder = _folder(tmp_path / "photos", 10)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    whole = out.read_text()
    out.write_text("".join(whole.splitlines(keepends=True)[:4]))  # the header and 3 rows
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    assert out.read_text() == whole
    assert f"scored 7, failed 0, skipped 0 (not images, or hidden), 3 already in {out} (resumed);" in err, err
    assert "changed since" not in err, err


def test_a_changed_image_among_the_checked_rows_is_not_blamed_on_the_model(engine, tmp_path, capsys):
    """The first image replaced: the resume's check scored it again, found another label, and refused the file as
    one another --model, --fit or model file wrote."""
    folder = _folder(tmp_path / "photos", 6)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    _replace(folder / "a" / "0000.jpg", out)
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    assert "another --model" not in err and f"1 changed since {out} was written, scored again" in err, err
    rows = _labels(out)
    assert [row for row in rows if row[0] == "a/0000.jpg"] == [("a/0000.jpg", "dog", "")], rows
    assert len(rows) == 6, rows


def test_another_model_is_still_refused_and_the_file_left_as_it_was(engine, tmp_path, capsys):
    """The rows of the files not changed still tell another model: refused, the changed file's row not dropped."""
    folder = _folder(tmp_path / "photos", 6)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    _replace(folder / "a" / "0001.jpg", out)
    kept = out.read_bytes()
    engine.confidence = 0.6
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "it was written with another --model, --fit or model file" in err and "'a/0001.jpg'" not in err, err
    assert out.read_bytes() == kept


def test_a_failed_image_replaced_since_is_retried_and_the_summary_says_what_retries_all(engine, tmp_path, capsys):
    """The resumed summary counted failed rows without saying what scores them again (not --resume)."""
    folder = _folder(tmp_path / "photos", 6, bad=(2,))
    out = tmp_path / "p.jsonl"
    assert _score(folder, out) == 0
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 0
    assert f"6 already in {out} (resumed, 1 of them failed): --overwrite scores all again;" in capsys.readouterr().err
    _replace(folder / "a" / "0002.jpg", out, "cat")  # a good copy in its place
    assert _score(folder, out, "--resume") == 0
    assert f"5 already in {out} (resumed);" in capsys.readouterr().err
    assert sorted(_labels(out)) == [(f"{'a' if i < 3 else 'b'}/{i:04d}.jpg", "cat", "") for i in range(6)]


def test_a_file_that_cannot_be_written_again_is_refused_in_one_line(engine, tmp_path, monkeypatch, capsys):
    """Dropping a changed file's row writes the output again beside it: where that fails, the run says so, the
    output as it was."""
    folder = _folder(tmp_path / "photos", 6)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    _replace(folder / "b" / "0004.jpg", out)
    kept = out.read_bytes()

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: cannot resume {out}: the rows of 1 file changed since it was written (the first: 'b/0004.jpg') "
        "are dropped by writing it again beside itself, which failed: Permission denied; score to a new --out\n"
    )
    assert out.read_bytes() == kept


def test_rows_of_files_deleted_or_replaced_since_are_not_taken_for_another_folders(engine, tmp_path, capsys):
    """No row left to check, its first file deleted and the others replaced: the folder is the one the file was
    written for all the same, not another."""
    folder = _folder(tmp_path / "photos", 4)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    (folder / "a" / "0000.jpg").unlink()
    for name in ("a/0001.jpg", "b/0002.jpg", "b/0003.jpg"):
        _replace(folder / name, out)
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    assert f"3 changed since {out} was written, scored again" in err, err
    assert f"1 of the rows already in {out} names a file no longer under the folder" in err, err
    assert sorted(_labels(out)) == [
        ("a/0000.jpg", "cat", ""),
        ("a/0001.jpg", "dog", ""),
        ("b/0002.jpg", "dog", ""),
        ("b/0003.jpg", "dog", ""),
    ]


def test_a_change_is_still_seen_after_a_resume_refused_past_a_half_written_line(engine, tmp_path, capsys):
    """The first resume (another model's scores) cut the half-written line off, which dated the output now, and was
    refused: the next, with the right model, kept the replaced image's old row."""
    folder = _folder(tmp_path / "photos", 12)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    with open(out, "a") as f:
        f.write("b/0099.jpg,ca")  # a run killed mid-row
    _replace(folder / "b" / "0010.jpg", out)
    engine.confidence = 0.6
    assert _score(folder, out, "--resume") == 2
    assert "another --model, --fit or model file" in capsys.readouterr().err
    engine.confidence = 0.9
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    assert f"1 changed since {out} was written, scored again" in err, err
    labels = {path: label for path, label, _ in _labels(out)}
    assert labels["b/0010.jpg"] == "dog" and len(labels) == 12, labels


def test_images_dated_in_the_future_are_not_taken_for_changed(engine, tmp_path, capsys):
    """Images an hour ahead (a zip of another time zone): a stopped run resumed dropped all its rows and scored
    them again, so that no resume got further than its own run."""
    folder = _folder(tmp_path / "photos", 10, ago_s=-3600)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    whole = out.read_text()
    out.write_text("".join(whole.splitlines(keepends=True)[:5]))  # the header and 4 rows: a run stopped
    capsys.readouterr()
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    assert "changed since" not in err, err
    assert f"scored 6, failed 0, skipped 0 (not images, or hidden), 4 already in {out} (resumed);" in err, err
    assert out.read_text() == whole
