"""ONNX Runtime sessions: the CUDA provider where a GPU is really there, the CPU provider otherwise.

Asking onnxruntime-gpu for CUDA on a host without a GPU (or without CUDA 13 /
cuDNN 9) makes it log errors and fall back; we only ask when a device is
visible, so CPU hosts start quietly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from .manifest import METADATA_KEY, ModelCard

Device = Literal["auto", "cpu", "cuda"]


def gpu_present() -> bool:
    """True when an NVIDIA driver and at least one device are visible to this process."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    return Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()


CUDA = "CUDAExecutionProvider"


def choose_providers(device: Device = "auto") -> list[str]:
    if device == "cuda" or (device == "auto" and gpu_present()):
        return [CUDA, "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def wants_cuda(device: Device = "auto") -> bool:
    """Whether sessions for ``device`` will ask for CUDA first (they may still fall back: see ``on_gpu``)."""
    return choose_providers(device)[0] == CUDA


def default_threads() -> int:
    """Intra-op threads: the cores this process may use (cgroup/affinity aware), not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def create_session(
    path: str | Path, device: Device = "auto", threads: int | None = None, spin: bool = True
) -> ort.InferenceSession:
    """``spin=False``: idle intra-op threads sleep instead of busy-waiting for the next run, which a
    server with gaps between batches needs: spinning threads take the cores its other work needs
    (docs/measurements.md, "ONNX Runtime sessions")."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # A memory pattern is traced on a shape's first run and only used from its third: without one, a
    # stream's second run is already as fast as later ones, and the steady state is no slower
    # (docs/measurements.md, "ONNX Runtime sessions").
    options.enable_mem_pattern = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: fallbacks we chose deliberately are not news
    return ort.InferenceSession(str(path), sess_options=options, providers=choose_providers(device))


def read_card(session_or_path: ort.InferenceSession | str | Path) -> ModelCard:
    """The ModelCard an exported file carries in its metadata_props."""
    session = (
        session_or_path
        if isinstance(session_or_path, ort.InferenceSession)
        else ort.InferenceSession(str(session_or_path), providers=["CPUExecutionProvider"])
    )
    props = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in props:
        raise ValueError(f"ONNX model has no {METADATA_KEY!r} metadata: it was not exported by this project")
    return ModelCard.model_validate(json.loads(props[METADATA_KEY]))


class OnnxClassifier:
    """An exported classifier: float32 [N, 3, H, W] in [0, 1] -> logits [N, C]."""

    def __init__(
        self, path: str | Path, device: Device = "auto", threads: int | None = None, spin: bool = True
    ) -> None:
        self.path = Path(path)
        self.session = create_session(self.path, device, threads, spin)
        self.card = read_card(self.session)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    @property
    def on_gpu(self) -> bool:
        return self.providers[0] == CUDA

    def logits(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return softmax(self.logits(batch).astype(np.float64))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and probabilities of the k most likely classes per row, most likely first."""
    k = min(k, probs.shape[1])
    idx = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(probs, idx, axis=1)
