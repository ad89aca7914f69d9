"""The command lines under real-world text conditions: output piped into `head`, a closed standard error, an
output encoding that cannot hold a class name (PYTHONIOENCODING=ascii, the C locale uncoerced), and names with
bytes that are not UTF-8 (a run folder so named)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "wrn-16-4-cifar10-int8"


def _run(args: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
        **kwargs,
    )


def _one_model(folder: Path, classes: dict[int, str]) -> Path:
    """``folder`` (made) listing one shipped model alone, its card's classes renamed as ``classes`` says."""
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    entry = next(m for m in manifest["models"] if m["name"] == SHIPPED)
    for index, name in classes.items():
        entry["classes"][index] = name
    manifest.update(models=[entry], default=SHIPPED, defaults={"cpu": SHIPPED, "cuda": SHIPPED})
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / entry["file"]).symlink_to(ROOT / "models" / entry["file"])
    return folder


@pytest.fixture
def cjk_models(tmp_path) -> Path:
    """A models folder listing a shipped model whose card names two classes in French and Chinese."""
    return _one_model(tmp_path / "modèles", {3: "chat-été", 5: "狗"})


def _reader_gone(args: list[str]) -> subprocess.CompletedProcess:
    """``args`` run with standard output a pipe whose reader has gone before the first line: every write fails,
    however small the output (`| head -1` is a race with the pipe's buffer)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return _run(args, stdout=write, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write)


@pytest.mark.parametrize("args", [["export", "list"], ["training", "recipes"]], ids=["export", "training"])
def test_a_command_whose_reader_has_gone_ends_quietly_with_the_sigpipe_status(args):
    """`python -m export list | head -1`: once the reader has closed the pipe the command ends as the scorer
    does, 128 + SIGPIPE and nothing on standard error; it said "error: Broken pipe" and exited 2, as if the
    user had given something wrong."""
    done = _reader_gone(args)
    assert (done.returncode, done.stderr) == (141, "")


def test_the_doctor_whose_reader_has_gone_ends_as_the_other_commands(tmp_path):
    """`python -m service doctor | head -1` ended with a BrokenPipeError traceback and status 1."""
    models = _one_model(tmp_path / "models", {})
    done = _reader_gone(["service", "doctor", "--no-speed", "--max-images", "1", "--models-dir", str(models)])
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr


def test_a_class_name_the_output_encoding_cannot_hold_is_escaped_not_a_traceback(cjk_models):
    """PYTHONIOENCODING=ascii (or a C locale Python does not coerce to UTF-8): the card printed its classes
    with a UnicodeEncodeError traceback; they are written as Python writes them to standard error."""
    done = _run(
        ["export", "card", SHIPPED, "--models-dir", str(cjk_models)],
        env={"PYTHONIOENCODING": "ascii"},
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert b"chat-\\xe9t\\xe9" in done.stdout and b"\\u72d7" in done.stdout


def test_undecodable_bytes_of_a_name_go_out_as_those_bytes_and_other_characters_as_escapes(monkeypatch):
    """A run folder whose name is not UTF-8 printed under a UTF-8 locale ("strict") raised UnicodeEncodeError;
    its bytes are written back as they were, so that the name copied from the output still names the folder."""
    from inference.messages import configure_streams

    raw = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(raw, encoding="ascii", errors="strict"))
    configure_streams()
    print(os.fsdecode(b"runs/\xe7\x8b\x97\xff"), "chat-été")
    sys.stdout.flush()
    assert raw.getvalue() == b"runs/\\u72d7\xff chat-\\xe9t\\xe9\n"


def test_a_closed_standard_error_keeps_the_error_out_of_standard_output(tmp_path):
    """`2>&-`: print(file=sys.stderr) with no standard error writes to standard output, where a caller reads
    results; the message went there."""
    done = _run(
        ["export", "list", "--models-dir", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(2),
    )
    assert done.returncode == 2 and done.stdout == ""


def test_a_run_folder_named_with_undecodable_bytes_draws_its_curves(tmp_path, monkeypatch):
    """The curves' title names the run folder: matplotlib's font code takes no surrogate escape, and training
    into such a folder stopped with a TypeError traceback when its first epoch's curves were drawn. The byte
    is drawn as U+FFFD."""
    import matplotlib.pyplot as plt

    from training import plots

    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_top1": 0.4, "lr": 0.1}]
    name = os.fsdecode(b"run-\xff")
    closed = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (closed.append(fig), close(fig)))
    plots.plot_training_curves(history, tmp_path / "curves.png", None, f"resnet9 · run {name}")
    plots.plot_compared_curves({f"A {name}": history, "B other": history}, tmp_path / "compared.png")
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "compared.png").stat().st_size > 0
    legend = [text.get_text() for text in closed[1].axes[0].get_legend().get_texts()]
    assert closed[0]._suptitle.get_text() == "resnet9 · run run-\ufffd" and legend[0] == "A run-\ufffd"


def test_a_cjk_run_name_is_one_warning_per_figure_not_one_per_character_and_epoch(tmp_path, caplog):
    """A CJK run name in the curves' title was matplotlib's UserWarning per character (two lines each, naming its
    own code); it is one line of the log, and once for the run's curves, which are redrawn every epoch."""
    import logging

    from training import plots

    history = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.5, "val_top1": 0.4, "lr": 0.1}]
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        for epoch in range(3):
            plots.plot_training_curves(history[: epoch + 1], tmp_path / "curves.png", None, "resnet9 · run 狗猫")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    said = [r for r in caplog.records if "no glyphs" in r.getMessage()]
    assert len(said) == 1 and said[0].getMessage().startswith("curves.png: ")


def test_training_with_standard_error_closed_trains(image_folder, tmp_path):
    """Started with standard error closed (`2>&-`, a job runner that keeps no log): the progress bar had
    nowhere to write, and the run ended at its first bar with status 1 and no word, its traceback lost too."""
    from conftest import tiny_overrides

    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    done = _run(
        ["training", "train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *overrides],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.close(2),
    )
    assert done.returncode == 0 and (tmp_path / "run" / "best.pt").is_file()
    assert json.loads(done.stdout)["epochs_run"] == 1  # the summary alone: no message strayed into it


def test_a_scoring_run_into_a_file_with_standard_output_closed_scores(image_folder, tiny_models_dir, tmp_path):
    """`score DIR --out f.csv >&-` (a cron job's closed output): the scorer flushed standard output before forking
    its decode workers, an AttributeError on None, exit 1 with no rows."""
    out = tmp_path / "p.csv"
    args = ["service", "score", str(image_folder), "--models-dir", str(tiny_models_dir), "--out", str(out)]
    done = _run([*args, "--workers", "1"], stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.close(1))
    assert done.returncode == 0, done.stderr
    assert len(out.read_text().splitlines()) == 1 + len(list(image_folder.rglob("*.png")))


def test_a_report_naming_a_folder_that_is_no_utf8_text_is_written(tmp_path):
    """evaluate of a run folder named with undecodable bytes drew its figures, then raised UnicodeEncodeError
    writing report.md, whose heading names the checkpoint's path."""
    from inference.files import write_text_atomic

    name = os.fsdecode(b"run-\xff")
    write_text_atomic(tmp_path / "report.md", f"# Evaluation of `{name}/best.pt`\n")
    assert (tmp_path / "report.md").read_bytes() == b"# Evaluation of `run-\xff/best.pt`\n"
