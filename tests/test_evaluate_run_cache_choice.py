"""A run trained with ``data.cache_dir=`` (empty: keep no decoded copy of the images) is evaluated without one
too: ``evaluate --help`` says the cache folder defaults to the run's, and "" means none."""

from pathlib import Path

from conftest import tiny_overrides
from training.config_recipes import build_config
from training.engine import train
from training.reports.samples import resolve_data
from training.reports.sources import load_model


def _run_without_cache(image_folder: Path, tmp_path: Path) -> Path:
    overrides = tiny_overrides(image_folder, tmp_path, epochs=1, **{"data.cache_dir": ""})
    config = build_config("resnet9_half_cpu", overrides)
    assert config.data.cache_dir == ""
    train(config, tmp_path / "run")
    return tmp_path / "run"


def test_evaluate_keeps_the_runs_choice_of_no_cache(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _run_without_cache(image_folder, tmp_path)
    source = load_model(checkpoint=run, device="cpu")
    assert source.data_defaults["cache_dir"] == ""
    assert resolve_data(source).cache_dir == ""


def test_evaluate_given_cache_dir_still_wins(image_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = _run_without_cache(image_folder, tmp_path)
    source = load_model(checkpoint=run, device="cpu")
    assert resolve_data(source, cache_dir=str(tmp_path / "here")).cache_dir == str(tmp_path / "here")


def test_evaluate_of_its_export_keeps_the_runs_choice_of_no_cache(image_folder, tmp_path, monkeypatch):
    from export.pipeline import export_checkpoint

    monkeypatch.chdir(tmp_path)
    run = _run_without_cache(image_folder, tmp_path)
    export_checkpoint(run / "best.pt", "tiny", "fp32", tmp_path / "models", cache_dir=None)
    source = load_model(onnx=tmp_path / "models" / "tiny.onnx", device="cpu")
    assert resolve_data(source).cache_dir == ""
