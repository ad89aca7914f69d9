"""The devices a user asks for and the kinds of host a model is served on: one table each, imported by the
service's settings without the manifest's pydantic models."""

from __future__ import annotations

from typing import Literal, get_args

# What a user asks for: auto is CUDA when a GPU is visible (inference/runtime.py, ``wants_cuda``).
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)

# The kinds of device a model is served on: a CUDA session is a GPU host's, every other one a CPU host's.
DeviceKind = Literal["cpu", "cuda"]
DEVICE_KINDS: tuple[DeviceKind, ...] = get_args(DeviceKind)


class CudaPlacementError(RuntimeError):
    """``device="cuda"``, and a model cannot run wholly on CUDA here. Defined here, not beside the runtime that
    raises it, so that a command line can name it without importing ONNX Runtime at start-up."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"--device cuda, but model {model!r} cannot run wholly on CUDA: {reason}")
        self.model = model
        self.reason = reason
