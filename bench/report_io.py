"""Where every benchmark's JSON results go, and the description of the machine that made them: one writer and
one host record, so they all land the same way and every figure names its CPU."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path

from inference.runtime import default_threads

# The vector extensions that decide which kernels ONNX Runtime and PyTorch pick, best first.
VECTOR_EXTENSIONS = ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def write_json(path: str | Path, results: dict) -> None:
    """``results`` with the command line that made them, so that a figure can be measured again the same way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"command": command_line(), **results}, indent=2) + "\n")


def command_line() -> str:
    return shlex.join(["python", *sys.argv])


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The processor as /proc/cpuinfo names it, with its family/model numbers (a virtual machine often reports
    only 'AMD EPYC') and the best vector extension it has."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo) as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block describes them all
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    best = next((name for name in VECTOR_EXTENSIONS if name in flags), "no AVX2")
    return (
        f"{fields.get('model name', platform.machine())} (family {fields.get('cpu family', '?')} "
        f"model {fields.get('model', '?')}), best vector extension {best}"
    )


def host_record() -> dict:
    """What a result depends on besides the code: the CPU, the cores this process may use, and how busy the
    machine was (the load average when the measurement ended)."""
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cores": default_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_after": os.getloadavg(),
    }
