"""ONNX Runtime sessions: wholly on CUDA where a GPU is really there, on the CPU otherwise; never half and half.

Asking onnxruntime-gpu for CUDA on a host without a GPU (or without CUDA 13 / cuDNN 9) makes it log errors
and fall back; we only ask when a device is visible, so CPU hosts start quietly.

A CUDA session is created with the CPU fallback of compute nodes disabled: ONNX Runtime otherwise runs every
node the CUDA provider has no kernel for on the CPU, with copies to and fro, and says nothing (onnxruntime
issues #12229 and #24807: QLinearConv of INT8 graphs). A model that cannot run wholly on CUDA is refused under
``device="cuda"`` and served on the CPU, with the reason, under ``"auto"`` (``decide_placement``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import onnxruntime as ort
from pydantic import ValidationError

from .devices import DEVICES, THREADS_MAXIMUM, CudaPlacementError, Device, DeviceKind
from .errors import UsageError
from .image_limits import whole_number
from .manifest import METADATA_KEY, DefaultChoice, Manifest, ModelCard
from .messages import exception_summary, validation_problems
from .preprocess import in_unit_range

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# ONNX Runtime's session option (onnxruntime_session_options_config_keys.h): fail session creation when any node
# would run on the CPU provider. With it, the CPU provider must not be listed explicitly: ONNX Runtime adds it
# itself for the nodes it is allowed to hold (none) and refuses the explicit listing as a conflict.
DISABLE_CPU_FALLBACK = "session.disable_cpu_ep_fallback"

log = logging.getLogger("inference.runtime")


def gpu_present() -> bool:
    """True when an NVIDIA driver and at least one device are visible to this process."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if CUDA not in ort.get_available_providers():
        return False
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


def wants_cuda(device: Device = "auto") -> bool:
    """Whether sessions for ``device`` ask for CUDA (a model may still end up on the CPU: ``Placement``)."""
    if device not in DEVICES:  # "gpu" or "cuda:0" would otherwise run on the CPU without a word
        raise UsageError(f"unknown device {device!r}; valid: {', '.join(DEVICES)} (a GPU's index is device_id)")
    return device == "cuda" or (device == "auto" and gpu_present())


def device_kind(device: Device = "auto") -> DeviceKind:
    """The kind of host ``device`` means here, which picks the manifest's default model."""
    return "cuda" if wants_cuda(device) else "cpu"


def default_threads() -> int:
    """Intra-op threads: the cores this process may use (cgroup/affinity aware), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class ModelFileError(UsageError):
    """ONNX Runtime cannot load the file on the CPU: not ONNX, truncated, or made of operators it lacks."""


MODEL_FILE_OF_A_NAME = "MODELS_DIR / load_manifest(MODELS_DIR).get(NAME).file"


def check_model_file(path: Path) -> None:
    """A ModelFileError for a path that is no file: ONNX Runtime's own words for a missing one, or a folder, are
    "not an ONNX model ... Protobuf parsing failed", and under ``device="cuda"`` "cannot run wholly on CUDA"."""
    if path.is_file():
        return
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not an ONNX model file")
    if path.exists():
        raise ModelFileError(f"{path} is not a regular file (a device or a pipe), not an ONNX model file")
    # a model's name where its file belongs is the likely slip: the manifest maps one to the other
    named = (
        "" if path.suffix else " (a model's name? its file is MODELS_DIR / load_manifest(MODELS_DIR).get(NAME).file)"
    )
    raise ModelFileError(f"no ONNX model at {path}{named}")


@dataclass(frozen=True)
class Placement:
    """Where one model's session runs."""

    provider: str  # the ONNX Runtime provider that runs every node
    device_id: int | None = None  # the CUDA device (an index among the visible ones); None on the CPU
    fallback: str | None = None  # why a model meant for CUDA runs on the CPU instead; None when it runs where asked

    @property
    def on_gpu(self) -> bool:
        return self.provider == CUDA

    def describe(self) -> str:
        return f"{self.provider} (GPU {self.device_id})" if self.on_gpu else self.provider


