"""scripts/gpu_zoo.py, the device run that trains the SE-ResNet18 and WRN-16-4 files: what it sends back
from the GPU machine must join into a checkpoint the CPU side exports."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from training.checkpoint import load_checkpoint

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_zoo.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_zoo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_slimmed_checkpoint_comes_back_in_parts_that_join_into_the_same_weights(tiny_run, tmp_path, monkeypatch):
    zoo = load_script()
    monkeypatch.setattr(zoo, "PART_BYTES", 20_000)
    zoo.slim(tiny_run.name, tiny_run.parent, tmp_path)
    parts = sorted(tmp_path.glob(f"{tiny_run.name}.pt.part*"))
    # over ten parts, so the names must sort as numbers do for `cat NAME.pt.part*` to join them in order
    assert len(parts) > 10
    assert all(part.stat().st_size <= 20_000 for part in parts)
    joined = tmp_path / "joined.pt"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))

    slim, full = load_checkpoint(joined), load_checkpoint(tiny_run / "best.pt")
    assert "optimizer" in full and "optimizer" not in slim and "rng_cpu" not in slim
    assert slim["meta"] == full["meta"] and slim["config"] == full["config"]
    assert slim["model"].keys() == full["model"].keys()
    assert all(torch.equal(slim["model"][key], value) for key, value in full["model"].items())


def test_a_small_checkpoint_comes_back_whole(tiny_run, tmp_path):
    zoo = load_script()
    zoo.slim(tiny_run.name, tiny_run.parent, tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [f"{tiny_run.name}.pt"]
    assert "optimizer" not in load_checkpoint(tmp_path / f"{tiny_run.name}.pt")
