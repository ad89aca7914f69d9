"""Every benchmark fed the classic mistakes (an --out it could not write at the end of a long run, an empty path from
an unset shell variable, a models folder without the named model, an archive that is not there): status 2, one
line, no traceback, nothing measured and no results written. And where the results go by default: never over the
committed figures in bench/results/."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import termination  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the benchmarks read /proc")

BENCHMARKS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem.startswith(("bench_", "calibration_")))

# What each benchmark needs besides the flag under test to get past argparse.
REQUIRED = {"bench_mixed_models": ["--slow", "x"], "calibration_crossfit": ["no-such-report"]}


@pytest.fixture
def mistakes(tmp_path: Path) -> Path:
    (tmp_path / "a folder").mkdir()
    (tmp_path / "a file").write_text("not a folder")
    return tmp_path


def _usage_error(script: str, argv: list[str], capsys) -> str:
    """argparse's refusal of ``argv``: its last line, after checking it is the only error line."""
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(script).get_args_parser().parse_args([*REQUIRED.get(script, []), *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_.value.code == 2 and "Traceback" not in err, err
    assert [line for line in lines if ": error: " in line] == [lines[-1]], err
    return lines[-1]


@pytest.mark.parametrize("script", BENCHMARKS)
@pytest.mark.parametrize(
    "out, said",
    [
        ("{tmp}/a folder", "is a folder: give the JSON file to write"),
        ("{tmp}/a file/out.json", "a file is a file, not a folder to write out.json in"),
        ("{tmp}/a file/deeper/out.json", "a file is a file, not a folder to write out.json in"),
        ("", "is empty: give a path"),
    ],
)
def test_an_out_that_could_not_be_written_is_refused_before_anything_is_measured(script, out, said, mistakes, capsys):
    """An --out that is a folder, or under a file, was found out when the results were written: after the whole
    run, whose figures were then lost."""
    line = _usage_error(script, ["--out", out.replace("{tmp}", str(mistakes))], capsys)
    assert ": error: argument --out: " in line and said in line, line


PATH_FLAGS = [
    (script, flag)
    for script in BENCHMARKS
    for flag in ("--models-dir", "--archive", "--work-dir", "--checkpoint", "--cache-dir")
    if flag in importlib.import_module(script).get_args_parser()._option_string_actions
]


@pytest.mark.parametrize("script, flag", PATH_FLAGS)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(script, flag, capsys):
    """An unset $MODELS in `--models-dir "$MODELS"` was the current folder ('no model manifest at manifest.json'),
    an empty --work-dir extracted the images into it."""
    line = _usage_error(script, [flag, ""], capsys)
    assert line.endswith(f": error: argument {flag}: is empty: give a path"), line


def test_an_empty_report_folder_is_refused(capsys):
    line = _usage_error("calibration_crossfit", [""], capsys)
    assert line.endswith("error: argument reports: is empty: give a path"), line


@pytest.mark.parametrize("script", BENCHMARKS)
def test_by_default_the_results_go_where_git_ignores_them(script):
    """bench_score and six more wrote into bench/results/ by default: a run to see the figures overwrote the
    committed ones; bench_training, bench_export and the calibration cross-fit wrote none, so that a long run's
    figures were only in the scroll-back."""
    default = Path(importlib.import_module(script).get_args_parser().get_default("out"))
    assert default.is_absolute() and ROOT / "bench" / "results" not in default.parents, default
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(default)])
    assert ignored.returncode == 0, f"{default} is not ignored by git"


def test_no_two_benchmarks_write_the_same_default_file():
    defaults = [importlib.import_module(script).get_args_parser().get_default("out") for script in BENCHMARKS]
    assert len(set(defaults)) == len(BENCHMARKS), defaults


def _run(script: str, argv: list[str], capsys) -> tuple[int, str]:
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as exit_:
        termination.run(lambda: module.main(argv))
    return exit_.value.code, capsys.readouterr().err


MODELS = str(ROOT / "models")


@pytest.mark.parametrize(
    "script, argv, said",
    [
        ("bench_score", ["--images", "10", "--model", "nope", "--work-dir", "{tmp}/work"], "unknown model 'nope'"),
        ("bench_score_ray", ["--images", "10", "--model", "nope", "--work-dir", "{tmp}/work"], "unknown model 'nope'"),
        ("bench_score_models", ["--images", "10", "--model", "nope", "--work-dir", "{tmp}/work"], "no model nope in"),
        ("bench_service", ["--model", "nope"], "unknown model 'nope'"),
        ("bench_mixed_models", ["--slow", "nope"], "unknown model 'nope'"),
        ("bench_fit", ["--model", "nope"], "unknown model 'nope'"),
        ("bench_export", ["--int8", "nope"], "unknown model 'nope'"),
        ("bench_service", ["--models-dir", "{tmp}/a folder"], "no model manifest at"),
        ("bench_score", ["--images", "10", "--models-dir", "{tmp}/a file", "--work-dir", "{tmp}/work"], "is a file"),
        ("bench_photos", ["--sizes", "0.05", "--repeats", "1", "--models-dir", "{tmp}/a folder"], "no model manifest"),
        (
            "bench_service",
            ["--models-dir", MODELS, "--archive", "{tmp}/missing.tar.gz"],
            "missing.tar.gz: No such file or directory; --archive takes the CIFAR-10 JPEGs",
        ),
        (
            "bench_mixed_models",
            ["--slow", "wrn-16-4-cifar10-int8", "--archive", "{tmp}/a folder"],
            "a folder: Is a directory; --archive takes the CIFAR-10 JPEGs",
        ),
        ("bench_checkpoint", ["--recipes", "{tmp}/a file"], "no recipe"),
        ("bench_training", ["--models", "nope", "--device", "cpu"], "nope"),
        ("calibration_crossfit", ["{tmp}/a folder"], "a folder"),
    ],
)
def test_a_users_mistake_past_argparse_is_one_line_and_status_2(script, argv, said, mistakes, capsys):
    out = mistakes / "out.json"
    status, err = _run(script, [word.replace("{tmp}", str(mistakes)) for word in argv] + ["--out", str(out)], capsys)
    lines = err.strip().splitlines()
    assert status == 2 and "Traceback" not in err, err
    assert lines[-1].startswith("error: ") and said in lines[-1], err
    assert "server log" not in err  # refused before a server was started
    assert not out.exists()
    assert not (mistakes / "work").exists() or not any((mistakes / "work").iterdir())


def test_a_photo_benchmark_without_a_model_is_refused_before_the_decodes_are_timed(mistakes, capsys, monkeypatch):
    """The decodes of every size were timed (tens of seconds at the default sizes) before the models folder was
    read."""
    import bench_photos

    timed: list[list[float]] = []
    monkeypatch.setattr(bench_photos, "decode_results", lambda sizes, repeats: timed.append(sizes) or [])
    argv = ["--sizes", "0.05", "--repeats", "1", "--models-dir", str(mistakes / "a folder")]
    status, err = _run("bench_photos", [*argv, "--out", str(mistakes / "out.json")], capsys)
    assert status == 2 and "no model manifest at" in err, err
    assert timed == []
