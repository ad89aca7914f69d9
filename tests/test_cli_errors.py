"""`python -m training` and `python -m export`: what the user gave wrong is one line and status 2; any other
error is a bug, and keeps its traceback and status 1."""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest

from conftest import ROOT
from export.__main__ import main as export_main
from training.__main__ import main as training_main
from training.cli_types import UsageError, refusals_of
from training.registry import Registry, UnknownName


def _bug(*args, **kwargs):
    raise KeyError("tpyo")  # a mistyped key inside the code: nothing the user could change


def _shape_bug(*args, **kwargs):
    raise ValueError("mat1 and mat2 shapes cannot be multiplied (4x512 and 256x10)")  # as torch says one


def test_a_bug_in_a_training_command_keeps_its_traceback(monkeypatch):
    import training.models

    monkeypatch.setattr(training.models, "list_models", _bug)
    with pytest.raises(KeyError, match="tpyo"):
        training_main(["models"])
    import training.reports.evaluate

    monkeypatch.setattr(training.reports.evaluate, "evaluate", _shape_bug)
    with pytest.raises(ValueError, match="mat1 and mat2"):
        training_main(["evaluate", "--checkpoint", "any.pt"])


def test_a_bug_in_an_export_command_keeps_its_traceback(monkeypatch, tmp_path):
    import export.__main__
    import export.pipeline

    monkeypatch.setattr(export.__main__, "load_manifest", _bug)
    with pytest.raises(KeyError, match="tpyo"):
        export_main(["list", "--models-dir", str(tmp_path)])
    monkeypatch.setattr(export.pipeline, "export_checkpoint", _shape_bug)
    with pytest.raises(ValueError, match="mat1 and mat2"):
        export_main(["--checkpoint", "any.pt", "--name", "x", "--models-dir", str(tmp_path)])


@pytest.mark.parametrize(
    "module, call",
    [
        (
            "training",
            "import training.models as m; m.list_models = bug; from training.__main__ import main; "
            "sys.exit(main(['models']))",
        ),
        ("export", "import export.__main__ as m; m.load_manifest = bug; sys.exit(m.main(['list']))"),
    ],
)
def test_a_bug_ends_with_a_traceback_and_status_1(module, call):
    code = f"import sys\ndef bug(*a, **k):\n    raise KeyError('tpyo')\n{call}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 1, out.stderr
    assert "Traceback" in out.stderr and "KeyError: 'tpyo'" in out.stderr and "error: tpyo" not in out.stderr


def _one_line(err: str, said: str) -> None:
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    "argv, said",
    [
        (["train", "--recipe", "nope"], "no recipe 'nope'"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "model.name=nope"], "unknown model 'nope'; valid names"),
        (["train", "--recipe", "resnet9_half_cpu", "--set", "data.dataset=nope"], "unknown dataset 'nope'"),
        (["evaluate", "--checkpoint", "{tmp}/missing.pt"], "no checkpoint at"),
        (["evaluate", "--checkpoint", "{tmp}/junk.pt"], "is not a training checkpoint this project can read"),
        (["evaluate", "--onnx", "{tmp}/junk.pt"], "is not an ONNX model ONNX Runtime can load"),
        (["evaluate"], "give --checkpoint RUN/best.pt or --onnx MODEL.onnx"),
        (["ensemble", "{tmp}/junk.pt", "{tmp}/other.pt"], "--out is required"),
        (["ablate", "--recipe", "resnet9_half_cpu", "--vary", "lr=1", "--out", "{tmp}/ab"], "gives one value"),
        (["resume", "{tmp}/nothing"], "no checkpoint at"),
    ],
)
def test_what_the_user_gave_wrong_stays_one_line_with_status_2(argv, said, tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "other.pt").write_text("nor this")
    argv = [word.format(tmp=tmp_path) for word in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    assert training_main(argv) == 2
    _one_line(capsys.readouterr().err, said)


def test_a_bare_refusal_of_an_unknown_split_or_tta_stays_one_line(tiny_run, tmp_path, capsys):
    """evaluate.py and training/inference.py refuse these with `raise ValueError(...)` of their own."""
    base = ["evaluate", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "r"), "--device", "cpu"]
    assert training_main([*base, "--split", "bogus"]) == 2
    _one_line(capsys.readouterr().err, "unknown split 'bogus'")
    assert training_main([*base, "--tta", "rotate"]) == 2
    _one_line(capsys.readouterr().err, "unknown test-time augmentation 'rotate'")


@pytest.mark.parametrize(
    "argv, said",
    [
        (["verify", "nope"], "unknown model 'nope'; available:"),
        (["default", "nope"], "unknown model 'nope'"),
        (["remove", "nope"], "unknown model 'nope'"),
        (["card", "nope"], "unknown model 'nope'"),
        (["rederive", "nope", "--name", "x"], "unknown model 'nope'"),
        (["recover", "nope", "--out", "{tmp}/x.pt"], "unknown model 'nope'"),
        (["lsit"], "unknown command 'lsit'"),
        (["--checkpoint", "{tmp}/junk.pt", "--name", "x"], "is not a training checkpoint this project can read"),
        (["--checkpoint", "{tmp}/missing.pt", "--name", "x"], "no checkpoint at"),
    ],
)
def test_what_the_user_gave_wrong_to_export_stays_one_line_with_status_2(argv, said, tiny_models_dir, tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    argv = [word.format(tmp=tmp_path) for word in argv]
    assert export_main([*argv, "--models-dir", str(tiny_models_dir)]) == 2
    _one_line(capsys.readouterr().err, said)


def test_only_a_raise_statement_of_the_named_modules_is_taken_for_a_refusal():
    module = types.ModuleType("refusing")
    source = """
def said():
    raise ValueError("unknown split 'bogus'")
def said_from():
    try:
        int("x")
    except ValueError:
        raise KeyError("unknown model 'x'") from None
def parsed():
    return int("x")
def looked_up():
    return {}["tpyo"]
def subclass():
    raise UnicodeDecodeError("utf-8", b"", 0, 1, "bad")
"""
    exec(compile(source, "refusing.py", "exec"), module.__dict__)
    for refusal, message in ((module.said, "unknown split 'bogus'"), (module.said_from, "unknown model 'x'")):
        with pytest.raises(UsageError) as raised, refusals_of(("refusing",)):
            refusal()
        assert str(raised.value) == message
    for bug, kind in ((module.parsed, ValueError), (module.looked_up, KeyError), (module.subclass, ValueError)):
        with pytest.raises(kind) as raised, refusals_of(("refusing",)):
            bug()
        assert not isinstance(raised.value, UsageError)
    with pytest.raises(ValueError) as raised, refusals_of(("elsewhere",)):
        module.said()
    assert not isinstance(raised.value, UsageError)


def test_an_unknown_registry_name_is_a_usage_error_and_still_a_key_error():
    registry = Registry("thing")
    registry.register("a")(lambda: 1)
    with pytest.raises(UnknownName) as raised:
        registry.get("b")
    assert isinstance(raised.value, UsageError) and isinstance(raised.value, KeyError)
    assert str(raised.value) == "unknown thing 'b'; valid names: a"
