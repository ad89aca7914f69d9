"""Batch scoring as a user meets it: names a spreadsheet would run, names that would break the summary's lines,
a folder that lost files between a run and its --resume, and an output of the other format resumed."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from service.score.cli import main as score_main
from service.score.pipeline import chunks
from service.score.sinks import ENCODING
from service.score.summary import shown
from service.score.walk import Entry


def _score(*args) -> int:
    return score_main([str(a) for a in args])


def _csv_paths(path: Path) -> list[str]:
    with open(path, newline="", **ENCODING) as f:
        return [row["path"] for row in csv.DictReader(f)]


def _folder(image_folder: Path, root: Path, names: list[str]) -> Path:
    source = (image_folder / "alpha" / "0000.png").read_bytes()
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(source)
    return root


def test_names_a_spreadsheet_would_run_or_a_reader_refuse_are_written_exactly_and_warned_of(
    image_folder, tiny_models_dir, tmp_path, capsys
):
    """A CSV cell beginning with = + - @ (or a tab, a carriage return) is a formula to Excel. The names stay
    exact, so that --resume reads them back and they still name the files; the summary says which and how to
    open the file safely. So for a name that is not UTF-8, which CSV writes as its bytes (a strict UTF-8 reader then
    refuses the whole file). JSON Lines, which no spreadsheet runs and which escapes such bytes, is not warned of."""
    names = ["=cmd|' calc'!A0.png", "+1.png", "-2.png", "@SUM(A1).png", "\t=x.png", "plain.png", "sub/=inner.png"]
    names += ["caf\udce9.png"]
    folder = _folder(image_folder, tmp_path / "photos", names)
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    out = tmp_path / "p.csv"
    assert _score(folder, "--out", out, *common) == 0
    err = capsys.readouterr().err
    assert sorted(_csv_paths(out)) == sorted(names)
    assert "5 file names begin with =, +, -, @, a tab or a carriage return (the first: \\t=x.png)" in err, err
    assert f"a spreadsheet opening {out} may run them as formulas" in err
    assert "1 file name is not UTF-8 (caf\\xe9.png), written as its bytes" in err, err
    # read back as written: nothing scored again
    assert _score(folder, "--out", out, "--resume", *common) == 0
    assert "scored 0, failed 0" in capsys.readouterr().err
    assert _score(folder, "--out", tmp_path / "p.jsonl", *common) == 0
    err = capsys.readouterr().err
    assert "formulas" not in err and "UTF-8" not in err


def test_a_failed_files_name_cannot_break_or_colour_the_summary(image_folder, tiny_models_dir, tmp_path, capsys):
    """A name may hold a newline, a terminal's escape sequence or bytes that are not UTF-8: the summary shows them
    escaped, on its own lines, while the output keeps the names exact."""
    folder = tmp_path / "bad"
    folder.mkdir()
    names = ["new\nline.png", "\x1b[31mred.png", "caf\udce9.png"]
    for name in names:
        (folder / name).write_bytes(b"not an image")
    out = tmp_path / "p.csv"
    assert _score(folder, "--out", out, "--models-dir", tiny_models_dir, "--no-progress") == 0
    err = capsys.readouterr().err
    failed = [line for line in err.splitlines() if line.startswith("failed files")]
    assert len(failed) == 1, err
    assert "\\x1b[31mred.png: " in failed[0] and "caf\\xe9.png: " in failed[0] and "new\\nline.png: " in failed[0]
    assert "\x1b" not in err
    assert sorted(_csv_paths(out)) == sorted(names)


def test_shown_escapes_only_what_a_terminal_would_not_print_as_itself():
    assert shown("café/été.jpg") == "café/été.jpg"
    assert shown("a\tb\r\n\udcff.jpg") == "a\\tb\\r\\n\\xff.jpg"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resume_after_the_first_files_were_moved_away_goes_on(image_folder, tiny_models_dir, tmp_path, capsys, fmt):
    """The rows scored again to check a resumed file are taken among those whose files are still there: a
    subfolder that sorted first, moved away since, is no sign of another folder."""
    names = [f"a/{n}.png" for n in range(10)] + ["b/0.png", "b/1.png"]
    folder = _folder(image_folder, tmp_path / "photos", names)
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    out = tmp_path / f"p.{fmt}"
    assert _score(folder, "--out", out, *common) == 0
    shutil.rmtree(folder / "a")
    _folder(image_folder, folder, ["c/new.png"])
    capsys.readouterr()
    assert _score(folder, "--out", out, "--resume", *common) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "scored 1, failed 0" in err and "12 already in" in err, err
    assert (
        f"10 of the rows already in {out} name files no longer under the folder (deleted or moved since: "
        "a/0.png, a/1.png, a/2.png, ...): they stay in it; --overwrite scores the folder afresh"
    ) in err, err
    lines = out.read_text(**ENCODING).splitlines()
    paths = [json.loads(line)["path"] for line in lines] if fmt == "jsonl" else _csv_paths(out)
    assert paths == names + ["c/new.png"]


def test_resume_of_an_unchanged_folder_says_nothing_of_missing_files(image_folder, tiny_models_dir, tmp_path, capsys):
    folder = _folder(image_folder, tmp_path / "photos", ["x.png", "y.png"])
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    out = tmp_path / "p.csv"
    assert _score(folder, "--out", out, *common) == 0
    assert _score(folder, "--out", out, "--resume", *common) == 0
    assert "no longer under" not in capsys.readouterr().err


def test_chunks_leave_in_done_only_what_the_walk_did_not_pass():
    entries = [Entry(name, name) for name in ("a", "b", "c", "d")]
    done = {"b", "gone", "d"}
    assert [[e.rel for e in chunk] for chunk in chunks(iter(entries), 1, done)] == [["a"], ["c"]]
    assert done == {"gone"}


@pytest.mark.parametrize(("written", "resumed"), [("csv", "jsonl"), ("jsonl", "csv")])
def test_resuming_a_file_of_the_other_format_names_both(
    image_folder, tiny_models_dir, tmp_path, capsys, written, resumed
):
    """The same folder scored into CSV and into JSON Lines: a file of one resumed as the other (renamed, or a name
    without an extension and the other --format) is refused saying which it holds, not with a parser's error."""
    folder = _folder(image_folder, tmp_path / "photos", ["x.png"])
    common = ["--models-dir", tiny_models_dir, "--no-progress"]
    out = tmp_path / "preds"
    assert _score(folder, "--out", out, "--format", written, *common) == 0
    kept = out.read_bytes()
    capsys.readouterr()
    assert _score(folder, "--out", out, "--format", resumed, "--resume", *common) == 2
    err = capsys.readouterr().err
    names = {"csv": "CSV", "jsonl": "JSON Lines"}
    assert (
        f"cannot resume {out}: it holds {names[written]} rows and this run writes {names[resumed]}: resume it "
        f"with --format {written}"
    ) in err, err
    assert out.read_bytes() == kept


