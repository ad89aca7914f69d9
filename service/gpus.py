"""The NVIDIA GPUs this process may use, and the driver, read through NVML (``pynvml``, which BentoML installs).

NVML lists every device of the host (or, in a container, every device the runtime mounted); CUDA then shows
this process only those ``CUDA_VISIBLE_DEVICES`` names, renumbered from 0. ``visible_gpus`` applies the same
rule, so a GPU's ``index`` here is the ``device_id`` ONNX Runtime's CUDA provider takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


@dataclass(frozen=True)
class Gpu:
    index: int  # among the visible devices: the CUDA device id
    name: str
    uuid: str
    memory_gib: float


@dataclass(frozen=True)
class GpuReport:
    gpus: list[Gpu]
    driver: str | None  # the NVIDIA driver version, when NVML or /proc shows it
    problem: str | None = None  # why NVML could not list devices (no driver, no library); None when it could


def visible(devices: list[Gpu], environ: Mapping[str, str] | None = None) -> list[Gpu]:
    """The devices CUDA shows this process, renumbered, following ``CUDA_VISIBLE_DEVICES``: unset, all of them;
    empty or -1, none; otherwise indices or UUID prefixes, in the order given, up to the first that matches
    nothing (as CUDA reads it)."""
    environ = os.environ if environ is None else environ
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        chosen = list(devices)
    else:
        chosen = []
        for token in (t.strip() for t in spec.split(",")):
            match = _find(devices, token)
            if match is None or match in chosen:
                break
            chosen.append(match)
    return [Gpu(i, d.name, d.uuid, d.memory_gib) for i, d in enumerate(chosen)]


def _find(devices: list[Gpu], token: str) -> Gpu | None:
    if token.lstrip("-").isdigit():
        index = int(token)
        return devices[index] if 0 <= index < len(devices) else None
    if token.startswith(("GPU-", "MIG-")):
        matches = [d for d in devices if d.uuid.startswith(token)]
        return matches[0] if len(matches) == 1 else None
    return None


def gpu_report(environ: Mapping[str, str] | None = None) -> GpuReport:
    """The visible GPUs and the driver version; an empty list, with the reason, where NVML cannot be used."""
    try:
        import pynvml
    except ImportError:
        return GpuReport([], _proc_driver(), "pynvml (nvidia-ml-py) is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuReport([], _proc_driver(), f"NVML: {exc} (no NVIDIA driver visible to this process)")
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**30
            devices.append(
                Gpu(i, _text(pynvml.nvmlDeviceGetName(handle)), _text(pynvml.nvmlDeviceGetUUID(handle)), memory)
            )
        return GpuReport(visible(devices, environ), driver)
    except pynvml.NVMLError as exc:
        return GpuReport([], _proc_driver(), f"NVML: {exc}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _proc_driver() -> str | None:
    """The kernel module's version line, where NVML is missing but the driver is loaded."""
    try:
        first = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    words = first.split()
    return next((w for w in words if w[:1].isdigit() and "." in w), first)