def decide_placement(
    device: Device, cuda_wanted: bool, model: str, cuda_failure: str | None, device_id: int = 0
) -> Placement:
    """Where ``model`` runs, given the device asked for, whether CUDA was tried, and why a CUDA session that
    may not fall back to the CPU could not be created (None: it was). ``cuda`` refuses; ``auto`` serves it
    on the CPU and says why."""
    if not cuda_wanted:
        return Placement(CPU)
    if cuda_failure is None:
        return Placement(CUDA, device_id)
    if device == "cuda":
        raise CudaPlacementError(model, cuda_failure)
    return Placement(CPU, fallback=cuda_failure)


def choose_default(manifest: Manifest, cuda_wanted: bool, placed: Mapping[str, Placement]) -> DefaultChoice:
    """The default model here, for the service and the scorer alike: the manifest's default for the kind of host
    the models run on (``Manifest.default_for``); on a GPU host whose CUDA default had to fall back to the CPU
    (``placed`` holds the models placed so far), the CPU hosts' default instead."""
    if not cuda_wanted:
        return manifest.default_for("cpu")
    choice = manifest.default_for("cuda")
    where = placed.get(choice.name)
    if where is None or where.on_gpu:
        return choice
    cpu = manifest.default_for("cpu")
    return DefaultChoice(
        name=cpu.name, reason=f"{cpu.reason}, as {choice.name} ({choice.reason}) cannot run on CUDA: {where.fallback}"
    )


@dataclass(frozen=True)
class SessionSettings:
    """How a session runs, wherever it is placed.

    ``threads``: intra-op threads (None: every core this process may use). ``spin=False``: idle intra-op
    threads sleep instead of busy-waiting for the next run, which a server with gaps between batches needs:
    spinning threads take the cores its other work needs (docs/measurements.md, "ONNX Runtime sessions").
    ``memory_arena=False``: a run's CPU buffers go back to the system when it ends; ONNX Runtime's arena
    otherwise keeps the largest run's for good, which for a server of several models is GiBs held for their
    rare full batches (docs/measurements.md, "Service memory")."""

    threads: int | None = None
    spin: bool = True
    memory_arena: bool = True

    def __post_init__(self) -> None:
        # ONNX Runtime takes a negative count without a word, refuses a string in a many-line TypeError, and
        # spends minutes starting thousands of threads as each model opens
        if self.threads is None:
            return
        threads = whole_number(self.threads)
        if threads is None or not 1 <= threads <= THREADS_MAXIMUM:
            raise UsageError(
                f"threads must be a whole number from 1 to {THREADS_MAXIMUM} (None: every core this process may "
                f"use), got {self.threads!r}"
            )


DEFAULT_SESSION = SessionSettings()  # frozen: one shared default


def session_options(settings: SessionSettings = DEFAULT_SESSION, strict_cuda: bool = False) -> ort.SessionOptions:
    """ONNX Runtime's options for ``settings``; ``strict_cuda``: no node may fall back to the CPU."""
    options = ort.SessionOptions()
    options.enable_cpu_mem_arena = settings.memory_arena
    options.intra_op_num_threads = settings.threads or default_threads()
    options.inter_op_num_threads = 1
    if not settings.spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if strict_cuda:
        options.add_session_config_entry(DISABLE_CPU_FALLBACK, "1")
    # A memory pattern is traced on a shape's first run and only used from its third: without one, a
    # stream's second run is already as fast as later ones, and the steady state is no slower
    # (docs/measurements.md, "ONNX Runtime sessions").
    options.enable_mem_pattern = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: fallbacks we chose deliberately are not news
    if strict_cuda:
        options.log_severity_level = 4  # a refusal is explained by ``explain_cuda_failure``, and raised
    return options


def cuda_provider(device_id: int = 0) -> tuple[str, dict[str, str]]:
    # Adaptive batching sends every batch size from 1 to the maximum; cuDNN's exhaustive search (the default)
    # benchmarks the convolutions again for each new shape, in the request's path. Not measured: no GPU here.
    return CUDA, {"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC"}


_preloaded = False


def preload_cuda() -> str | None:
    """Load the pip-installed CUDA 13 / cuDNN 9 libraries (nvidia-* wheels) before the first CUDA session, once;
    the error, when ONNX Runtime could not (the system's libraries may still be found)."""
    global _preloaded
    if _preloaded:
        return None
    _preloaded = True
    try:
        ort.preload_dlls()
    except Exception as exc:  # whatever the loader raised: the caller reports it, the session says the rest
        log.warning("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA libraries", exc)
        return str(exc)
    return None


