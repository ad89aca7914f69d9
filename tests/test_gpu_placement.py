"""Deploying to a GPU host, proven on a CPU: the per-device default, CUDA sessions without CPU fallback (refused
under --device cuda, served on the CPU under auto), the worker-to-GPU assignment, and `python -m service doctor`.

Where a GPU would be needed the tests fake what ONNX Runtime or NVML would say; the real refusal on a host
without a GPU is tested as well (skipped where a GPU is present)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from argparse import Namespace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError

from conftest import ROOT

MODELS = ROOT / "models"
INT8, FP32, FP16 = "resnet9-airbench94-cifar10-int8", "resnet9-airbench94-cifar10", "resnet9-airbench94-cifar10-fp16"


def _shipped() -> dict:
    return json.loads((MODELS / "manifest.json").read_text())


def _models_dir(tmp_path: Path, names: list[str], default: str, defaults: dict | None) -> Path:
    """A models folder with some of the shipped models (hard links: no copies of the files) and its manifest."""
    out = tmp_path / "models"
    out.mkdir()
    shipped = _shipped()
    entries = [m for m in shipped["models"] if m["name"] in names]
    for m in entries:
        try:
            os.link(MODELS / m["file"], out / m["file"])
        except OSError:
            shutil.copyfile(MODELS / m["file"], out / m["file"])
    manifest = {"schema_version": 1, "default": default, "models": entries}
    if defaults is not None:
        manifest["defaults"] = defaults
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _no_gpu_here() -> bool:
    from inference.runtime import gpu_present

    return not gpu_present()


# ---------------------------------------------------------------------------------------------- the manifest
def test_the_shipped_manifest_has_a_default_per_device_and_an_fp16_model_verified_against_fp32():
    from inference.manifest import load_manifest

    manifest = load_manifest(MODELS)
    assert manifest.default_for("cpu").name == INT8 == manifest.default
    assert manifest.default_for("cuda").name == FP16
    fp16, fp32 = manifest.get(FP16), manifest.get(FP32)
    assert fp16.precision == "fp16" and fp16.arch == fp32.arch
    assert fp16.source["derived_from"]["sha256"] == fp32.sha256  # converted from the shipped FP32 graph
    assert fp16.calibration == fp32.calibration  # the same temperature, inside the graph it was converted from
    parity = fp16.metrics["parity"]
    assert parity["passed"] and parity["samples"] == 5000 and parity["top1_agreement"] >= 0.999
    assert abs(fp16.metrics["val_top1"] - fp32.metrics["val_top1"]) <= 0.001


def test_an_old_manifest_means_its_default_on_every_device_and_a_new_one_its_own_per_device():
    from inference.manifest import Manifest

    shipped = _shipped()
    old = Manifest.model_validate({k: v for k, v in shipped.items() if k != "defaults"})
    assert old.defaults == {}
    for kind in ("cpu", "cuda"):
        choice = old.default_for(kind)
        assert choice.name == old.default and f"names none for {kind}" in choice.reason
    new = Manifest.model_validate({**shipped, "default": FP32, "defaults": {"cuda": FP16}})
    assert new.default_for("cuda").name == FP16 and "for cuda hosts" in new.default_for("cuda").reason
    assert new.default_for("cpu").name == FP32  # no cpu entry: the plain default
    with pytest.raises(ValidationError, match="default for cuda model 'nope' is not among the models"):
        Manifest.model_validate({**shipped, "defaults": {"cuda": "nope"}})
    with pytest.raises(ValidationError):
        Manifest.model_validate({**shipped, "defaults": {"tpu": FP16}})


def test_export_records_and_changes_the_per_device_defaults(tmp_path):
    from export.__main__ import main
    from export.record import record_entry
    from inference.manifest import ModelCard, load_manifest

    models = _models_dir(tmp_path, [INT8, FP32], INT8, None)
    card = ModelCard.model_validate(
        {k: v for k, v in _shipped()["models"][0].items() if k in ModelCard.model_fields} | {"name": "again"}
    )

    def listed(name: str) -> str:
        return next(m.sha256 for m in load_manifest(models).models if m.name == name)

    staged = tmp_path / "staged.onnx"  # what export verified, moved into place as it is recorded
    shutil.copyfile(models / f"{INT8}.onnx", staged)
    record_entry(card, staged, models / "again.onnx", models, make_default=False, default_for=["cuda"], replaces=None)
    assert (models / "again.onnx").is_file() and not staged.exists()
    manifest = load_manifest(models)
    assert (manifest.default, manifest.defaults) == (INT8, {"cuda": "again"})
    assert main(["default", FP32, "--for", "cpu", "--models-dir", str(models)]) == 0
    manifest = load_manifest(models)
    assert manifest.defaults == {"cuda": "again", "cpu": FP32} and manifest.default == INT8
    assert main(["default", "nope", "--for", "cuda", "--models-dir", str(models)]) == 2
    # re-recording a model keeps the other defaults
    shutil.copyfile(models / "again.onnx", staged)
    record_entry(card, staged, models / "again.onnx", models, make_default=False, replaces=listed("again"))
    assert load_manifest(models).defaults == {"cuda": "again", "cpu": FP32}
    # without --for, the default everywhere: the per-device defaults would otherwise still overrule it
    assert main(["default", INT8, "--models-dir", str(models)]) == 0
    manifest = load_manifest(models)
    assert manifest.defaults == {} and {manifest.default_for(k).name for k in ("cpu", "cuda")} == {INT8}
    shutil.copyfile(models / "again.onnx", staged)
    record_entry(card, staged, models / "again.onnx", models, False, ["cuda"], replaces=listed("again"))
    shutil.copyfile(models / "again.onnx", staged)
    record_entry(card, staged, models / "again.onnx", models, make_default=True, replaces=listed("again"))
    manifest = load_manifest(models)
    assert manifest.defaults == {} and {manifest.default_for(k).name for k in ("cpu", "cuda")} == {"again"}


def test_export_and_rederive_take_default_for(capsys):
    from export.parsers import export_parser, rederive_parser

    args = export_parser().parse_args(["--checkpoint", "x", "--name", "y", "--default-for", "cuda"])
    assert args.default_for == ["cuda"]
    args = rederive_parser().parse_args(["ref", "--name", "y", "--default-for", "cpu", "--default-for", "cuda"])
    assert args.default_for == ["cpu", "cuda"]
    with pytest.raises(SystemExit) as refused:
        rederive_parser().parse_args(["ref", "--name", "y", "--default-for", "tpu"])
    assert refused.value.code == 2 and "argument --default-for: invalid choice: 'tpu'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- placement
def test_the_placement_rule_refuses_under_cuda_and_falls_back_under_auto():
    from inference.runtime import CPU, CUDA, CudaPlacementError, decide_placement

    assert decide_placement("cpu", False, "m", None).provider == CPU
    on_gpu = decide_placement("cuda", True, "m", None, device_id=3)
    assert (on_gpu.provider, on_gpu.device_id, on_gpu.fallback) == (CUDA, 3, None)
    with pytest.raises(CudaPlacementError, match="model 'm' cannot run wholly on CUDA: no kernel") as refused:
        decide_placement("cuda", True, "m", "no kernel")
    assert refused.value.model == "m" and refused.value.reason == "no kernel"
    fallback = decide_placement("auto", True, "m", "no kernel")
    assert (fallback.provider, fallback.device_id, fallback.fallback) == (CPU, None, "no kernel")


def test_choose_default_takes_the_cpu_default_when_the_cuda_default_fell_back():
    from inference.manifest import Manifest
    from inference.runtime import CPU, CUDA, Placement, choose_default

    manifest = Manifest.model_validate(_shipped())
    assert choose_default(manifest, False, {}).name == INT8
    assert choose_default(manifest, True, {}).name == FP16
    assert choose_default(manifest, True, {FP16: Placement(CUDA, 0)}).name == FP16
    fell = choose_default(manifest, True, {FP16: Placement(CPU, fallback="3 nodes have no CUDA kernel")})
    assert fell.name == INT8 and FP16 in fell.reason and "3 nodes have no CUDA kernel" in fell.reason


class _StrictCudaRefuses(ort.InferenceSession):
    """Stands in for ``onnxruntime.InferenceSession``: a session that asks for CUDA without CPU fallback fails as
    ONNX Runtime fails it when a node has no CUDA kernel; every other session is real (on the CPU)."""

    created: list = []

    def __init__(self, path, sess_options=None, providers=None):
        from inference.runtime import CPU, CUDA

        names = [p[0] if isinstance(p, tuple) else p for p in providers or []]
        type(self).created.append(names)
        if names == [CUDA]:
            raise RuntimeError(
                "[ONNXRuntimeError] : 1 : FAIL : This session contains graph nodes that are assigned to the "
                "default CPU EP, but fallback to CPU EP has been explicitly disabled by the user."
            )
        assert names == [CPU], names
        super().__init__(path, sess_options=sess_options, providers=providers)


@pytest.fixture
def cuda_lacks_a_kernel(monkeypatch):
    """A 'GPU host' on which the CUDA provider exists but runs no QLinearConv: every strict CUDA session fails,
    and the profiling probe finds QLinearConv nodes on the CPU."""
    import inference.runtime as runtime

    _StrictCudaRefuses.created = []
    monkeypatch.setattr(runtime.ort, "InferenceSession", _StrictCudaRefuses)
    monkeypatch.setattr(runtime, "gpu_present", lambda: True)
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: [runtime.CUDA, runtime.CPU])
    monkeypatch.setattr(runtime, "preload_cuda", lambda: None)
    placed = [("QLinearConv", runtime.CPU)] * 2 + [("Conv", runtime.CUDA)] * 3 + [("Relu", runtime.CUDA)]
    monkeypatch.setattr(runtime, "node_providers", lambda path, providers: placed)
    return _StrictCudaRefuses


def test_a_model_with_a_node_cuda_cannot_run_is_refused_by_name_under_cuda(cuda_lacks_a_kernel):
    from inference.runtime import CudaPlacementError, OnnxClassifier

    with pytest.raises(CudaPlacementError) as refused:
        OnnxClassifier(MODELS / f"{INT8}.onnx", device="cuda", device_id=1)
    assert refused.value.model == INT8
    assert refused.value.reason == "2 of 6 nodes have no CUDA kernel and would run on the CPU (QLinearConv x2)"
    assert cuda_lacks_a_kernel.created == [["CUDAExecutionProvider"]]  # no CPU provider listed beside it


def test_the_same_model_is_served_on_the_cpu_with_the_reason_under_auto(cuda_lacks_a_kernel):
    from inference.runtime import CPU, OnnxClassifier

    model = OnnxClassifier(MODELS / f"{INT8}.onnx", device="auto")
    assert model.placement.provider == CPU and not model.on_gpu
    assert "QLinearConv x2" in model.placement.fallback
    assert model.logits(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, 10)


def test_strict_cuda_sessions_disable_cpu_fallback():
    from inference.runtime import DISABLE_CPU_FALLBACK, cuda_provider, session_options

    assert DISABLE_CPU_FALLBACK == "session.disable_cpu_ep_fallback"
    assert session_options(strict_cuda=True).get_session_config_entry(DISABLE_CPU_FALLBACK) == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # CPU sessions leave it unset
        session_options().get_session_config_entry(DISABLE_CPU_FALLBACK)
    assert cuda_provider(2) == ("CUDAExecutionProvider", {"device_id": "2", "cudnn_conv_algo_search": "HEURISTIC"})


@pytest.mark.skipif(not _no_gpu_here(), reason="a GPU is visible: CUDA would be created")
def test_on_a_host_without_a_gpu_onnx_runtime_really_refuses_cuda_without_fallback():
    """No mock: onnxruntime-gpu's CUDA provider cannot be created here, every node would land on the CPU, and the
    session option makes ONNX Runtime refuse the session."""
    import onnxruntime as ort

    from inference.runtime import CUDA, CudaPlacementError, OnnxClassifier

    if CUDA not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider")
    with pytest.raises(CudaPlacementError, match="could not create the CUDA provider"):
        OnnxClassifier(MODELS / f"{INT8}.onnx", device="cuda")


def test_the_placement_probe_reads_each_nodes_provider_from_the_profile():
    from inference.runtime import CPU, node_providers

    placed = node_providers(MODELS / f"{INT8}.onnx", [CPU])
    assert placed and {provider for _, provider in placed} == {CPU}
    assert "QLinearConv" in {op for op, _ in placed}  # the INT8 graph's convolutions, fused by the CPU provider


# ---------------------------------------------------------------------------------------------- the service
def _settings(models_dir: Path, device: str):
    from service.settings import ServiceSettings

    return ServiceSettings(models_dir=models_dir, device=device, max_batch_size=2)


def test_the_service_refuses_to_start_under_cuda_naming_the_model(cuda_lacks_a_kernel, tmp_path):
    from inference.runtime import CudaPlacementError
    from service.loading import load_models
    from service.workers import place_worker

    models = _models_dir(tmp_path, [INT8], INT8, None)
    with pytest.raises(CudaPlacementError, match=f"model '{INT8}' cannot run wholly on CUDA: 2 of 6 nodes"):
        load_models(_settings(models, "cuda"), place_worker(1, 1, 1, 2))


def test_models_lists_each_models_provider_and_the_default_here(cuda_lacks_a_kernel, tmp_path):
    from service.loading import load_models, model_list
    from service.workers import place_worker

    models = _models_dir(tmp_path, [INT8, FP32], FP32, {"cuda": FP32, "cpu": INT8})
    listed = model_list(load_models(_settings(models, "auto"), place_worker(1, 1, 1, 2)))
    # the CUDA default fell back to the CPU: the CPU default answers, and the reason says why
    assert listed.default == INT8 and listed.device == "cpu"
    assert FP32 in listed.default_reason and "no CUDA kernel" in listed.default_reason
    by_name = {m.name: m for m in listed.models}
    assert by_name[INT8].default and not by_name[FP32].default
    assert by_name[INT8].default_for == ["cpu"] and by_name[FP32].default_for == ["cuda"]
    assert {m.provider for m in listed.models} == {"CPUExecutionProvider"}
    assert all("QLinearConv x2" in m.fallback for m in listed.models)


def test_models_on_a_cpu_host_names_the_cpu_default_and_no_fallback(tmp_path):
    from service.loading import load_models, model_list
    from service.workers import place_worker

    models = _models_dir(tmp_path, [INT8, FP16], INT8, {"cpu": INT8, "cuda": FP16})
    listed = model_list(load_models(_settings(models, "cpu"), place_worker(None, 1, 0, 2)))
    assert (listed.default, listed.device) == (INT8, "cpu")
    assert listed.default_reason == "the manifest's default for cpu hosts"
    assert all(m.provider == "CPUExecutionProvider" and m.fallback is None for m in listed.models)


def test_the_service_runs_cpu_models_in_pieces_and_keeps_the_arena_as_asked(tmp_path):
    """Both memory settings reach every model's session: the run size (64 by default on the CPU) and the arena;
    and the threads the worker's cores give each stream, sleeping between batches."""
    from service.loading import load_models
    from service.settings import ServiceSettings
    from service.workers import place_worker

    models = _models_dir(tmp_path, [INT8, FP16], INT8, {"cpu": INT8, "cuda": FP16})
    for arena, run, expected in (("on", 0, 64), ("off", 3, 3)):
        settings = ServiceSettings(
            models_dir=models, device="cpu", max_batch_size=8, memory_arena=arena, max_run_images=run
        )
        worker = place_worker(None, 1, 0, 2)
        loaded = load_models(settings, worker)
        for model in loaded.models.values():
            assert model.classifier.max_run_images == expected
            options = model.classifier.session.get_session_options()
            assert options.enable_cpu_mem_arena is (arena == "on")
            assert options.intra_op_num_threads == settings.intra_op_threads(False, worker.cores)
            assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert ServiceSettings(max_run_images=0).run_images(on_gpu=True) is None  # a GPU keeps its whole batches
    assert ServiceSettings(max_run_images=16).run_images(on_gpu=True) == 16


