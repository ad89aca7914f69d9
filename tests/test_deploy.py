"""What ships to a GPU host, checked without one: the Kubernetes and Compose manifests under deploy/ (validated
by kubernetes-validate and docker-compose) and the container recipe `bentoml build` generates."""

from __future__ import annotations

import copy
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
COMPOSE = DEPLOY / "compose.yaml"
LOCK = DEPLOY / "serving.lock"
# The oldest Kubernetes the manifests are checked against, besides kubernetes-validate's newest.
OLDEST_KUBERNETES = "1.29.0"
# The Bento beside its models (code, the page, the environment description): under 1 MiB today. The models are
# bounded by the repository's own rule (test_shipped_models: models/ under 100 MiB, no file over 50 MiB).
BENTO_CODE_LIMIT_MIB = 5
IMAGE_USER_UID = 1034  # BentoML's Dockerfile: user bentoml


def _documents() -> dict[str, dict]:
    docs = {}
    for path in KUBERNETES:
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def _container(deployment: dict) -> dict:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


# ---------------------------------------------------------------------------------------------- Kubernetes
def test_kubernetes_manifests_pass_strict_schema_validation():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    assert {"Deployment", "Service"} <= set(_documents())
    for version in (kubernetes_validate.latest_version(), OLDEST_KUBERNETES):
        for doc in _documents().values():
            kubernetes_validate.validate(doc, version, strict=True)
    # strict: a misspelt field fails, so the check above can fail
    broken = copy.deepcopy(_documents()["Deployment"])
    _container(broken)["livenesProbe"] = _container(broken).pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_the_deployment_asks_for_a_gpu_probes_health_and_runs_locked_down():
    from service.settings import ServiceSettings

    docs = _documents()
    pod = docs["Deployment"]["spec"]["template"]
    container = _container(docs["Deployment"])
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == 1
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"]) == "3000"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["CIFAR_DEVICE"] == "cuda" and env["BENTOML_HOME"].startswith("/tmp/")
    # No CPU limit, so the pod sees every core of the node: its threads are sized to the cores it asks for.
    assert "cpu" not in resources["limits"] and int(env["CIFAR_DECODE_THREADS"]) == int(resources["requests"]["cpu"])
    assert int(env["CIFAR_THREADS"]) <= int(resources["requests"]["cpu"])
    if container["image"].endswith(":latest"):
        assert container["imagePullPolicy"] == "Always"  # a re-pushed :latest must not be shadowed by a stale copy
    # graceful termination outlasts the preStop pause plus the longest request, itself longer than a batch window
    defaults = ServiceSettings()
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace > pause + defaults.timeout_s and defaults.timeout_s > defaults.max_latency_ms / 1000
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == IMAGE_USER_UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/tmp" in mounts  # BENTOML_HOME and Python's temporary files: the one writable place
    service = docs["Service"]
    assert service["spec"]["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


# ---------------------------------------------------------------------------------------------- Compose
def _compose_config(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker-compose", "-f", str(path), "config", "-q"], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (Debian's docker-compose package; .ci/run installs it with apt-get)",
)
def test_compose_file_passes_docker_compose_config(tmp_path):
    done = _compose_config(COMPOSE)
    assert done.returncode == 0, done.stderr
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["classifier"]["deploy"]["resources"]["reservations"]["device"] = [{"driver": "nvidia"}]
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    done = _compose_config(tmp_path / "compose.yaml")
    assert done.returncode != 0 and "device" in done.stderr  # the schema check can fail


def test_compose_reserves_the_gpus_and_runs_locked_down():
    from service.settings import ServiceSettings

    service = yaml.safe_load(COMPOSE.read_text())["services"]["classifier"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == "all"
    assert service["environment"]["CIFAR_DEVICE"] == "cuda"
    assert service["read_only"] is True and "/tmp" in service["tmpfs"]
    assert service["user"].split(":")[0] == str(IMAGE_USER_UID)
    assert int(service["stop_grace_period"].rstrip("s")) > ServiceSettings().timeout_s
    assert "/readyz" in " ".join(service["healthcheck"]["test"])


# ---------------------------------------------------------------------------------------------- the container recipe
@pytest.fixture(scope="module")
def bento(tmp_path_factory) -> Path:
    """`bentoml build` into a throw-away BENTOML_HOME (a few seconds: nothing is downloaded)."""
    import os

    home = tmp_path_factory.mktemp("bentoml_home")
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (built,) = [p for p in (home / "bentos" / "cifar_classifier").iterdir() if p.name != "latest"]
    return built


def test_the_bento_packs_the_service_code_and_the_models_only(bento):
    src = bento / "src"
    files = {p.relative_to(src) for p in src.rglob("*") if p.is_file()}
    assert {f.parts[0] for f in files} == {"inference", "service", "models", "bentofile.yaml"}
    static = {f for f in files if f.parts[:2] == ("service", "static")}  # the page at / (no build step)
    assert static == {Path("service/static") / p.name for p in (ROOT / "service" / "static").iterdir() if p.is_file()}
    assert static and all(f.suffix == ".py" for f in files - static if f.parts[0] in ("inference", "service"))
    assert not any("__pycache__" in f.parts for f in files)
    manifest = yaml.safe_load((ROOT / "models" / "manifest.json").read_text())
    shipped = {Path("models") / m["file"] for m in manifest["models"]} | {Path("models/manifest.json")}
    assert {f for f in files if f.parts[0] == "models"} == shipped | {Path("models/README.md")}
    code = sum(p.stat().st_size for p in bento.rglob("*") if p.is_file() and not p.is_relative_to(src / "models"))
    assert code < BENTO_CODE_LIMIT_MIB * 2**20, f"the Bento without its models is {code / 2**20:.1f} MiB"
    described = yaml.safe_load((bento / "bento.yaml").read_text())
    assert described["service"] == "service.service:Classifier"


def _pins(text: str) -> dict[str, str]:
    """`name==version` lines (comments and blank lines skipped) as {canonical name: version}; any other line
    fails: the Bento and the lock hold exact versions only."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==" and not requirement.extras and not requirement.marker, line
            pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def test_the_bento_installs_the_lock_exactly_with_cuda_13_and_cudnn_9_and_no_torch(bento):
    pins = _pins((bento / "env" / "python" / "requirements.txt").read_text())
    assert pins == {**_pins(LOCK.read_text()), "bentoml": metadata.version("bentoml")}  # bentoml: added by the build
    assert pins["onnxruntime-gpu"] == "1.31.1" and "onnxruntime" not in pins  # not the CPU-only wheel too
    # onnxruntime-gpu 1.31's CUDA provider: CUDA 13 and cuDNN 9 from wheels (its `cuda` and `cudnn` extras)
    for name in ("nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cublas"):
        assert pins[name].startswith("13."), (name, pins[name])
    assert pins["nvidia-cudnn-cu13"].startswith("9.") and {"nvidia-cufft", "nvidia-curand"} <= set(pins)
    assert not {"torch", "torchvision", "onnx", "onnxscript"} & set(pins)


def _serving_closure() -> set[str]:
    """The installed distributions the serving install needs: the project's base requirements (no extras) and
    ONNX Runtime's `cuda` and `cudnn` extras, followed through each installed package's own requirements."""
    wanted = [(Requirement("cifar-classifier"), ()), (Requirement("onnxruntime-gpu"), ("cuda", "cudnn"))]
    found: set[tuple[str, tuple[str, ...]]] = set()
    while wanted:
        requirement, extras = wanted.pop()
        name = canonicalize_name(requirement.name)
        extras = tuple(sorted(set(extras) | requirement.extras))
        if (name, extras) in found:
            continue
        found.add((name, extras))
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not installed: the lock comparison below names it
            continue
        for line in requirements:
            needed = Requirement(line)
            environments = [{"extra": extra} for extra in extras or ("",)]
            if not needed.marker or any(needed.marker.evaluate(env) for env in environments):
                wanted.append((needed, ()))
    return {name for name, _ in found} - {"cifar-classifier"}


def test_the_lock_is_the_serving_closure_at_the_versions_the_tests_run_with():
    """scripts/setup.sh installs under the lock, so a mismatch means the lock was not rewritten after a
    dependency changed (`python scripts/lock_serving.py`) or the environment was not set up by it."""
    pins = _pins(LOCK.read_text())
    closure = _serving_closure()
    assert closure - set(pins) == set(), "serving packages the lock misses"
    assert set(pins) - closure == set(), "locked packages the serving install no longer needs"
    installed = {}
    for name in pins:
        try:
            installed[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed[name] = "not installed"
    assert installed == pins


def test_the_dockerfile_runs_as_the_bentoml_user_on_python_slim(bento):
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "nvidia/cuda" not in dockerfile  # CUDA comes from the wheels, the driver from the host
    assert re.search(rf"^ARG BENTO_USER_UID={IMAGE_USER_UID}$", dockerfile, re.M)  # the uid the manifests run as
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] == "bentoml"  # the last USER: the server never runs as root
    assert re.search(r"^EXPOSE 3000$", dockerfile, re.M)
    assert "requirements.txt" in dockerfile


def test_the_doctor_runs_from_the_bento_as_in_the_image(bento):
    """In the image the Bento's code is under src/ (docs/deploy.md runs the doctor there): it must need nothing
    else, and find the Bento's own models."""
    done = subprocess.run(
        [sys.executable, "-m", "service", "doctor", "--device", "auto", "--no-speed"],
        cwd=bento / "src",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    count = len(yaml.safe_load((ROOT / "models" / "manifest.json").read_text())["models"])
    models = re.escape(str(bento / "src" / "models"))
    assert re.search(rf"ok\s+manifest\s+{models}: {count} model\(s\)", done.stdout), done.stdout
    assert done.stdout.rstrip().endswith("--device auto: will work on this host")


def test_the_lock_script_refuses_pins_no_test_ran_with():
    import importlib.util

    spec = importlib.util.spec_from_file_location("lock_serving", ROOT / "scripts" / "lock_serving.py")
    lock_serving = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lock_serving)
    assert lock_serving.untested([("pyyaml", metadata.version("pyyaml"))]) == []
    assert lock_serving.untested([("pyyaml", "0.0.1"), ("no-such-package-here", "1.0")]) == [
        f"pyyaml==0.0.1 (installed: {metadata.version('pyyaml')})",
        "no-such-package-here==1.0 (installed: not at all)",
    ]


@pytest.mark.skipif(
    sys.version_info[:2] != (3, 11) or platform.system() != "Linux" or platform.machine() != "x86_64",
    reason="scripts/lock_serving.py runs on the image's platform only (CPython 3.11, Linux x86-64)",
)
def test_the_lock_script_stops_in_one_line_when_pip_cannot_resolve(tmp_path):
    """Resolving needs the package index: without one, one line after pip's own error, and no lock written. A copy
    of the script in an empty project, so that nothing can touch this checkout's lock."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / "scripts" / "lock_serving.py", tmp_path / "scripts")
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    no_index = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    done = subprocess.run(
        [sys.executable, str(tmp_path / "scripts" / "lock_serving.py")],
        env={**os.environ, **no_index},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith("lock_serving: not written: pip could not resolve")
    assert not (tmp_path / "deploy" / "serving.lock").exists()
