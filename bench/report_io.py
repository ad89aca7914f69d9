"""Where every benchmark's JSON results go, and the description of the machine and the code that made them: one
writer and one host record, so they all land the same way and every figure names its CPU, its command line,
its code revision and the versions of the libraries it ran on."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from inference.files import write_text_atomic
from inference.runtime import default_threads

ROOT = Path(__file__).resolve().parents[1]

# Where a measurement goes unless --out says otherwise: ignored by git, so that a run to see the figures never
# overwrites the committed ones in bench/results/ (those are published with an explicit --out).
DEFAULT_RESULTS = ROOT / ".cache" / "bench-results"

# The libraries whose version moves the figures (their kernels, decoders and HTTP stack), by distribution name.
PACKAGES = ("onnxruntime", "onnxruntime-gpu", "torch", "numpy", "pillow", "bentoml", "ray")

# Environment variables that change what is measured without showing on the command line: the thread counts
# the libraries read, the GPUs they see, and the service's settings (a server started by a benchmark inherits
# them). A name holding KEY is left out: the service's API keys are secrets.
ENVIRONMENT = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")

# The vector extensions that decide which kernels ONNX Runtime and PyTorch pick, best first.
VECTOR_EXTENSIONS = ("amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


def default_out(name: str) -> Path:
    return DEFAULT_RESULTS / f"{name}.json"


def write_json(path: str | Path, results: dict) -> None:
    """``results`` with the command line, the code and the host that made them, so that a figure can be measured
    again the same way; called as the measurements end, so that the host's load average is theirs. Written whole
    or not at all: a run stopped while writing leaves the previous results as they were."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": command_line(), "code": code_revision(), **results, "host": host_record()}
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def command_line() -> str:
    return shlex.join(["python", *sys.argv])


def code_revision(root: Path = ROOT) -> dict:
    """The commit the benchmark ran at and the files that differed from it (a figure measured on uncommitted code
    is not that commit's), untracked ones included; a revision of None outside a git checkout."""
    revision = _git(root, "rev-parse", "HEAD")
    if revision is None:
        return {"revision": None, "uncommitted": []}
    status = _git(root, "status", "--porcelain") or ""
    # each line is two status letters, a space and the path
    return {"revision": revision.strip(), "uncommitted": [line[3:] for line in status.splitlines()]}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):  # no git on this machine
        return None
    return done.stdout if done.returncode == 0 else None


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
    """What a result depends on besides the code: the CPU, the cores this process may use, the libraries and the
    environment it ran with, and how busy the machine was (the load average when the measurement ended)."""
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cores": default_threads(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": package_versions(),
        "environment": measured_environment(),
        "load_average_after": os.getloadavg(),
    }


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """The installed version of each of ``packages`` (read from their metadata, nothing imported); one not
    installed is left out."""
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def measured_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    return {
        name: value
        for name, value in sorted(environ.items())
        if name in ENVIRONMENT or (name.startswith("CIFAR_") and "KEY" not in name)
    }