def model_source(path: Path) -> str | bytes:
    """What ONNX Runtime is given to load ``path``: its name, or the file's bytes where the name is not UTF-8
    text. Python holds such a name's other bytes as surrogate escapes, which ONNX Runtime's binding cannot
    encode: it refuses the name with a TypeError. (The bytes lose the folder an external-data model's
    weights are read from; this project's exports keep their weights inside.)"""
    name = str(path)
    try:
        name.encode()
    except UnicodeEncodeError:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return name


def open_session(
    path: str | Path, device: Device = "auto", settings: SessionSettings = DEFAULT_SESSION, device_id: int = 0
) -> tuple[ort.InferenceSession, Placement]:
    """A session for ``path`` and where it runs: wholly on CUDA device ``device_id`` when ``device`` asks for
    CUDA and the model can run there, on the CPU otherwise (``decide_placement``)."""
    path = Path(path)
    cuda_wanted = wants_cuda(device)
    failure = None
    if cuda_wanted:
        check_model_file(path)  # not ONNX Runtime's "cannot run wholly on CUDA" (cpu_session checks its own)
        preload_cuda()
        try:
            session = ort.InferenceSession(
                model_source(path),
                sess_options=session_options(settings, strict_cuda=True),
                providers=[cuda_provider(device_id)],
            )
        except Exception as exc:  # ONNX Runtime's Fail / InvalidArgument / RuntimeException share only Exception
            failure = explain_cuda_failure(path, str(exc), device_id)
    placement = decide_placement(device, cuda_wanted, path.stem, failure, device_id)
    if not placement.on_gpu:
        session = cpu_session(path, session_options(settings))
    return session, placement


def cpu_session(path: Path, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """A CPU session for ``path``; a ModelFileError for a file ONNX Runtime cannot load."""
    check_model_file(path)
    try:
        return ort.InferenceSession(model_source(path), sess_options=options, providers=[CPU])
    except Exception as exc:  # ONNX Runtime's error types share only Exception
        if not type(exc).__module__.startswith("onnxruntime"):
            raise
        raise ModelFileError(f"{path} is not an ONNX model ONNX Runtime can load ({exception_summary(exc)})") from exc


def explain_cuda_failure(path: Path, error: str, device_id: int = 0) -> str:
    """Why a session that may not fall back to the CPU failed: no CUDA provider here, or the nodes (by op type)
    that CUDA has no kernel for, found by running the model once with fallback allowed and profiling on."""
    if CUDA not in ort.get_available_providers():
        return "this ONNX Runtime build has no CUDA provider (install onnxruntime-gpu)"
    try:
        placed = node_providers(path, [cuda_provider(device_id), CPU])
    except Exception as exc:  # the probe itself failed: ONNX Runtime's first answer is the best there is
        return f"{error} (probing the placement failed too: {exc})"
    if placed is None:
        return (
            "ONNX Runtime could not create the CUDA provider: no GPU visible, or the driver or the CUDA 13 / "
            "cuDNN 9 libraries are missing"
        )
    on_cpu = Counter(op for op, provider in placed if provider == CPU)
    if not on_cpu:
        return error
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(on_cpu.items()))
    return f"{sum(on_cpu.values())} of {len(placed)} nodes have no CUDA kernel and would run on the CPU ({ops})"


def node_providers(path: str | Path, providers: list) -> list[tuple[str, str]] | None:
    """(op type, provider) of every node ONNX Runtime ran in one batch-1 run of ``path`` with ``providers``
    (fallback allowed), from its profile; None when the first provider asked for could not be created."""
    first = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
    with tempfile.TemporaryDirectory() as tmp:
        options = session_options(SessionSettings(threads=1))
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "placement")
        session = ort.InferenceSession(model_source(Path(path)), sess_options=options, providers=providers)
        if session.get_providers()[0] != first:
            return None
        inp = session.get_inputs()[0]
        shape = [1, *(d if isinstance(d, int) else 1 for d in inp.shape[1:])]
        session.run(None, {inp.name: np.zeros(shape, dtype=np.float32)})
        events = json.loads(Path(session.end_profiling()).read_text())
    return [
        (e["args"]["op_name"], e["args"]["provider"])
        for e in events
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and "provider" in e.get("args", {})
    ]


