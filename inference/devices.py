"""The devices a user asks for and the kinds of host a model is served on: one table each, imported by the
service's settings without the manifest's pydantic models."""

from __future__ import annotations

import argparse
import re
from typing import Literal, get_args

# What a user asks for: auto is CUDA when a GPU is visible (inference/runtime.py, ``wants_cuda``).
Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[Device, ...] = get_args(Device)


def gpu_hint(text: str) -> str:
    """For a GPU named by its number (``0``, ``cuda:1``, as training's --device takes it), how the service and the
    scorer are pointed at particular GPUs: they use the visible ones. Empty for anything else."""
    number = re.fullmatch(r"\s*(?:cuda:)?([0-9]+)\s*", text)
    if number is None:
        return ""
    index = int(number[1])
    return f"; for GPU {index} alone, set CUDA_VISIBLE_DEVICES={index} and use cuda"


def device_choice(text: str) -> Device:
    """An argparse type: one of ``DEVICES``, else argparse's own words for a wrong choice and the hint for a GPU
    named by its number."""
    for device in DEVICES:
        if text == device:
            return device
    choices = ", ".join(repr(d) for d in DEVICES)
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {choices}){gpu_hint(text)}")


# The most intra-op threads a session may be given (serve's and score's --threads too). ONNX Runtime starts them all
# as it opens each model, so a larger count stalls every model's load, and one near 2**31 fails with std::bad_alloc
# in every worker BentoML starts again.
THREADS_MAXIMUM = 1024

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
