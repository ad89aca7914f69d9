"""The doctor's look at the host itself: GPUs, the NVIDIA driver, ONNX Runtime's CUDA provider and the CUDA 13 /
cuDNN 9 libraries it loads.

These are the failures no model check can explain in its own words (a model "cannot run on CUDA" because cuDNN
is missing), so they are found and named first, each as fatal as ``--device`` makes it.
"""

from __future__ import annotations

import ctypes

from inference.devices import Device

from .doctor_report import Report, Status
from .gpus import GpuReport

# The shared objects onnxruntime-gpu 1.31's CUDA provider loads, by soname: the driver's own library, then the
# CUDA 13 runtime, cuBLAS and cuDNN 9 (from the nvidia-* wheels once onnxruntime.preload_dlls() has run).
CUDA_LIBRARIES = ("libcuda.so.1", "libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcudnn.so.9")


def check_host(report: Report, device: Device, gpus: GpuReport, has_cuda_ep: bool, cuda_wanted: bool, preload) -> None:
    # Missing CUDA pieces: fatal for --device cuda; for auto a warning where a GPU is there to be used, else a fact.
    need: Status = "fail" if device == "cuda" else ("warn" if gpus.gpus and device == "auto" else "info")
    if gpus.gpus:
        for gpu in gpus.gpus:
            report.add("ok", f"GPU {gpu.index}", f"{gpu.name}, {gpu.memory_gib:.0f} GiB ({gpu.uuid})")
    else:
        report.add(need, "GPU", f"no GPU visible to this process ({gpus.problem or 'NVML lists none'})")
    report.add("info" if gpus.driver else need, "NVIDIA driver", gpus.driver or "not visible")
    if not has_cuda_ep:
        report.add(need, "CUDA provider", "this ONNX Runtime has none (install onnxruntime-gpu)")
        return
    if not (gpus.gpus or device == "cuda"):
        report.add("info", "CUDA libraries", "not checked: no GPU to use them")
        return
    failed = preload()
    if failed:
        report.add("warn", "preload_dlls", f"onnxruntime.preload_dlls() failed: {failed}")
    missing = []
    for name in CUDA_LIBRARIES:
        try:
            ctypes.CDLL(name)
        except OSError as exc:
            missing.append(f"{name} ({exc})")
    if missing:
        report.add(need, "CUDA libraries", "cannot load " + "; ".join(missing))
    else:
        report.add("ok", "CUDA libraries", f"loaded: {', '.join(CUDA_LIBRARIES)}")
    if cuda_wanted:
        report.add("info", "sessions", "CUDA, with CPU fallback of nodes disabled (session.disable_cpu_ep_fallback)")
