"""Shared fixtures: small generated datasets (never the real images) and a tiny trained run."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"
sys.path.insert(0, str(ROOT / "bench"))

from service_runs import free_port, spawn_server  # noqa: E402  (a server started as the benchmarks start it)

# Tests must not fight over two cores with each other's thread pools.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# A test run started in the background (`cmd &` in a script, nohup) ignores Ctrl-C from its start, so that the tests
# of what a Ctrl-C does would pass there without any Ctrl-C arriving; CI's runner and a terminal deliver it. Taken as
# in a shell's foreground, for the tests and the processes they start (which inherit an ignored signal, not a handler).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _class_pattern(label: int, n: int, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Images whose class is learnable: a class-specific colour plus noise."""
    base = np.zeros((n, size, size, 3), dtype=np.float32)
    base[..., label % 3] = 160 + 40 * (label // 3)
    base[:, : size // 2, :, (label + 1) % 3] += 60.0 * (label % 2)
    noise = rng.normal(0, 30, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_arrays(num_classes: int = 3, per_class: int = 20, seed: int = 0, size: int = 32):
    rng = np.random.default_rng(seed)
    images = np.concatenate([_class_pattern(c, per_class, rng, size) for c in range(num_classes)])
    labels = np.repeat(np.arange(num_classes), per_class)
    return images, labels


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """A class-per-folder tree: 3 classes x 20 PNG images, 32x32."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder")
    images, labels = make_arrays()
    names = ["alpha", "beta", "gamma"]
    for i, (img, label) in enumerate(zip(images, labels)):
        d = root / names[label]
        d.mkdir(exist_ok=True)
        Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def write_cifar10(root: Path, per_class: int = 6) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    images, labels = make_arrays(10, per_class)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for i in range(1, 6):
        sl = slice(i - 1, None, 5)
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump({"data": rows[sl], "labels": labels[sl].tolist()}, f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": rows[:10], "labels": labels[:10].tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": classes}, f)
    return root


def write_cifar100(root: Path, per_class: int = 2) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    images, labels = make_arrays(100, per_class)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    for split in ("train", "test"):
        with open(folder / split, "wb") as f:
            pickle.dump({"data": rows, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i:02d}" for i in range(100)]}, f)
    return root


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("c10"))


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    return write_cifar100(tmp_path_factory.mktemp("c100"))


def encode_image(image, fmt: str = "JPEG", orientation: int | None = None, **save) -> bytes:
    """``image`` saved as ``fmt``, with an EXIF orientation tag where given (a phone's turned photo)."""
    import io

    from PIL import Image

    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def count_folder_decodes(monkeypatch) -> list[int]:
    """The sizes of the files the folder reader decodes from now on (none where it reads its cache)."""
    import importlib

    folder_module = importlib.import_module("training.data.folder")  # the package's attribute is the reader
    decoded: list[int] = []
    decode = folder_module.decode_image

    def counting(data, *args, **kwargs):
        decoded.append(len(data))
        return decode(data, *args, **kwargs)

    monkeypatch.setattr(folder_module, "decode_image", counting)
    return decoded


def tiny_overrides(root: Path, out_cache: Path, **extra) -> list[str]:
    """Overrides that make any recipe train in seconds on the generated folder."""
    base = {
        "data.dataset": "folder",
        "data.root": str(root),
        "data.val_size": 15,
        "data.cache_dir": str(out_cache),
        "model.name": "resnet9",
        "model.args": "{width: 8}",
        "epochs": 2,
        "batch_size": 16,
        "eval_batch_size": 32,
        "optim.name": "sgd",
        "lr": 0.05,
        "weight_decay": 0.0005,
        "schedule.name": "cosine",
        "warmup_epochs": 0,
        "bf16": False,
        "channels_last": False,
        "threads": 2,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def atomic_writes(monkeypatch) -> tuple[set, dict]:
    """Spies on os.fsync and os.replace: the paths synced, and each replaced file's name -> the temporary file
    renamed onto it. A file written atomically has its temporary file among the synced ones."""
    import os

    synced, replaced = set(), {}
    fsync, replace = os.fsync, os.replace

    def spy_fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        fsync(fd)

    def spy_replace(src, dst):
        replaced[os.path.basename(dst)] = str(src)
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", spy_fsync)
    monkeypatch.setattr(os, "replace", spy_replace)
    return synced, replaced


@pytest.fixture(scope="session")
def tiny_run(image_folder, tmp_path_factory) -> Path:
    """A run folder of a tiny ResNet-9 trained for 3 epochs on the generated folder."""
    from training.config_recipes import build_config
    from training.engine import train

    tmp = tmp_path_factory.mktemp("run")
    config = build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp / "cache", epochs=3))
    train(config, tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="session")
def shared_archive() -> Path:
    if not SHARED_ARCHIVE.is_file():
        pytest.skip(f"shared data archive not found at {SHARED_ARCHIVE}")
    return SHARED_ARCHIVE


def extract_jpegs(archive: Path, out: Path, count: int = 12) -> list[Path]:
    """``count`` real CIFAR-10 JPEGs of four classes (airplane, cat, ship, truck) from the archive, written to
    ``out``; sorted by name."""
    import re
    import tarfile

    wanted = re.compile(r"^cifar10/train/(airplane|cat|ship|truck)/000[0-9]\.jpg$")
    paths = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and wanted.match(member.name) and int(member.name[-5]) < (count + 3) // 4:
                path = out / member.name.replace("cifar10/train/", "").replace("/", "_")
                path.write_bytes(tar.extractfile(member).read())
                paths.append(path)
            if len(paths) == count:
                break
    assert len(paths) == count
    return sorted(paths)


@pytest.fixture(scope="session")
def tiny_models_dir(tiny_run, tmp_path_factory) -> Path:
    """A models/ folder with the tiny run exported as 'tiny' (fp32, the default) and 'tiny-int8', plus manifest.json."""
    from export.pipeline import export_checkpoint

    models = tmp_path_factory.mktemp("models")
    export_checkpoint(tiny_run / "best.pt", "tiny", "fp32", models, cache_dir=None)
    export_checkpoint(tiny_run / "best.pt", "tiny-int8", "int8", models, cache_dir=None)
    return models


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``python -m training ARGS`` as two gloo processes under torchrun, one thread each; fails on a non-zero exit."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    for _ in range(3):
        port = str(free_port())  # port 0 hangs torchrun's static rendezvous: pick a free port ourselves
        result = subprocess.run(
            [*cmd, "--master_port", port, "-m", "training", *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=600,
            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        )
        # free_port lets its port go before torchrun's store binds it: another program may take it in between,
        # and the store fails before any rank starts
        if "EADDRINUSE" not in result.stderr:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def score_with_ray(tmp_path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m service score PHOTOS --engine ray FLAGS`` on a folder of one photo, in a child that sees no RAY_
    variable but ``env`` and whose HOME is a fresh folder: no cluster address or token of this machine's (Ray reads
    one from ~/.ray/auth_token) reaches it."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photos / "a.png")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    environment.update(HOME=str(home), **env)
    command = [sys.executable, "-m", "service", "score", str(photos), "--engine", "ray", *flags]
    return subprocess.run(
        [*command, "--out", str(tmp_path / "out.csv")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_for_lines(path: Path, count: int, proc, timeout: float = 60) -> None:
    """Wait until the scorer subprocess `proc` has written `count` lines to `path`; fail if it exits first."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the scorer exited ({proc.returncode}) before writing {count} lines: {proc.stderr.read()}")
        time.sleep(0.005)
    pytest.fail(f"no {count} lines in {path} after {timeout} s")


_REAL_CLIENT = httpx.Client  # taken at import, before any test stands in for it


def mock_service(monkeypatch: pytest.MonkeyPatch, handler: Callable[[httpx.Request], httpx.Response]) -> None:
    """Serves every httpx.Client the scorer opens in this process from ``handler``, a stand-in of the service; a
    second call replaces the first's."""
    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(httpx, "Client", lambda **kw: _REAL_CLIENT(transport=transport, **kw))


def lost_its_port(proc: subprocess.Popen, log_path: Path, port: int) -> bool:
    """Whether the server ``proc`` that ``spawn_server`` started on ``port`` ended because another program took
    that port after free_port let it go: serve's own check says so in one line (status 2), BentoML's bind, seconds
    later, with a traceback (status 1)."""
    log = log_path.read_text(errors="replace")
    return (proc.returncode == 2 and f"error: cannot listen on 127.0.0.1:{port}:" in log) or (
        proc.returncode == 1 and f"Could not bind 127.0.0.1:{port}" in log
    )


def _answers_ready(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def serve_on_free_port(
    models_dir: Path,
    log_path: Path,
    *args: str,
    env: dict | None = None,
    until=_answers_ready,
    what: str = "ready",
    timeout: float = 90,
) -> tuple[subprocess.Popen, str]:
    """`python -m service serve` started on a free port and waited for until ``until(url)`` holds (GET /readyz
    answers 200 unless given): (its process, its URL). The test fails when the server exits first, or is not
    ``what`` within ``timeout`` s; the server is then stopped."""
    import time

    for start in range(1, 4):
        port = free_port()
        with open(log_path, "w") as log:
            proc = spawn_server(port, models_dir, *args, log=log, env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if until(url):
                    return proc, url
                if time.monotonic() > deadline:
                    pytest.fail(f"the server was not {what} within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.25)
        except BaseException:
            stop_server_group(proc)
            raise
        stop_server_group(proc)  # what is left of its group
        # free_port lets its port go before the server binds it (twice: serve's check, then BentoML's bind, seconds
        # apart): another program may take it in between
        if not (start < 3 and lost_its_port(proc, log_path, port)):
            pytest.fail(f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
    raise AssertionError("not reached: the third start returns or fails")


@contextlib.contextmanager
def running_service(models_dir: Path, log_path: Path, *args: str, env: dict | None = None, timeout: float = 90):
    """Start `python -m service serve` on a free port, wait for /readyz, yield its URL, stop it on exit."""
    proc, url = serve_on_free_port(models_dir, log_path, *args, env=env, timeout=timeout)
    try:
        yield url
    finally:
        stop_server_group(proc)


def stop_server_group(proc: subprocess.Popen) -> None:
    """Stop a server that ``spawn_server`` started, its workers with it: SIGTERM to its process group, SIGKILL
    after 30 s."""
    import signal

    # A server that exited (and took its group with it) has no group left: its own failure is the news.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium():
    """Headless Chromium (the machine's, driven by Playwright), closed on exit; skips the test where either is
    missing."""
    import shutil

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on this machine (scripts/setup.sh installs Debian's package when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(
    server: str,
    *,
    width: int = 1000,
    height: int = 800,
    init_script: str | None = None,
    classify=None,
    models=None,
    fake_clock: bool = False,
    requested: list[str] | None = None,
):
    """The page at ``server``/ open in headless Chromium with its models listed, and the script errors it raised.
    ``classify`` and ``models`` (Playwright route handlers) stand between the page and /classify and /models;
    ``init_script`` runs before the page's; ``fake_clock``: the page's timers run on Playwright's clock, which the
    test moves on; ``requested`` collects the URL of every request the page makes."""
    import time

    with chromium() as browser:
        page = browser.new_page(viewport={"width": width, "height": height})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        if requested is not None:
            page.on("request", lambda request: requested.append(request.url))
        if init_script is not None:
            page.add_init_script(init_script)
        if fake_clock:
            page.clock.install()
        if classify is not None:
            page.route("**/classify", classify)
        if models is not None:
            page.route("**/models", models)
        page.goto(f"{server}/")
        # Polled from here: wait_for_function with an expression evaluates a string in the page once it has to
        # poll, which the page's policy forbids (the test would then fail only when the list is not there at once).
        deadline = time.monotonic() + 30
        while page.locator("#model option").count() != 2:
            assert time.monotonic() < deadline, f"the page did not list the models: {page.inner_text('#status')!r}"
            page.wait_for_timeout(100)
        yield page, errors


def train_straight_and_resumed(recipe: str, overrides: list[str], out: Path, monkeypatch, stop_after: int = 2):
    """Train the same config twice: straight through into out/straight, and interrupted after epoch
    ``stop_after`` (as Ctrl-C would) then resumed into out/interrupted. Returns both last.pt states."""
    import torch

    from training.resume import resume

    train_straight_and_stopped(recipe, overrides, out, monkeypatch, stop_after)
    assert torch.load(out / "interrupted" / "last.pt", weights_only=True)["epoch"] == stop_after
    resume(out / "interrupted")
    return tuple(torch.load(out / run / "last.pt", weights_only=True) for run in ("straight", "interrupted"))


def train_straight_and_stopped(recipe: str, overrides: list[str], out: Path, monkeypatch, stop_after: int = 2):
    """Train the same config straight through into out/straight, and into out/interrupted stopped after epoch
    ``stop_after`` (as Ctrl-C would), not resumed."""
    from training.config_recipes import build_config
    from training.engine import Trainer, train

    train(build_config(recipe, overrides), out / "straight")
    original = Trainer._end_epoch

    def interrupt(self, record):
        stop = original(self, record)
        if record["epoch"] == stop_after:
            raise KeyboardInterrupt
        return stop

    monkeypatch.setattr(Trainer, "_end_epoch", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(build_config(recipe, overrides), out / "interrupted")
    monkeypatch.setattr(Trainer, "_end_epoch", original)
