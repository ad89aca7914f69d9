"""`score --engine ray --device cpu --gpus-per-actor F`: the two flags contradict each other (an actor given a GPU
runs its session on CUDA), so the command refuses them in one line before Ray is imported, as it refuses
`--device cuda` without `--gpus-per-actor`."""

from __future__ import annotations

import sys

from PIL import Image

from conftest import ROOT
from service.score.cli import main as score_main


def test_device_cpu_with_gpus_per_actor_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # the refusal must come before Ray is needed
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (32, 32), (120, 30, 200)).save(tmp_path / "photos" / "a.png")
    args = ["--engine", "ray", "--device", "cpu", "--gpus-per-actor", "0.5", "--models-dir", str(ROOT / "models")]
    status = score_main([str(tmp_path / "photos"), *args, "--no-progress", "--out", str(tmp_path / "p.csv")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.startswith("error: --device cpu with --gpus-per-actor 0.5: ") and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "p.csv").exists()
