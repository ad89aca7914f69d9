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


def _seconds(duration: str) -> int:
    """A Compose duration of whole minutes and seconds ("300s", "5m", "1m30s") in seconds."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert match and duration, f"not a duration of minutes and seconds: {duration!r}"
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def _startup_allowance_s(container: dict) -> int:
    """How long the Kubernetes startup probe lets the models load before the kubelet restarts the container."""
    probe = container["startupProbe"]
    return probe["periodSeconds"] * probe["failureThreshold"]


def test_compose_allows_the_start_that_kubernetes_allows():
    """The same image loads the same models on either: a start that Kubernetes waits for must not leave Compose's
    container `unhealthy` (and `docker compose up --wait` failed) before it is ready."""
    check = yaml.safe_load(COMPOSE.read_text())["services"]["classifier"]["healthcheck"]
    assert _seconds(check["start_period"]) >= _startup_allowance_s(_container(_documents()["Deployment"]))


# Variables that size threads to the pod's CPU request; Compose runs alone on its host and sizes for every core.
THREAD_SIZING = {"CIFAR_DECODE_THREADS", "CIFAR_THREADS"}


def test_compose_and_kubernetes_set_the_same_environment_but_thread_sizing():
    """Where the service writes (BENTOML_HOME, XDG_CACHE_HOME) and how it refuses a CPU: the read-only test below runs
    the Deployment's variables, so Compose's must be the same."""
    deployment = {e["name"]: e["value"] for e in _container(_documents()["Deployment"])["env"]}
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["classifier"]["environment"]
    assert compose == {name: value for name, value in deployment.items() if name not in THREAD_SIZING}


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
    said = f"{count} model{'' if count == 1 else 's'},"
    assert re.search(rf"ok\s+manifest\s+{models}: {said}", done.stdout), done.stdout
    assert done.stdout.rstrip().endswith("--device auto: will work on this host")


# Every module of the Bento's packages imported from its src/ alone: this checkout's editable install (a finder that
# maps inference, service, training and export to the repository) taken out, as the image has none. Prints the
# project modules that loaded from outside src/, then those of the training side or torch.
_IMPORT_EVERY_MODULE = """
import importlib, json, os, pkgutil, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, os.getcwd())
for package in ("inference", "service"):
    for found in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        importlib.import_module(found.name)
src = os.getcwd() + os.sep
outside = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] in ("inference", "service") and not (getattr(module, "__file__", None) or src).startswith(src)
)
training_side = ("training", "export", "torch", "torchvision", "onnx")
heavy = sorted(name for name in sys.modules if name.split(".")[0] in training_side)
print(json.dumps([outside, heavy]))
"""


def test_the_bento_holds_every_module_the_service_imports(bento):
    """A module that the service imports and the bentofile leaves out fails only in the image: here the editable
    install would find it in the repository."""
    import json

    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EVERY_MODULE], cwd=bento / "src", capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    outside, heavy = json.loads(done.stdout.splitlines()[-1])
    assert outside == [] and heavy == []


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path):
        path = path.parent
    return path


# The container as the manifests run it, in a private mount namespace: the root and the file systems holding Python
# read-only, an empty tmpfs on /tmp with Docker's --tmpfs options, the Bento read-only at /tmp/bento (its
# folder is opened before the tmpfs hides it), then the image's command in the Bento's folder.
_READ_ONLY_ROOT = """
set -e
exec 3<"$BENTO"
mount -t tmpfs -o noexec,nosuid,nodev,mode=1777 tmpfs /tmp
mkdir /tmp/bento
mount --bind /proc/self/fd/3 /tmp/bento
exec 3<&-
mount -o remount,ro,bind /tmp/bento
for read_only in $READ_ONLY; do mount -o remount,ro,bind "$read_only"; done
cd /tmp/bento
exec "$@"
"""


def _read_only_root(bento: Path, command: list[str], **popen) -> subprocess.Popen:
    held = {_mount_point(Path(p)) for p in (sys.prefix, sys.base_prefix, sys.executable)} | {Path("/")}
    env = {**popen.pop("env", os.environ), "BENTO": str(bento), "READ_ONLY": " ".join(map(str, sorted(held)))}
    return subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", _READ_ONLY_ROOT, "read-only-root", *command],
        env=env,
        **popen,
    )


def _read_only_root_problem(bento: Path) -> str | None:
    """Why this host cannot make the namespace (not Linux, no unshare, not allowed to mount); None when it can."""
    if platform.system() != "Linux" or not (shutil.which("unshare") and shutil.which("bash")):
        return "needs Linux, unshare and bash"
    if any(Path(p).resolve().is_relative_to("/tmp") for p in (sys.prefix, sys.base_prefix, sys.executable)):
        return "Python lives under /tmp, which the container's tmpfs hides"
    probe = _read_only_root(bento, ["sh", "-c", "[ ! -w /tmp/bento ] && [ ! -w / ] && [ -w /tmp ]"])
    if probe.wait(timeout=30) != 0:
        return "no private mount namespace with read-only mounts here (needs root with CAP_SYS_ADMIN)"
    return None


@pytest.mark.slow
def test_the_bento_serves_from_a_read_only_root_as_the_manifests_run_it(bento, tmp_path):
    """readOnlyRootFilesystem (Kubernetes) and read_only (Compose) with /tmp the one writable place: the server
    starts as the image's command starts it, with the Deployment's variables (on the CPU: no GPU here), answers
    /livez whenever it answers at all and /readyz once ready within the startup probe's allowance, classifies,
    counts, stops cleanly on SIGTERM, and logs no warning about a file it could not write."""
    import signal
    import time

    import httpx
    from PIL import Image

    from conftest import encode_image, free_port, stop_server_group

    problem = _read_only_root_problem(bento)
    if problem:
        pytest.skip(problem)
    container = _container(_documents()["Deployment"])
    variables = {e["name"]: e["value"] for e in container["env"]}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # what the namespace makes writable
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CIFAR_", "BENTOML_"))}
    env |= variables | {"CIFAR_DEVICE": "cpu", "BENTOML_PORT": str(port), "BENTOML_DO_NOT_TRACK": "true"}
    env |= {"BENTOML_CONTAINERIZED": "true", "HOME": "/home/bentoml"}  # the image's (its Dockerfile and user)
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = _read_only_root(
            bento,
            [sys.executable, "-m", "bentoml", "serve", "/tmp/bento"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + _startup_allowance_s(container)
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "not ready within the startup probe's allowance"
            try:
                ready = httpx.get(f"{url}/readyz", timeout=1).status_code  # the probe's default timeout
                live = httpx.get(f"{url}/livez", timeout=1).status_code
            except httpx.TransportError:  # not listening yet
                time.sleep(0.25)
                continue
            assert live == 200
            if ready == 200:
                break
            assert ready == 503  # loading: live, not ready
            time.sleep(0.25)
        image = encode_image(Image.new("RGB", (32, 32), (200, 30, 30)), "PNG")
        answer = httpx.post(f"{url}/classify", files={"images": ("red.png", image)}, timeout=60)
        assert answer.status_code == 200, answer.text
        model = answer.json()["model"]
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert f'cifar_predictions_total{{model="{model}"}} 1.0' in metrics
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            stop_server_group(proc)
    text = log_path.read_text()
    for sign in ("Read-only file system", "Permission denied", "[W:onnxruntime", "[E:onnxruntime", "Traceback"):
        assert sign not in text, text[-3000:]
    assert "ready: worker 1 of 1" in text


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
