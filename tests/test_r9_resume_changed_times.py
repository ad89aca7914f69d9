"""`score --resume` telling the images changed since the output was written by their times: a resume refused
after it cut a half-written line off moved the output's time past the changes, and images dated in the future
(an archive unpacked in another time zone) were taken for changed on every resume, their rows scored afresh.

An image's label is its file's text ("cat", "dog"), as in test_score_resume_changed.py."""

from __future__ import annotations

import csv
import os
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
SECOND = 10**9  # in nanoseconds


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
        other = CLASSES[1 - CLASSES.index(label)]
        return Row(
            entry.rel,
            [Prediction(label, CLASSES.index(label), self.confidence), Prediction(other, 0, 1 - self.confidence)],
        )

    def close(self) -> None:
        pass


@pytest.fixture
def engine(monkeypatch) -> type[_ByContent]:
    backend = type("Engine", (_ByContent,), {})

    def chosen(args):
        choose_engine(args)
        return types.SimpleNamespace(open=lambda args: backend())

    monkeypatch.setattr(run_module, "choose_engine", chosen)
    return backend


def _folder(root: Path, count: int, offset_s: int) -> Path:
    made = time.time_ns() + offset_s * SECOND
    for i in range(count):
        path = root / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("cat")
        os.utime(path, ns=(made, made))
    return root


def _labels(out: Path) -> dict[str, str]:
    with open(out, newline="") as f:
        return {r["path"]: r["label_1"] for r in csv.DictReader(f)}


def _score(folder: Path, out: Path, *extra: str) -> int:
    return score_main([str(folder), "--out", str(out), "--no-progress", *extra])


def test_a_change_is_still_seen_after_a_resume_refused_past_a_half_written_line(engine, tmp_path, capsys):
    """The first resume (another model's scores) cut the half-written line off, which dated the output now, and was
    refused: the next, with the right model, kept the replaced image's old row."""
    folder = _folder(tmp_path / "photos", 12, -60)
    out = tmp_path / "p.csv"
    assert _score(folder, out) == 0
    with open(out, "a") as f:
        f.write("0099.jpg,ca")  # a run killed mid-row
    image = folder / "0010.jpg"
    image.write_text("dog")
    written = time.time_ns() - 20 * SECOND
    os.utime(out, ns=(written, written))
    os.utime(image, ns=(written + 10 * SECOND, written + 10 * SECOND))
    engine.confidence = 0.6
    assert _score(folder, out, "--resume") == 2
    assert "another --model, --fit or model file" in capsys.readouterr().err
    engine.confidence = 0.9
    assert _score(folder, out, "--resume") == 0
    err = capsys.readouterr().err
    assert f"1 changed since {out} was written, scored again" in err, err
    labels = _labels(out)
    assert labels["0010.jpg"] == "dog" and len(labels) == 12, labels


def test_images_dated_in_the_future_are_not_taken_for_changed(engine, tmp_path, capsys):
    """Images an hour ahead (a zip of another time zone): a stopped run resumed dropped all its rows and scored
    them again, so that no resume got further than its own run."""
    folder = _folder(tmp_path / "photos", 10, 3600)
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
