"""Write deploy/serving.lock: every package the serving install needs, at the version this .venv has.

The Bento's image installs exactly these (bentofile.yaml's requirements) and scripts/setup.sh constrains
every install to them, so an image built any day runs the versions the tests ran against. pip
resolves the closure (`pip install --dry-run --report`, nothing installed) from the project's base
requirements plus ONNX Runtime's CUDA 13 / cuDNN 9 extras, pinned to this environment's versions, and refuses
to write a pin this environment does not have (no test ran with it). For Linux x86-64 and CPython 3.11, the
image's. After changing or upgrading a serving dependency: install the new version into the full environment
without the lock (`.venv/bin/pip install -e ".[train,test,ray]" NAME==VERSION`), run the tests, then

    .venv/bin/python scripts/lock_serving.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "deploy" / "serving.lock"
PROJECT = "cifar-classifier"
# The serving closure as the image installs it: the project's base requirements, with the GPU wheels that the
# CPU-only test install does not otherwise ask for.
EXTRA_REQUIREMENTS = ("onnxruntime-gpu[cuda,cudnn]",)
HEADER = """\
# Every package the serving install needs, at one version: the Bento's requirements (bentofile.yaml), and what
# scripts/setup.sh constrains each install to, so the image runs what the tests ran. It includes the CUDA 13 +
# cuDNN 9 wheels onnxruntime-gpu 1.31.1's `cuda` and `cudnn` extras bring (nvidia-cuda-runtime, -cuda-nvrtc,
# -cufft, -curand, nvidia-cudnn-cu13 and the nvidia-cublas it pulls): the service loads them with
# onnxruntime.preload_dlls() when a GPU is visible; on a CPU host they sit unused. Linux x86-64, CPython 3.11.
# Written by scripts/lock_serving.py: do not edit by hand.
"""


def installed_versions() -> str:
    """This environment's packages as `name==version` lines, the project itself left out."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable", "--exclude", PROJECT],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return "".join(line + "\n" for line in frozen.splitlines() if "==" in line)


def resolve(constraints: Path, report: Path) -> list[tuple[str, str]]:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed"]
        + ["--report", str(report), "--constraint", str(constraints), *EXTRA_REQUIREMENTS, str(ROOT)],
        check=True,
    )
    chosen = json.loads(report.read_text())["install"]
    pins = {canonicalize_name(p["metadata"]["name"]): p["metadata"]["version"] for p in chosen}
    pins.pop(PROJECT)
    return sorted(pins.items())


def untested(pins: list[tuple[str, str]]) -> list[str]:
    """Pins this environment does not have at that version: pip chose them, no test ran with them."""
    found = []
    for name, version in pins:
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            found.append(f"{name}=={version} (installed: {installed or 'not at all'})")
    return found


def main() -> int:
    if sys.version_info[:2] != (3, 11) or platform.system() != "Linux" or platform.machine() != "x86_64":
        print("lock_serving: run it with CPython 3.11 on Linux x86-64, the image's platform", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "installed.txt"
        try:
            constraints.write_text(installed_versions())
            pins = resolve(constraints, Path(tmp) / "report.json")
        except subprocess.CalledProcessError as exc:
            # pip has said why above (most often: the package index, which resolving needs, is unreachable).
            print(
                f"lock_serving: not written: pip could not resolve the serving packages (exit {exc.returncode}, "
                "its error is above; resolving needs the package index)",
                file=sys.stderr,
            )
            return 1
    missing = untested(pins)
    if missing:
        print(
            "lock_serving: not written: the full environment (bash scripts/setup.sh) must hold every serving package "
            "at the version locked; these it does not: " + ", ".join(missing),
            file=sys.stderr,
        )
        return 1
    # Renamed into place: an interrupted write would leave setup.sh and the Bento a lock cut short.
    partial = LOCK.with_name(LOCK.name + ".partial")
    partial.write_text(HEADER + "".join(f"{name}=={version}\n" for name, version in pins))
    os.replace(partial, LOCK)
    print(f"{LOCK.relative_to(ROOT)}: {len(pins)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
