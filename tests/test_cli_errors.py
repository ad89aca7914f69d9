"""`python -m training` and `python -m export`: what the user gave wrong is one line and status 2; any other
error is a bug, and keeps its traceback and status 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from export.__main__ import main as export_main
from inference.errors import UsageError
from training.__main__ import main as training_main
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
        (["evaluate", "--onnx", "{tmp}/plain.onnx"], "it was not exported by this project"),
        (["compare", "{tmp}/junk.pt", "{tmp}/other.pt", "--out", "{tmp}/full"], "holds files and no comparison"),
    ],
)
def test_what_the_user_gave_wrong_stays_one_line_with_status_2(argv, said, tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    (tmp_path / "other.pt").write_text("nor this")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("someone's")
    _plain_onnx(tmp_path / "plain.onnx")
    argv = [word.format(tmp=tmp_path) for word in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    assert training_main(argv) == 2
    _one_line(capsys.readouterr().err, said)


def _plain_onnx(path) -> None:
    """A valid ONNX graph (y = x) that carries no model card."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    # an IR version the installed ONNX Runtime reads (onnx's own default may be newer)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def test_a_refusal_by_evaluate_or_ensemble_stays_one_line(tiny_run, tmp_path, capsys):
    """evaluate.py, training/inference.py and ensemble.py refuse these with a UsageError of their own."""
    base = ["evaluate", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "r"), "--device", "cpu"]
    assert training_main([*base, "--split", "bogus"]) == 2
    _one_line(capsys.readouterr().err, "unknown split 'bogus'")
    assert training_main([*base, "--tta", "rotate"]) == 2
    _one_line(capsys.readouterr().err, "unknown test-time augmentation 'rotate'")
    assert training_main(["ensemble", str(tiny_run), str(tiny_run), "--out", str(tmp_path / "e.pt")]) == 2
    _one_line(capsys.readouterr().err, "the same checkpoint is given twice")


@pytest.mark.parametrize(
    "argv, said",
    [
        (["verify", "nope"], "unknown model 'nope'; available:"),
        (["default", "nope"], "unknown model 'nope'"),
        (["remove", "nope"], "unknown model 'nope'"),
        (["card", "nope"], "unknown model 'nope'"),
        (["rederive", "nope", "--name", "x"], "unknown model 'nope'"),
        (["recover", "nope", "--out", "{tmp}/x.pt"], "unknown model 'nope'"),
        (["recover", "tiny-int8", "--out", "{tmp}/x.pt"], "tiny-int8 is int8: its weights were rounded"),
        (["rederive", "tiny-int8", "--name", "x"], "tiny-int8 is int8: re-derive from an FP32 graph"),
        (["remove", "tiny"], "tiny is a default model"),
        (["lsit"], "unknown command 'lsit'"),
        (["verfy", "x"], "unknown command 'verfy' (did you mean verify?): export takes"),
        (["Verify"], "unknown command 'Verify' (did you mean verify?): export takes"),
        # the listed model's precision takes "an" (said "an int8"), as every precision's name does
        (["rederive", "tiny", "--name", "tiny-int8", "--calibrate", "none"], "as an int8 resnet9 of 3 classes;"),
        (["--checkpoint", "{tmp}/junk.pt", "--name", "x"], "is not a training checkpoint this project can read"),
        (["--checkpoint", "{tmp}/missing.pt", "--name", "x"], "no checkpoint at"),
    ],
)
def test_what_the_user_gave_wrong_to_export_stays_one_line_with_status_2(argv, said, tiny_models_dir, tmp_path, capsys):
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    argv = [word.format(tmp=tmp_path) for word in argv]
    assert export_main([*argv, "--models-dir", str(tiny_models_dir)]) == 2
    _one_line(capsys.readouterr().err, said)


def test_rederive_says_the_temperature_of_a_calibrated_reference_to_4_decimals(tiny_models_dir, capsys):
    """It said the float whole, "(T=1.5194658041000366)", where the card and the calibration summary say 1.5195."""
    import re

    assert export_main(["rederive", "tiny", "--name", "x", "--models-dir", str(tiny_models_dir)]) == 2
    err = capsys.readouterr().err
    _one_line(err, "tiny is already calibrated (T=")
    assert re.search(r"already calibrated \(T=\d+\.\d{4}\): derive from it with --calibrate none", err), err


def test_usage_error_is_one_class_from_inference_up():
    """inference raises the command lines' UsageError: its lookups and ONNX Runtime's refusal of a file are one."""
    from inference.errors import UsageError as inference_usage_error
    from inference.fits import get_fit
    from inference.precisions import precision
    from inference.runtime import ModelFileError

    assert UsageError is inference_usage_error and issubclass(ModelFileError, UsageError)
    with pytest.raises(UsageError, match="unknown fit 'nope'; valid: center_crop"):
        get_fit("nope")
    with pytest.raises(UsageError, match="unknown precision 'nope'; valid: fp32"):
        precision("nope")


def test_an_unknown_registry_name_is_a_usage_error_and_still_a_key_error():
    registry = Registry("thing")
    registry.register("a")(lambda: 1)
    with pytest.raises(UnknownName) as raised:
        registry.get("b")
    assert isinstance(raised.value, UsageError) and isinstance(raised.value, KeyError)
    assert str(raised.value) == "unknown thing 'b'; valid names: a"


def test_the_manifests_refusals_are_usage_errors(tmp_path):
    """The manifest's refusals are the user's to correct (one line, status 2, whoever calls them) and still the
    KeyError a failed lookup is, so callers catching that go on catching it."""
    from inference.manifest import ManifestError, load_manifest

    assert issubclass(ManifestError, UsageError)
    with pytest.raises(ManifestError, match="no model manifest"):
        load_manifest(tmp_path, verify=False)
    manifest = load_manifest(ROOT / "models", verify=False)
    with pytest.raises(UsageError) as refused:
        manifest.get("nope")
    assert isinstance(refused.value, KeyError) and str(refused.value).startswith("unknown model 'nope'; available: ")
