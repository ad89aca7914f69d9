"""The host record every benchmark writes names the CPU, which the figures depend on."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import report_io  # noqa: E402

CPUINFO = """processor\t: 0
cpu family\t: {family}
model\t\t: {model}
model name\t: {name}
flags\t\t: {flags}

processor\t: 1
model name\t: another block, never read
"""


@pytest.mark.parametrize(
    "name, family, model, flags, expected",
    [
        ("AMD EPYC", 25, 1, "fpu sse2 avx avx2", "AMD EPYC (family 25 model 1), best vector extension avx2"),
        (
            "AMD EPYC",
            25,
            17,
            "avx2 avx512f avx512_vnni avx512_bf16",
            "AMD EPYC (family 25 model 17), best vector extension avx512_bf16",
        ),
        (
            "Intel(R) Xeon(R) Platinum 8480+",
            6,
            143,
            "avx2 avx512f avx512_vnni avx512_bf16 amx_tile",
            "Intel(R) Xeon(R) Platinum 8480+ (family 6 model 143), best vector extension amx_tile",
        ),
        ("QEMU Virtual CPU", 6, 6, "fpu sse2", "QEMU Virtual CPU (family 6 model 6), best vector extension no AVX2"),
    ],
)
def test_cpu_model_names_the_processor_its_family_and_model_and_best_vector_extension(
    tmp_path, name, family, model, flags, expected
):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO.format(name=name, family=family, model=model, flags=flags))
    assert report_io.cpu_model(path) == expected


def test_host_records_the_cpu_cores_and_load(tmp_path):
    record = report_io.host_record()
    assert record["cpu"] == report_io.cpu_model()
    assert record["usable_cores"] >= 1 and len(record["load_average_after"]) == 3
    # no /proc/cpuinfo (another OS): the platform's name, never an error
    assert report_io.cpu_model(tmp_path / "missing") == (platform.processor() or platform.machine())


def test_the_calibration_crossfit_undoes_a_graphs_temperature_and_measures_each_half_both_ways(tmp_path):
    import json

    import calibration_crossfit as crossfit
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    raw = rng.normal(size=(400, 3)) + 4 * np.eye(3)[labels]  # over-confident: T well below 1 fits
    for kind, stored in (("onnx", raw / 0.5), ("checkpoint", raw)):  # a calibrated graph answers logits / T
        report = tmp_path / kind
        report.mkdir()
        np.savez(
            report / "predictions.npz", logits=stored, labels=labels, fingerprint=np.array("f"), classes=np.array(["a"])
        )
        calibrated = {"calibration": {"method": "temperature", "temperature": 0.5}} if kind == "onnx" else {}
        metrics = {"source": {"kind": kind, **calibrated}, "calibration": {"temperature": 0.5}}
        (report / "metrics.json").write_text(json.dumps(metrics))
        logits, read_labels = crossfit.raw_logits(report)
        assert np.allclose(logits, raw) and (read_labels == labels).all()
    found = crossfit.crossfit(raw, labels, splits=3, seed=0)
    assert len(found["gaps"]) == 6 and found["largest_gap"] == max(found["gaps"])
    assert found["mean_gap"] > -0.01  # T fitted on a half itself is at least as good there, up to ECE's bins
    out = tmp_path / "out.json"
    assert crossfit.main([str(tmp_path / "onnx"), "--splits", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["reports"]["onnx"]["images"] == 400


def test_the_service_benchmark_counts_the_memory_of_a_process_and_its_children():
    """A child holding 256 MiB: its tree holds at least that, the parent's tree too, and the sampler sees it."""
    import subprocess

    import process_tree

    hold = "import time; x = bytearray(256 << 20); x[::4096] = b'1' * (256 << 8); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # its pages are touched
        alone = process_tree.tree_memory_mib(child.pid)
        assert alone["rss"] >= alone["pss"] > 256, alone
        rollup = Path("/proc/self/smaps_rollup").read_text()
        own = next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")) / 1024
        assert process_tree.tree_memory_mib(os.getpid())["pss"] > own + 256  # this process and its child
    finally:
        child.kill()
        child.wait()
    # Memory held only between the sampler's first and last samples: only its thread can see it.
    # The child says when it has let go, so a loaded machine's scheduling cannot end the block before that.
    brief = "import time; print(flush=True); time.sleep(0.3); x = bytearray(256 << 20); x[::4096] = b'1' * (256 << 8)"
    child = subprocess.Popen(
        [sys.executable, "-c", brief + "; time.sleep(1.0); del x; print(flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )
    try:
        child.stdout.readline()
        with process_tree.MemoryPeak(child.pid, interval=0.05) as memory:
            child.stdout.readline()  # freed
        assert memory.peak["pss"] > 256, memory.peak
        assert process_tree.tree_memory_mib(child.pid)["pss"] < 128  # given back by the time the block ended
    finally:
        child.kill()
        child.wait()


def test_the_checkpoint_benchmark_times_the_state_the_trainer_saves(tmp_path, monkeypatch):
    """bench_checkpoint.py writes the real Trainer's state: its file is the size of a trained run's last.pt of
    the same recipe (the same network, optimizer and config), not a bare state_dict's."""
    import json

    import bench_checkpoint

    folder = bench_checkpoint.image_folder(tmp_path / "images", classes=3, per_class=180)
    row = bench_checkpoint.measure("resnet9_half_cpu", folder, tmp_path, epochs=10, repeats=1)
    saved = tmp_path / "resnet9_half_cpu" / "last.pt"
    assert row["model"] == "resnet9_half" and row["checkpoint_s"] > 0 and row["curves_s"] > 0
    assert row["checkpoint_mb"] == round(saved.stat().st_size / 2**20, 1)
    import torch

    state = torch.load(saved, weights_only=True)
    assert {"model", "optimizer", "ema", "history", "rng_cpu"} <= set(state) and len(state["history"]) == 10
    out = tmp_path / "out.json"
    monkeypatch.setattr(
        sys,
        "argv",
        ["bench_checkpoint", "--recipes", "resnet9_half_cpu", "--epochs", "10", "--repeats", "1", "--out", str(out)],
    )
    bench_checkpoint.main()
    assert json.loads(out.read_text())["recipes"]["resnet9_half_cpu"]["checkpoint_mb"] > 1


BENCHMARKS = sorted(p.stem for p in (ROOT / "bench").glob("*.py") if p.stem.startswith(("bench_", "calibration_")))


def test_no_benchmark_imports_another():
    """A benchmark is a script: what two of them share lives in a module of its own (service_runs.py, ...), so
    that changing one benchmark cannot break another."""
    import ast

    scripts = set(BENCHMARKS)
    found = []
    for path in sorted((ROOT / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            found += [f"{path.name}:{node.lineno} imports {name}" for name in names if name in scripts]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_flag_of_every_benchmark_says_what_it_is(name):
    import argparse
    import importlib

    parser = importlib.import_module(name).get_args_parser()
    bare = [
        a.option_strings or a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert not bare, f"{name}: no help for {bare}"


def test_the_results_name_the_command_that_made_them_and_the_cpu(tmp_path, monkeypatch):
    import json

    monkeypatch.setattr(sys, "argv", ["bench/bench_x.py", "--out", "a b.json"])
    report_io.write_json(tmp_path / "x.json", {"figure": 1})
    assert json.loads((tmp_path / "x.json").read_text())["command"] == "python bench/bench_x.py --out 'a b.json'"

    import calibration_crossfit

    out = tmp_path / "crossfit.json"
    report = ROOT / "models" / "reports" / "resnet9-half-cifar10-int8"
    assert calibration_crossfit.main([str(report), "--splits", "1", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["host"]["cpu"] == report_io.cpu_model()


def test_the_checkpoint_benchmark_takes_a_history_shorter_than_the_recipes_warmup(tmp_path):
    """resnet9_half_cpu warms up over 5 epochs: a 2-record history is still a state to save."""
    import bench_checkpoint

    folder = bench_checkpoint.image_folder(tmp_path / "images", classes=3, per_class=180)
    row = bench_checkpoint.measure("resnet9_half_cpu", folder, tmp_path, epochs=2, repeats=1)
    assert row["checkpoint_mb"] > 1


def test_the_export_benchmark_names_the_models_it_timed_when_they_are_the_defaults(tmp_path, monkeypatch):
    """Its JSON held only rates by batch size: which models the defaults named then was nowhere."""
    import json
    from types import SimpleNamespace

    import bench_export
    import torch

    def entry(name: str) -> SimpleNamespace:
        return SimpleNamespace(
            name=name, file=f"{name}.onnx", source={"checkpoint": "x.pt"}, input=SimpleNamespace(size=(4, 4))
        )

    monkeypatch.setattr(bench_export, "load_manifest", lambda folder: SimpleNamespace(get=entry))
    monkeypatch.setattr(bench_export, "load_checkpoint", lambda path: None)
    monkeypatch.setattr(bench_export, "model_from_checkpoint", lambda checkpoint: torch.nn.Flatten())
    monkeypatch.setattr(bench_export, "OnnxClassifier", lambda path, device: SimpleNamespace(logits=lambda x: x))
    out = tmp_path / "export.json"
    argv = ["bench/bench_export.py", "--batch-sizes", "2", "--seconds", "0.01", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench_export.main() == 0
    report = json.loads(out.read_text())
    defaults = bench_export.get_args_parser()
    assert report["models"] == {"fp32": defaults.get_default("fp32"), "int8": defaults.get_default("int8")}
    assert report["seconds"] == 0.01 and set(report["batch_sizes"]) == {"2"}


def test_a_benchmarked_models_arguments_are_read_as_training_reads_them():
    """parse_spec read its values with YAML 1.1's rules: 5e-3 and -.5 reached the network as text, 010 as eight."""
    import bench_training

    name, kwargs = bench_training.parse_spec("airbench94:whiten_eps=5e-3,depth=010,dropout=-.5,use_se=yes")
    assert name == "airbench94" and kwargs == {"whiten_eps": 0.005, "depth": 10, "dropout": -0.5, "use_se": True}
    assert all(type(v) is t for v, t in zip(kwargs.values(), (float, int, float, bool))), kwargs


def test_the_training_benchmark_records_the_load_as_its_measurements_ended(tmp_path, monkeypatch):
    """host_record()'s load_average_after was taken before the first model was timed."""
    import json

    import bench_training

    timed: list[str] = []
    monkeypatch.setattr(bench_training, "check_image_size", lambda spec, size: None, raising=False)
    monkeypatch.setattr(bench_training, "loader_throughput", lambda *args: 1.0)
    monkeypatch.setattr(bench_training, "train_throughput", lambda spec, *args, **kwargs: timed.append(spec) or 1.0)
    monkeypatch.setattr(bench_training, "training_gflop_per_image", lambda spec, size: 1.0)
    monkeypatch.setattr(report_io, "host_record", lambda: {"models_timed_before": list(timed)})
    out = tmp_path / "training.json"
    argv = ["bench/bench_training.py", "--models", "a", "b", "--device", "cpu", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    assert bench_training.main() == 0
    assert json.loads(out.read_text())["host"] == {"models_timed_before": ["a", "b"]}


def test_the_checkpoint_benchmark_records_the_load_as_its_measurements_ended(tmp_path, monkeypatch):
    """host_record()'s load_average_after was taken before the first recipe was saved."""
    import json

    import bench_checkpoint

    measured: list[str] = []
    monkeypatch.setattr(bench_checkpoint, "image_folder", lambda root: root)
    row = {"model": "m", "checkpoint_mb": 1.0, "checkpoint_s": 0.1, "curves_s": 0.1}
    monkeypatch.setattr(bench_checkpoint, "measure", lambda recipe, *args: measured.append(recipe) or row)
    monkeypatch.setattr(report_io, "host_record", lambda: {"recipes_measured_before": list(measured)})
    out = tmp_path / "checkpoint.json"
    monkeypatch.setattr(sys, "argv", ["bench/bench_checkpoint.py", "--recipes", "a", "b", "--out", str(out)])
    assert bench_checkpoint.main() == 0
    assert json.loads(out.read_text())["host"] == {"recipes_measured_before": ["a", "b"]}


def test_the_results_name_the_code_revision_and_the_files_that_differed_from_it(tmp_path):
    """The JSON named the command and the CPU but not the code: a figure could not be traced to what measured it."""
    import json
    import subprocess

    report_io.write_json(tmp_path / "x.json", {"figure": 1})
    code = json.loads((tmp_path / "x.json").read_text())["code"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain"], capture_output=True, text=True)
    assert code["revision"] == head.stdout.strip()
    assert code["uncommitted"] == [line[3:] for line in changed.stdout.splitlines()]


def test_outside_a_git_checkout_the_revision_is_none(tmp_path):
    assert report_io.code_revision(tmp_path) == {"revision": None, "uncommitted": []}


def _wide_jpeg() -> bytes:
    """A 64x32 JPEG: every fit makes different 32x32 pixels of it."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _padded_entry():
    """The default model's entry, as a card that pads: not the default fit, so a decode that ignores the card's
    fit makes other pixels."""
    from inference.manifest import load_manifest

    entry = load_manifest(ROOT / "models", verify=False).get()
    return entry.model_copy(update={"input": entry.input.model_copy(update={"fit": "pad"})})


def _pixels_measured(monkeypatch) -> list:
    import raw_engine

    seen: list = []
    rate = raw_engine.EngineRate(1, 1, 1, 1.0, 1.0)
    monkeypatch.setattr(raw_engine, "ceiling", lambda path, pixels, sizes: seen.append(pixels) or [rate])
    return seen


def test_the_scoring_benchmarks_raw_engine_decodes_as_the_scorer_does_for_the_model(tmp_path, monkeypatch):
    """decode_image was called without the card's fit (a TypeError since the fit is asked for by name; before
    that, the default fit and 32x32 whatever the model's input)."""
    import bench_score
    import numpy as np

    from inference.preprocess import decode_image, to_model_input

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "0.jpg").write_bytes(_wide_jpeg())
    entry, seen = _padded_entry(), _pixels_measured(monkeypatch)
    bench_score.RawEngine("model.onnx", entry, tmp_path, [1])
    expected = to_model_input(np.stack([decode_image(_wide_jpeg(), entry.input.size, fit="pad")]))
    np.testing.assert_array_equal(seen[0], expected)


def test_the_service_benchmarks_raw_engine_decodes_as_the_service_does_for_the_model(monkeypatch):
    import bench_service
    import numpy as np

    from inference.preprocess import decode_image, to_model_input

    entry, seen = _padded_entry(), _pixels_measured(monkeypatch)
    bench_service.raw_rates(Path("model.onnx"), [1], [("a.jpg", _wide_jpeg())], entry.input)
    expected = to_model_input([decode_image(_wide_jpeg(), entry.input.size, fit="pad")])
    np.testing.assert_array_equal(seen[0], expected)


def test_the_scoring_benchmark_benchmarks_the_checkpoint_it_is_given(tmp_path, monkeypatch):
    """With the default models folder present, --checkpoint was ignored and the manifest's default model measured;
    and a second checkpoint was never exported, the first one's export under the same name measured instead."""
    import argparse

    import bench_score

    import export.pipeline
    from inference.errors import UsageError

    exported: list[tuple[str, Path]] = []

    def export_checkpoint(checkpoint, name, precision, models, **kwargs):
        exported.append((checkpoint, Path(models)))
        raise UsageError("exported")  # what follows needs a real export

    monkeypatch.setattr(export.pipeline, "export_checkpoint", export_checkpoint)
    for checkpoint in ("first.pt", "second.pt"):
        args = argparse.Namespace(checkpoint=str(tmp_path / checkpoint), model=None, models_dir=str(ROOT / "models"))
        with pytest.raises(UsageError, match="exported"):
            bench_score.resolve_model(args, tmp_path / "work")
    assert [checkpoint for checkpoint, _ in exported] == [str(tmp_path / "first.pt"), str(tmp_path / "second.pt")]
    assert exported[0][1] != exported[1][1]  # each into a folder of its own, not over the other's