def test_accuracy_of_a_class_tree_whose_images_all_failed_says_so(image_folder, tiny_models_dir, tmp_path, capsys):
    """A class-per-folder tree of 0-byte files: the folders are classes, the images are what failed; the report
    must not say the folder names are wrong. Where some failed, the accuracy says they are left out of it."""
    folder = tmp_path / "val"
    for name in ("alpha/0.png", "alpha/1.png", "beta/0.png"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"")
    common = ["--labels-from-folders", "--models-dir", tiny_models_dir, "--no-progress", "--k", "1"]
    assert _score(folder, "--out", tmp_path / "p.csv", *common) == 0
    err = capsys.readouterr().err
    assert "accuracy against folder names: none, as no image could be scored (3 failed)" in err, err
    assert "not in a folder named after a class" not in err and "named after a class" not in err
    shutil.copy(image_folder / "beta" / "0020.png", folder / "beta" / "1.png")
    assert _score(folder, "--out", tmp_path / "q.csv", *common) == 0
    err = capsys.readouterr().err
    assert "accuracy against folder names (1 image): " in err and "; 3 images that could not be scored left out" in err


def test_a_hidden_folders_name_cannot_colour_the_summary_either():
    from service.score.summary import hidden_dirs

    said = hidden_dirs([".hid\x1b[31mx", ".thumbnails"])
    assert "\x1b" not in said and ".hid\\x1b[31mx/" in said and ".thumbnails/" in said, said


def test_threads_no_host_has_are_refused_as_serve_refuses_them(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"not read")
    assert score_main([str(tmp_path), "--out", str(tmp_path / "p.csv"), "--threads", "100000"]) == 2
    assert "error: --threads must be at most 1024, not 100000" in capsys.readouterr().err
