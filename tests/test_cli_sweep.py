"""Every command line fed the classic mistakes (a path that is not there, a folder for a file and a file for a
folder, an empty or foreign file, a pipe, a number out of range, an unknown or repeated flag, an empty value from
an unset shell variable): status 2, one line (argparse's usage and its error, or ``error: ...``), no traceback,
and nothing started. Each case is refused before any data is read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from export.__main__ import main as export_main
from service.__main__ import main as service_main
from training.__main__ import main as training_main

MAINS = {"training": training_main, "export": export_main, "service": service_main}


@pytest.fixture
def mistakes(tmp_path: Path) -> Path:
    """A folder of the wrong things to give: an empty file, a JPEG, a folder named like a file, a pipe, a file
    behind spaces and non-ASCII letters, a file where a folder is expected."""
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "a file.onnx").write_bytes(b"")
    (tmp_path / "naïve dir").mkdir()
    (tmp_path / "naïve dir" / "x.pt").write_text("not a checkpoint")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes((tmp_path / "photo.jpg").read_bytes())
    os.mkfifo(tmp_path / "fifo")  # opening it to read would block: a refusal must not read it
    (tmp_path / "report").mkdir()  # an evaluate report, whose files are not what compare and ensemble take
    (tmp_path / "report" / "predictions.npz").write_bytes(b"")
    (tmp_path / "report" / "metrics.json").write_text("{}")
    return tmp_path


def _said(main: str, argv: list[str], tmp: Path, capsys) -> tuple[int | str | None, str]:
    argv = [word.replace("{tmp}", str(tmp)) for word in argv]
    status: int | str | None
    try:
        status = MAINS[main](argv)
    except SystemExit as exit_:
        status = exit_.code
    return status, capsys.readouterr().err


def _one_refusal(err: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    if lines and lines[0].startswith("usage:"):  # argparse's usage (wrapped), then its one error line
        assert ": error: " in lines[-1] and not any(": error: " in line for line in lines[:-1]), err
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), err


NO_DATA = ["--set", "data.root={tmp}/no-images"]  # a refusal missed starts reading this instead of CIFAR: fails now

REFUSED = [
    # python -m training
    ("training", ["evaluate", "--checkpoint", "{tmp}/missing.pt"], "no checkpoint at"),
    ("training", ["evaluate", "--checkpoint", "{tmp}/folder.pt"], "no checkpoint at"),
    ("training", ["evaluate", "--checkpoint", "{tmp}/empty.pt"], "is not a training checkpoint"),
    ("training", ["evaluate", "--checkpoint", "{tmp}/photo.jpg"], "is not a training checkpoint"),
    ("training", ["evaluate", "--checkpoint", "{tmp}/naïve dir/x.pt"], "is not a training checkpoint"),
    ("training", ["evaluate", "--checkpoint", "{tmp}/fifo"], "no checkpoint at"),
    ("training", ["evaluate", "--checkpoint", "/dev/null"], "no checkpoint at"),
    ("training", ["evaluate", "--onnx", "{tmp}/a file.onnx"], "is not an ONNX model"),
    ("training", ["evaluate", "--onnx", "{tmp}/fifo"], "no ONNX model at"),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--batch-size", "0"], "0 is not at least 1"),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--batch-size", "nan"], "'nan' is not an integer"),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--batch-size", "1e30"], "'1e30' is not an integer"),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--val-size", "-1"], "-1 is not at least 0"),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--onnx", "x.onnx"], "not allowed with argument"),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--bogus"], "unrecognized arguments: --bogus"),
    ("training", ["compare", "{tmp}/missing.pt", "{tmp}/empty.pt"], "does not exist"),
    ("training", ["compare", "{tmp}/fifo", "{tmp}/empty.pt"], "is not a checkpoint, a run folder"),
    ("training", ["compare", "a.pt", "b.pt", "--alpha", "0"], "is not a significance level"),
    ("training", ["compare", "a.pt", "b.pt", "--alpha", "nan"], "is not a significance level"),
    ("training", ["compare", "a.pt", "b.pt", "--alpha", "inf"], "is not a significance level"),
    ("training", ["ensemble", "{tmp}/empty.pt", "{tmp}/photo.jpg", "--out", "{tmp}/e.pt"], "is not a training"),
    ("training", ["ensemble", "{tmp}/a file.onnx", "{tmp}/empty.pt"], "an ONNX file holds no weights"),
    ("training", ["resume", "{tmp}/missing"], "no checkpoint at"),
    ("training", ["resume", "{tmp}/photo.jpg"], "resume takes a run folder"),
    ("training", ["resume", "{tmp}/fifo"], "no checkpoint at"),
    ("training", ["resume", "{tmp}/missing", "--epochs", "0"], "0 is not at least 1"),
    ("training", ["train", "--recipe", "{tmp}/empty.pt", "--out", "{tmp}/run"], "is empty: it names no model"),
    ("training", ["train", "--recipe", "{tmp}/folder.pt", "--out", "{tmp}/run"], "is a folder"),
    ("training", ["train", "--recipe", "{tmp}/photo.jpg", "--out", "{tmp}/run"], "is not a YAML file"),
    ("training", ["train", "--recipe", "resnet9_half_cpu", "--out", "{tmp}/photo.jpg"], "is not a folder"),
    ("training", ["train", "--recipe", "resnet9_half_cpu", "--out", "/dev/null"], "is not a folder"),
    ("training", ["train", "--recipe", "resnet9_half_cpu", "--out", "{tmp}/run", "--epochs", "3"], "--set epochs=3"),
    ("training", ["train", "--recipe", "resnet9_half_cpu", "--out", "{tmp}/run", "--resume", "--force"], "not allowed"),
    *(
        ("training", ["train", "--recipe", "resnet9_half_cpu", "--out", "{tmp}/run", "--set", setting, *NO_DATA], said)
        for setting, said in [
            ("epochs=0", "greater than or equal to 1"),
            ("epochs=nan", "valid integer"),
            ("epochs=1e30", "exceeded maximum size"),
            ("lr=nan", "finite number"),
            ("lr=inf", "finite number"),
            ("lr=-1", "greater than 0"),
            ("batch_size=2.5", "fractional part"),
            ("=3", "has no key"),
            ("epochs=[1", "is not YAML"),
            ("optim.name=nope", "Input should be 'sgd'"),
            ("sched.name=1", "did you mean schedule?"),
            ("device=gpu", "unknown device 'gpu'"),
        ]
    ),
    ("training", ["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=1", "--set", "epochs=2"], "set twice"),
    ("training", ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "lr", "--out", "{tmp}/ab"], "not KEY=V1,V2"),
    ("training", ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "lr=1,1", "--out", "{tmp}/ab"], "repeats"),
    ("training", ["ablate", "--recipe", "x", "--vary", "lr=1,2", "--target-top1", "nan"], "not a percentage"),
    ("training", ["models", "extra"], "unrecognized arguments: extra"),
    ("training", ["compare", "{tmp}/report/metrics.json", "{tmp}/report"], "is a file of the report in"),
    ("training", ["ensemble", "{tmp}/report", "{tmp}/report/predictions.npz"], "give the report's folder"),
    ("training", ["nope"], "invalid choice: 'nope'"),
    # python -m export
    ("export", ["--checkpoint", "{tmp}/empty.pt", "--name", "x"], "is not a training checkpoint"),
    ("export", ["--checkpoint", "{tmp}/fifo", "--name", "x"], "no checkpoint at"),
    ("export", ["--checkpoint", "{tmp}/empty.pt", "--name", "x y"], "is not a model name"),
    ("export", ["--checkpoint", "{tmp}/empty.pt", "--name", "x.onnx"], "without .onnx"),
    ("export", ["list", "--models-dir", "{tmp}/photo.jpg"], "is a file, not a folder"),
    ("export", ["--checkpoint", "x.pt", "--name", "x", "--max-val-images", "0"], "0 is not at least 1"),
    ("export", ["--checkpoint", "x.pt", "--name", "x", "--precision", "fp8"], "invalid choice: 'fp8'"),
    ("export", ["--checkpoint", "x.pt", "--name", "x", "--default", "--default-for", "cpu"], "not allowed"),
    ("export", ["list", "--models-dir", "{tmp}/missing"], "no model manifest"),
    ("export", ["list", "--models-dir", "/dev/null"], "is a file, not a folder"),
    ("export", ["verify", "a", "b"], "unrecognized arguments: b"),
    ("export", ["--models-dir", "{tmp}", "list"], "put the command first"),
    ("export", ["recover", "x", "--out", "{tmp}/r.pt", "--max-val-images", "-1"], "-1 is not at least 1"),
    ("export", ["lsit"], "unknown command 'lsit'"),
    # python -m service
    ("service", ["score", "{tmp}/missing"], "does not exist"),
    ("service", ["score", "{tmp}/photo.jpg"], "is not a folder"),
    ("service", ["score", "{tmp}/images", "--out", "{tmp}/folder.pt"], "is a folder"),
    ("service", ["score", "{tmp}/images", "--out", "{tmp}/fifo", "--resume"], "cannot tell the output format"),
    ("service", ["score", "{tmp}/images", "--k", "0"], "--k must be at least 1"),
    ("service", ["score", "{tmp}/images", "--k", "nan"], "invalid int value"),
    ("service", ["score", "{tmp}/images", "--min-confidence", "nan"], "must be between 0 and 1"),
    ("service", ["score", "{tmp}/images", "--timeout", "inf", "--url", "http://localhost:1"], "--timeout must be"),
    ("service", ["score", "{tmp}/images", "--models-dir", "{tmp}/photo.jpg"], "is a file, not a folder"),
    ("service", ["score", "{tmp}/images", "--resume", "--overwrite"], "pass one of them"),
    ("service", ["serve", "--port", "0"], "is not a TCP port"),
    ("service", ["serve", "--port", "70000"], "is not a TCP port"),
    ("service", ["serve", "--models-dir", "{tmp}/missing"], "no model manifest"),
    ("service", ["serve", "--models-dir", ""], "--models-dir is empty"),
    ("service", ["doctor", "--models-dir", "{tmp}/photo.jpg"], "is a file, not a folder"),
    ("service", ["doctor", "--max-images", "nan"], "invalid int value"),
    ("service", ["nope"], "invalid choice: 'nope'"),
]


@pytest.mark.parametrize("main, argv, said", REFUSED)
def test_a_classic_mistake_is_one_line_and_status_2(main, argv, said, mistakes, capsys):
    status, err = _said(main, argv, mistakes, capsys)
    assert status == 2, err
    _one_refusal(err)
    assert said in err, err


# An empty value is what a script passes for a variable it never set: a path or a model name left out was meant,
# not the current folder or the default model.
EMPTY = [
    ("training", ["evaluate", "--checkpoint", ""]),
    ("training", ["evaluate", "--onnx", ""]),
    ("training", ["evaluate", "--checkpoint", "x.pt", "--data", ""]),
    ("training", ["compare", "", "{tmp}/empty.pt"]),
    ("training", ["compare", "{tmp}/empty.pt", ""]),
    ("training", ["ensemble", "", "{tmp}/empty.pt", "--out", "{tmp}/e.pt"]),
    ("training", ["resume", ""]),
    ("training", ["train", "--recipe", "", "--out", "{tmp}/run"]),
    ("training", ["ablate", "--recipe", "", "--vary", "lr=1,2", "--out", "{tmp}/ab"]),
    ("export", ["--checkpoint", "", "--name", "x"]),
    ("export", ["--checkpoint", "{tmp}/empty.pt", "--name", "x", "--models-dir", ""]),
    ("export", ["--checkpoint", "{tmp}/empty.pt", "--name", "x", "--reference-cache", ""]),
    ("export", ["--checkpoint", "{tmp}/empty.pt", "--name", "x", "--data", ""]),
    ("export", ["list", "--models-dir", ""]),
    ("export", ["verify", "", "--models-dir", "{tmp}/models"]),
    ("export", ["default", "", "--models-dir", "{tmp}/models"]),
    ("export", ["remove", "", "--models-dir", "{tmp}/models"]),
    ("export", ["card", "", "--models-dir", "{tmp}/models"]),
    ("export", ["rederive", "", "--name", "x", "--models-dir", "{tmp}/models"]),
    ("export", ["recover", "", "--out", "{tmp}/r.pt", "--models-dir", "{tmp}/models"]),
    ("export", ["recover", "x", "--out", "", "--models-dir", "{tmp}/models"]),
]


@pytest.mark.parametrize("main, argv", EMPTY)
def test_an_empty_path_or_model_name_is_refused_as_empty(main, argv, mistakes, capsys):
    status, err = _said(main, argv, mistakes, capsys)
    assert status == 2, err
    _one_refusal(err)
    assert "is empty: give a" in err, err


def test_an_empty_model_name_is_not_taken_for_the_default_model(tiny_models_dir, tmp_path, capsys):
    """The manifest's lookup takes a missing name for the default: `default ""` made '' the default (a pydantic
    traceback), `card ""` printed the default model's card, `verify ""` verified it."""
    manifest = (tiny_models_dir / "manifest.json").read_text()
    for command in (["default", ""], ["card", ""], ["verify", ""]):
        status, err = _said("export", [*command, "--models-dir", str(tiny_models_dir)], tmp_path, capsys)
        assert status == 2, err
        _one_refusal(err)
        assert "is empty: give a model name" in err
    assert (tiny_models_dir / "manifest.json").read_text() == manifest