def test_remove_takes_models_out_of_the_manifest_and_deletes_their_files_but_never_a_default(tmp_path, capsys):
    from export.__main__ import main
    from inference.manifest import load_manifest

    models = _models_dir(tmp_path, [INT8, FP32, FP16], INT8, {"cuda": FP16})
    for refused, said in (([INT8], "is a default model"), ([FP16], "is a default model"), (["nope"], "unknown")):
        assert main(["remove", *refused, "--models-dir", str(models)]) == 2
        assert said in capsys.readouterr().err
    assert main(["remove", FP32, FP32, "--models-dir", str(models)]) == 0
    manifest = load_manifest(models)  # the files left match the manifest (it verifies them)
    assert sorted(m.name for m in manifest.models) == sorted([INT8, FP16])
    assert (manifest.default, manifest.defaults) == (INT8, {"cuda": FP16})
    assert sorted(p.name for p in models.glob("*.onnx")) == sorted([f"{INT8}.onnx", f"{FP16}.onnx"])
    assert f" {FP32}.onnx" not in capsys.readouterr().out  # the list printed after it


def test_default_refuses_a_missing_or_altered_file_and_manifest_errors_are_one_line(tmp_path, capsys):
    from export.__main__ import main

    models = _models_dir(tmp_path, [INT8, FP32, FP16], INT8, None)
    (models / f"{FP16}.onnx").unlink()
    assert main(["default", FP16, "--for", "cuda", "--models-dir", str(models)]) == 2
    assert f"model {FP16!r}: file {models / f'{FP16}.onnx'} is missing" in capsys.readouterr().err
    (models / f"{FP32}.onnx").unlink()  # a hard link to the shipped file: replaced, never written through
    (models / f"{FP32}.onnx").write_bytes(b"x")
    assert main(["default", FP32, "--models-dir", str(models)]) == 2
    assert "does not match the manifest" in capsys.readouterr().err
    assert json.loads((models / "manifest.json").read_text())["default"] == INT8  # unchanged

    for text, said in (
        ("{}", "default: Field required; models: Field required"),
        ('{"schema_version": 1, "default": "x", "models": [', "Invalid JSON: EOF while parsing"),
        (b"\xff\xfe", "Invalid JSON"),
    ):
        (models / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        assert main(["list", "--models-dir", str(models)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: invalid manifest {models / 'manifest.json'}: {said}"), err
        assert len(err.strip().splitlines()) == 1 and "pydantic.dev" not in err, err


def test_the_doctor_runs_each_model_as_the_service_would(tmp_path, monkeypatch):
    from service import loading
    from service.doctor import diagnose
    from service.gpus import GpuReport
    from service.settings import ServiceSettings

    made = []
    real = loading.OnnxClassifier

    def recorded(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(loading, "OnnxClassifier", recorded)
    models = _models_dir(tmp_path, [INT8], INT8, None)
    settings = ServiceSettings(models_dir=models, device="cpu", memory_arena="off", max_run_images=5)
    report = diagnose("cpu", models, speed=False, gpus=GpuReport([], None), settings=settings)
    assert report.passed and made
    for model in made:
        assert model.max_run_images == 5 and model.session.get_session_options().enable_cpu_mem_arena is False


def test_a_batch_larger_than_a_run_is_run_in_pieces_with_the_same_answer(monkeypatch):
    from inference.runtime import OnnxClassifier

    whole = OnnxClassifier(MODELS / f"{INT8}.onnx", device="cpu")
    pieces = OnnxClassifier(MODELS / f"{INT8}.onnx", device="cpu", max_run_images=3)
    sizes = []
    run = pieces._run
    monkeypatch.setattr(pieces, "_run", lambda batch: sizes.append(len(batch)) or run(batch))
    images = np.random.default_rng(0).random((10, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(pieces.logits(images), whole.logits(images), rtol=1e-5, atol=1e-5)
    assert sizes == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="at least 1"):
        OnnxClassifier(MODELS / f"{INT8}.onnx", device="cpu", max_run_images=0)


# ---------------------------------------------------------------------------------------------- the scorer
def _score_args(models_dir: Path, device: str, model: str | None = None) -> Namespace:
    from inference.image_limits import DEFAULT_MAX_PIXELS

    return Namespace(
        url=None,
        models_dir=str(models_dir),
        model=model,
        device=device,
        threads=1,
        workers=0,
        batch_size=8,
        streams=1,
        fit=None,
        max_pixels=DEFAULT_MAX_PIXELS,
    )


def test_the_scorer_picks_the_default_of_its_device(tmp_path):
    from service.score.engines import ENGINES

    _open_backend = ENGINES["local"].open

    models = _models_dir(tmp_path, [INT8, FP32], INT8, {"cpu": FP32, "cuda": INT8})
    backend = _open_backend(_score_args(models, "cpu"))
    try:
        assert backend.name == FP32  # the CPU hosts' default, not the plain `default`
    finally:
        backend.close()


def test_the_scorer_falls_back_to_the_cpu_default_when_the_cuda_default_cannot_run_on_cuda(
    cuda_lacks_a_kernel, tmp_path, capsys
):
    from service.score.engines import ENGINES
    from service.score.errors import UserError

    _open_backend = ENGINES["local"].open

    models = _models_dir(tmp_path, [INT8, FP32], INT8, {"cpu": INT8, "cuda": FP32})
    backend = _open_backend(_score_args(models, "auto"))
    try:
        assert backend.name == INT8 and not backend.clf.on_gpu
    finally:
        backend.close()
    assert f"warning: scoring with {INT8}" in capsys.readouterr().err
    with pytest.raises(UserError, match=f"model '{FP32}' cannot run wholly on CUDA"):
        _open_backend(_score_args(models, "cuda"))


# ---------------------------------------------------------------------------------------------- workers and GPUs
@pytest.mark.parametrize(
    ("gpus", "workers", "cores", "expected"),
    [
        (4, 4, 16, [(0, 4), (1, 4), (2, 4), (3, 4)]),  # one worker per GPU, the cores split evenly
        (2, 4, 10, [(0, 3), (1, 3), (0, 2), (1, 2)]),  # more workers than GPUs: dealt round-robin
        (1, 1, 2, [(0, 2)]),
        (0, 2, 2, [(None, 1), (None, 1)]),  # a CPU host with two workers: one core each
        (3, 3, 2, [(0, 1), (1, 1), (2, 1)]),  # fewer cores than workers: never below one thread
    ],
)
def test_each_worker_gets_its_own_gpu_and_a_share_of_the_cores(gpus, workers, cores, expected):
    from service.workers import place_worker

    got = [place_worker(i, workers, gpus, cores) for i in range(1, workers + 1)]
    assert [(p.device_id, p.cores) for p in got] == expected
    assert [p.index for p in got] == list(range(1, workers + 1))


def test_worker_count_and_index_rules():
    from service.workers import place_worker, worker_count

    assert worker_count(0, 4) == 4 and worker_count(0, 0) == 1 and worker_count(3, 8) == 3
    assert place_worker(None, 1, 2, 8).device_id == 0  # outside a BentoML worker: the first
    with pytest.raises(ValueError, match="outside 1..2"):
        place_worker(3, 2, 2, 8)
    with pytest.raises(ValueError, match="at least 1"):
        place_worker(1, 0, 2, 8)


def test_cuda_visible_devices_picks_and_renumbers_the_gpus():
    from service.gpus import Gpu, visible

    host = [Gpu(i, "NVIDIA H200", f"GPU-{i}aaa-{i}", 139.8) for i in range(4)]
    assert [g.uuid for g in visible(host, {})] == [g.uuid for g in host]
    picked = visible(host, {"CUDA_VISIBLE_DEVICES": "2,0"})
    assert [(g.index, g.uuid) for g in picked] == [(0, "GPU-2aaa-2"), (1, "GPU-0aaa-0")]
    assert [g.uuid for g in visible(host, {"CUDA_VISIBLE_DEVICES": "GPU-3"})] == ["GPU-3aaa-3"]
    assert visible(host, {"CUDA_VISIBLE_DEVICES": ""}) == [] == visible(host, {"CUDA_VISIBLE_DEVICES": "-1"})
    assert [g.uuid for g in visible(host, {"CUDA_VISIBLE_DEVICES": "1,7,2"})] == ["GPU-1aaa-1"]  # stops at 7


def test_the_service_asks_bentoml_for_one_worker_per_gpu_and_pins_each(tmp_path):
    """The service module as BentoML's third worker imports it, on a faked host with four GPUs."""
    probe = (
        "import bentoml, inference.runtime as r, service.gpus as g\n"
        "r.gpu_present = lambda: True\n"
        "g.gpu_report = lambda environ=None: g.GpuReport([g.Gpu(i, 'fake', f'GPU-{i}', 80.0) for i in range(4)], "
        "'580.0')\n"
        "bentoml.server_context.worker_index = 3\n"
        "import service.service as s\n"
        "print(s.Classifier.config['workers'], s.Classifier.config['resources'], s.WORKER.device_id, s.WORKER.cores,"
        " s.STREAMS)\n"
    )
    env = {**os.environ, "CIFAR_MODELS_DIR": str(MODELS), "BENTOML_HOME": str(tmp_path / "home")}
    env.pop("CIFAR_WORKERS", None)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("4 {'gpu': 4} 2 "), line  # four workers, four GPUs asked for, the third on GPU 2
    from service.settings import cpu_count

    assert line.split()[-2:] == [str(max(1, cpu_count() // 4)), "2"]  # a quarter of the cores; 2 streams on a GPU


# ---------------------------------------------------------------------------------------------- doctor
def _doctor(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "doctor", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.mark.slow
def test_doctor_passes_for_auto_on_this_host_and_reports_each_model(tmp_path):
    models = _models_dir(tmp_path, [INT8, FP16], INT8, {"cpu": INT8, "cuda": FP16})
    done = _doctor("--device", "auto", "--models-dir", str(models))
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    out = done.stdout
    assert re.search(r"onnxruntime\s+1\.\d+", out) and "python" in out
    assert re.search(rf"default on cuda\s+{FP16}", out) and re.search(rf"default on cpu\s+{INT8}", out)
    for name in (INT8, FP16):
        assert re.search(rf"ok\s+model {name}\s+\w+, every node on CPUExecutionProvider", out), out
        rates = re.search(
            rf"model {name}\s+images/s on CPUExecutionProvider: batch 1: ([\d,]+), batch 256: ([\d,]+)", out
        )
        assert rates and all(float(r.replace(",", "")) > 0 for r in rates.groups()), out
    if _no_gpu_here():
        assert "no GPU visible to this process" in out
        assert re.search(rf"default here\s+{INT8} on the CPU", out)
    assert out.rstrip().endswith("--device auto: will work on this host")


@pytest.mark.skipif(not _no_gpu_here(), reason="a GPU is visible")
def test_doctor_fails_for_cuda_on_this_host_with_the_reason():
    done = _doctor("--device", "cuda", "--no-speed")
    assert done.returncode == 1, done.stdout + done.stderr[-2000:]
    verdict = done.stdout.rstrip().splitlines()[-1]
    assert verdict.startswith("--device cuda: will NOT work on this host: GPU: no GPU visible to this process")
    assert re.search(rf"FAIL model {INT8}\s+cannot run wholly on CUDA", done.stdout)
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(not _no_gpu_here(), reason="a GPU is visible")
def test_serve_under_cuda_on_a_host_without_one_says_why_in_its_own_lines_only(tiny_models_dir):
    """ONNX Runtime's own failed attempts (eight coloured lines, two per model) used to come before the reason."""
    argv = [sys.executable, "-m", "service", "serve", "--device", "cuda", "--models-dir", str(tiny_models_dir)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error: --device cuda, but model 'tiny'"), done.stderr
    assert len(done.stderr.splitlines()) == 2 and "onnxruntime" not in done.stderr, done.stderr


def test_doctor_checks_accuracy_on_a_labelled_folder(tmp_path, shared_archive):
    classes = _shipped()["models"][0]["classes"]
    folder = tmp_path / "labelled"
    wanted = re.compile(r"^cifar10/train/(\w+)/000[0-4]\.jpg$")
    with tarfile.open(shared_archive, "r:gz") as tar:
        for member in tar:
            match = wanted.match(member.name)
            if member.isfile() and match and match.group(1) in classes:
                (folder / match.group(1)).mkdir(parents=True, exist_ok=True)
                (folder / match.group(1) / Path(member.name).name).write_bytes(tar.extractfile(member).read())
    (folder / "not-a-class").mkdir()
    models = _models_dir(tmp_path, [INT8], INT8, None)
    done = _doctor("--device", "cpu", "--models-dir", str(models), "--folder", str(folder), "--no-speed")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "50 labelled images" in done.stdout
    accuracy = re.search(r"accuracy ([\d.]+)% on 50 images", done.stdout)
    assert accuracy and float(accuracy.group(1)) >= 70.0, done.stdout  # training images of a 91% model


def test_doctor_usage_errors_are_exit_2(tmp_path):
    done = _doctor("--models-dir", str(tmp_path), "--no-speed")
    assert done.returncode == 2 and "no model manifest" in done.stderr and "Traceback" not in done.stderr
    done = _doctor("--folder", str(tmp_path / "nope"), "--no-speed")
    assert done.returncode == 2 and "is not a folder" in done.stderr


def test_doctor_reads_the_services_own_settings(tmp_path):
    """What `serve` would refuse, the doctor refuses (exit 2, the same message); the models folder and device it
    checks are the service's CIFAR_MODELS_DIR and CIFAR_DEVICE unless given, not models/ and auto."""
    refused = {
        "CIFAR_MAX_BATCH_SIZE": ("abc", "CIFAR_MAX_BATCH_SIZE must be an integer, got 'abc'"),
        "CIFAR_DEVICE": ("gpu", "CIFAR_DEVICE must be one of"),
        "CIFAR_API_KEYS_FILE": (str(tmp_path / "nope"), f"CIFAR_API_KEYS_FILE {tmp_path / 'nope'}"),
    }
    for name, (value, message) in refused.items():
        done = _doctor("--no-speed", env={name: value})
        assert done.returncode == 2 and f"error: {message}" in done.stderr, (name, done.stderr[-2000:])
        assert "Traceback" not in done.stderr
    done = _doctor("--no-speed", env={"CIFAR_MODELS_DIR": str(tmp_path)})
    assert done.returncode == 2 and f"no model manifest at {tmp_path}" in done.stderr, done.stderr[-2000:]
    models = _models_dir(tmp_path, [INT8], INT8, None)
    done = _doctor("--no-speed", env={"CIFAR_MODELS_DIR": str(models), "CIFAR_DEVICE": "cpu"})
    assert done.returncode == 0 and done.stdout.rstrip().endswith("--device cpu: will work on this host"), done.stdout


def test_doctor_report_verdicts():
    from service.doctor_report import Report

    report = Report("cuda")
    report.add("ok", "manifest", "fine")
    report.add("warn", "model a", "on the CPU")
    assert report.passed and report.render().endswith("will work on this host (1 warning above)")
    report.add("fail", "GPU", "none")
    report.add("fail", "model a", "cannot run wholly on CUDA")
    assert not report.passed
    assert report.render().endswith("will NOT work on this host: GPU: none (and 1 more failure above)")


@pytest.mark.parametrize(("device", "status"), [("auto", "warn"), ("cuda", "fail")])
def test_doctor_names_a_cuda_library_that_does_not_load_on_a_gpu_host(monkeypatch, device, status):
    """A faked host: one GPU and a driver, cuDNN missing. Under auto the service would fall back to the CPU (a
    warning); under cuda it would refuse (a failure)."""
    from service import doctor_host
    from service.doctor_report import Report
    from service.gpus import Gpu, GpuReport

    def cdll(name):
        if name == "libcudnn.so.9":
            raise OSError("libcudnn.so.9: cannot open shared object file")
        return object()

    monkeypatch.setattr(doctor_host.ctypes, "CDLL", cdll)
    report = Report(device)
    gpus = GpuReport([Gpu(0, "NVIDIA H200", "GPU-0", 139.8)], "580.65.06")
    doctor_host.check_host(report, device, gpus, True, True, preload=lambda: None)
    found = {f.topic: f for f in report.findings}
    assert found["GPU 0"].status == "ok" and found["NVIDIA driver"].text == "580.65.06"
    libraries = found["CUDA libraries"]
    assert libraries.status == status and libraries.text.startswith("cannot load libcudnn.so.9")
    assert "libcudart" not in libraries.text
    assert report.passed == (device == "auto")


def _entry(size: tuple[int, int], fit: str):
    """What the doctor reads of a model card for --folder: its classes and its input."""
    from types import SimpleNamespace

    return SimpleNamespace(classes=["cat", "dog"], input=SimpleNamespace(size=size, fit=fit))


def test_doctor_reads_a_folder_at_each_models_size_and_fit(tmp_path):
    from PIL import Image

    from inference.preprocess import decode_image
    from service.doctor_folder import read_folder

    (tmp_path / "cat").mkdir()
    photo = Image.linear_gradient("L").resize((40, 20)).convert("RGB")
    photo.save(tmp_path / "cat" / "wide.png")
    data = (tmp_path / "cat" / "wide.png").read_bytes()
    images, labels, _ = read_folder(tmp_path, _entry((16, 24), "pad"), 10)
    assert images.shape == (1, 3, 16, 24) and labels.tolist() == [0]
    expected = decode_image(data, (16, 24), fit="pad").transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_allclose(images[0], expected, atol=1e-6)


def test_doctor_folder_without_a_readable_image_is_a_clear_error(tmp_path):
    from inference.manifest import ManifestError
    from service.doctor_folder import read_folder

    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.jpg").write_bytes(b"not an image")
    (tmp_path / "dog").mkdir()
    with pytest.raises(ManifestError, match="no readable image in the sub-folders named after a class"):
        read_folder(tmp_path, _entry((32, 32), "center_crop"), 10)