def read_card(session_or_path: ort.InferenceSession | str | Path) -> ModelCard:
    """The ModelCard an exported file carries in its metadata_props."""
    session = (
        session_or_path if isinstance(session_or_path, ort.InferenceSession) else cpu_session(Path(session_or_path))
    )
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise UsageError(f"ONNX model has no {METADATA_KEY!r} metadata: it was not exported by this project")
    try:
        return ModelCard.model_validate_json(props[METADATA_KEY])
    except ValidationError as exc:  # bad JSON too; a card of a newer version's schema is the likely one
        raise UsageError(
            f"ONNX model's {METADATA_KEY!r} metadata is not a model card this version reads "
            f"({validation_problems(exc)}): export it again with this version, or serve it with the one that did"
        ) from None


class OnnxClassifier:
    """An exported classifier: float32 [N, 3, H, W] in [0, 1] -> logits [N, C]. ``placement`` says where it runs.

    ``max_run_images``: a larger batch is run in pieces of at most this many images. ONNX Runtime's memory
    arena keeps the buffers of the largest run for good, so this bounds what each model holds; on the CPU
    pieces of 64 run as fast as whole batches of 256 (docs/measurements.md, "Service memory")."""

    def __init__(
        self,
        path: str | Path,
        device: Device = "auto",
        settings: SessionSettings = DEFAULT_SESSION,
        device_id: int = 0,
        max_run_images: int | None = None,
    ) -> None:
        if max_run_images is not None and not (whole_number(max_run_images) or 0) >= 1:
            raise UsageError(
                f"max_run_images must be a whole number of at least 1 (None: no limit), got {max_run_images!r}"
            )
        self.path = Path(path)
        self.max_run_images = max_run_images
        self.session, self.placement = open_session(self.path, device, settings, device_id)
        self.card = read_card(self.session)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def on_gpu(self) -> bool:
        return self.placement.on_gpu

    def logits(self, batch: np.ndarray) -> np.ndarray:
        batch = self._checked(batch)
        step = self.max_run_images
        if step is None or len(batch) <= step:
            return self._run(batch)
        return np.concatenate([self._run(batch[start : start + step]) for start in range(0, len(batch), step)])

    def _checked(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as float32; a UsageError for what the model would misread or ONNX Runtime refuse unexplained."""
        batch = np.asarray(batch)
        expected = (3, *self.card.input.size)
        takes = f"{self.card.name} takes float32 [N, {', '.join(map(str, expected))}] in [0, 1]"
        made = "inference.preprocess.to_model_input makes it from uint8 [H, W, 3] images"
        # uint8 pixels would be read as 0-255 where the model takes 0-1: confident, wrong answers
        if batch.dtype.kind != "f" or batch.ndim != 4 or batch.shape[1:] != expected:
            raise UsageError(f"{takes}, got {batch.dtype} {list(batch.shape)}: {made}")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        # Floats of 0-255, or normalised ones (the graph normalises itself), would be answered with confident
        # classes, and NaN with some class too; min and max carry a NaN along.
        if not in_unit_range(batch):
            low, high = float(batch.min()), float(batch.max())
            got = "NaN" if np.isnan(low) or np.isnan(high) else f"values from {low:g} to {high:g}"
            raise UsageError(f"{takes} (pixel / 255; the graph normalises them itself), got {got}: {made}")
        return batch

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return softmax(self.logits(batch).astype(np.float64))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the k most likely classes per row, most likely first (all of them for a k
    past their count)."""
    count = whole_number(k)
    if count is None:
        raise UsageError(f"k must be a whole number of at least 1, got {k!r}")
    if count < 1:  # a negative k would slice off the least likely classes and answer the rest
        raise UsageError(f"k must be at least 1, got {k}")
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise UsageError(
            f"top_k takes probabilities [N, classes], one row an image, got shape {list(probs.shape)}"
            + (": one image's are probs[None]" if probs.ndim == 1 else "")
        )
    idx = np.argsort(-probs, axis=1, kind="stable")[:, : min(count, probs.shape[1])]
    return idx, np.take_along_axis(probs, idx, axis=1)