@pytest.mark.parametrize(
    "report_file, kind",
    [("predictions.npz", "an evaluate report"), ("compare.json", "a comparison"), ("ablation.json", "an ablation")],
)
@pytest.mark.parametrize("force", [False, True])
def test_training_into_a_report_folder_is_refused_and_leaves_it_whole(report_file, kind, force, tmp_path, capsys):
    """A report folder given as --out was trained into (its history.json and training_curves.png replaced by the
    run's, with --force removed first)."""
    report = tmp_path / "report"
    report.mkdir()
    held = {report_file: "the report's", "history.json": "{}", "training_curves.png": "png", "report.md": "# r"}
    for name, text in held.items():
        (report / name).write_text(text)
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(report), *(["--force"] if force else [])]
    status, err = _said("training", [*argv, *NO_DATA], tmp_path, capsys)
    assert status == 2, err
    _one_refusal(err)
    assert f"holds {kind}, not a run" in err
    assert {p.name: p.read_text() for p in report.iterdir()} == held


UNKNOWN_FLAGS = [
    ("training", ["evaluate", "--checkpoint", "x.pt", "--bogus"], "python -m training evaluate"),
    ("training", ["train", "--recipe", "resnet9_half_cpu", "--bogus"], "python -m training train"),
    ("training", ["models", "extra"], "python -m training models"),
    ("service", ["score", "{tmp}/images", "--bogus"], "python -m service score"),
    ("service", ["serve", "--bogus"], "python -m service serve"),
    ("service", ["doctor", "--bogus"], "python -m service doctor"),
]


@pytest.mark.parametrize("main, argv, command", UNKNOWN_FLAGS)
def test_an_unknown_flag_is_told_with_its_commands_usage(main, argv, command, mistakes, capsys):
    """The usage shown names the flags the command takes; the program's list of commands (which it showed)
    does not help one who mistyped a flag of one of them."""
    status, err = _said(main, argv, mistakes, capsys)
    assert status == 2, err
    _one_refusal(err)
    assert err.startswith(f"usage: {command} "), err
    assert err.strip().splitlines()[-1].startswith(f"{command}: error: unrecognized arguments: "), err
