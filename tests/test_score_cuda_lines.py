"""`python -m service score --device cuda` on a host where CUDA cannot run: the reason in the scorer's own line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from PIL import Image

from conftest import ROOT
from inference.runtime import gpu_present

MODEL = "resnet9-half-cifar10-int8"  # a shipped model: no training or export needed


@pytest.mark.skipif(gpu_present(), reason="a GPU is visible: CUDA would be created")
def test_score_under_cuda_on_a_host_without_one_says_why_in_its_own_line_only(tmp_path):
    """ONNX Runtime's own failed attempts (six coloured lines, in two tries) used to come before the reason,
    as they did for `serve` until it quietened them."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider: nothing is tried")
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "red.png")
    argv = [sys.executable, "-m", "service", "score", str(folder), "--out", str(tmp_path / "preds.csv")]
    done = subprocess.run(
        [*argv, "--device", "cuda", "--model", MODEL], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --device cuda, but model '{MODEL}' cannot run wholly on CUDA"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "onnxruntime" not in done.stderr, done.stderr
    assert not (tmp_path / "preds.csv").exists()


@pytest.mark.parametrize("fails", [False, True])
def test_onnx_runtimes_level_is_given_back_once_the_model_is_placed(monkeypatch, fails):
    """Quietened only while the model is placed: ONNX Runtime's warnings while scoring on a GPU are kept, and a
    refusal gives the level back too."""
    import argparse

    import onnxruntime as ort

    from service.score import engines

    levels: list[int] = []
    monkeypatch.setattr(ort, "set_default_logger_severity", levels.append)

    def placed(args, cuda_wanted):
        levels.append(-1)  # placed here, between the two
        if fails:
            raise engines.UserError("refused")
        return "backend"

    monkeypatch.setattr(engines, "_open_placed", placed)
    args = argparse.Namespace(device="cuda")
    if fails:
        with pytest.raises(engines.UserError):
            engines._open_local(args)
    else:
        assert engines._open_local(args) == "backend"
    assert levels == [4, -1, engines.ORT_DEFAULT_SEVERITY], levels
    if not fails:
        levels.clear()
        assert engines._open_local(argparse.Namespace(device="cpu")) == "backend"
        assert levels == [-1], levels  # the CPU's placement tries no CUDA: nothing to quieten
