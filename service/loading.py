"""The service's models: every one the manifest lists, checked, placed (CUDA or CPU), loaded and warmed up, in a
thread of the worker's own."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from inference.devices import DEVICE_KINDS, Device
from inference.fits import FITS
from inference.manifest import (
    MANIFEST_NAME,
    DefaultChoice,
    Manifest,
    ManifestError,
    ModelCard,
    ModelEntry,
    card_disagreements,
    load_manifest,
    sha256_file,
)
from inference.runtime import (
    DEFAULT_SESSION,
    OnnxClassifier,
    SessionSettings,
    choose_default,
    open_session,
    read_card,
    wants_cuda,
)

from .contract import FitInfo, Limits, ModelInfo, ModelList
from .settings import ServiceSettings
from .workers import WorkerPlacement

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar")


class LoadedModel:
    def __init__(self, entry: ModelEntry, classifier: OnnxClassifier) -> None:
        self.entry = entry
        self.classifier = classifier
        self.size = entry.input.size
        self.classes = entry.classes


class LoadedModels:
    """The manifest, its models as this worker runs them, and the default here."""

    def __init__(self, manifest: Manifest, models: dict[str, LoadedModel], default: DefaultChoice) -> None:
        self.manifest = manifest
        self.models = models
        self.default = default


def load_models(settings: ServiceSettings, worker: WorkerPlacement) -> LoadedModels:
    """Every model in the manifest, each file checked against its sha256 first, placed on this worker's GPU
    (or the CPU), warmed up and ready. Under ``--device cuda`` a model that cannot run wholly on CUDA stops
    the start-up (``CudaPlacementError``, naming it); under ``auto`` it is served on the CPU with a warning."""
    manifest = load_manifest(settings.models_dir, verify=True)
    cuda_wanted = wants_cuda(settings.device)
    loaded = {}
    for entry in manifest.models:
        classifier = open_classifier(
            Path(settings.models_dir) / entry.file,
            settings,
            settings.device,
            SessionSettings(threads=settings.intra_op_threads(cuda_wanted, worker.cores), spin=False),
            device_id=worker.device_id or 0,
        )
        check_card(entry, classifier.card)
        placement = classifier.placement
        if placement.fallback:
            log.warning("model %s: served on %s, not CUDA: %s", entry.name, placement.provider, placement.fallback)
        else:
            log.info("model %s: every node on %s", entry.name, placement.describe())
        warm_up(classifier, entry.input.size, settings.max_batch_size)
        loaded[entry.name] = LoadedModel(entry, classifier)
    default = choose_default(manifest, cuda_wanted, {n: m.classifier.placement for n, m in loaded.items()})
    return LoadedModels(manifest, loaded, default)


class BackgroundLoad:
    """``load()`` in a thread of its own, started from the worker's event loop. BentoML creates the service before
    its server accepts a connection: models loaded there would leave /livez and /readyz unanswered for the whole
    load, and a probe with a 1 s timeout would see a timeout, not "not ready". ``failed(exc)`` is called, in that
    thread, when ``load()`` raises; waiters are then never released."""

    def __init__(self, load: Callable[[], None], failed: Callable[[BaseException], None]) -> None:
        self._load = load
        self._failed = failed
        self._loop = asyncio.get_running_loop()
        self._loaded = asyncio.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="cifar-load-models", daemon=True).start()

    async def wait(self) -> None:
        await self._loaded.wait()

    def _run(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # anything: a worker that cannot serve must not look merely slow
            self._failed(exc)
            return
        try:
            self._loop.call_soon_threadsafe(self._loaded.set)
        except RuntimeError:  # the loop closed meanwhile: the worker stopped while it loaded
            pass


def check_card(entry: ModelEntry, card: ModelCard) -> None:
    """ManifestError when a file's own card and its manifest entry disagree on what it takes and answers."""
    if card_disagreements(entry, card):
        raise ManifestError(
            f"model {entry.name!r}: {entry.file} describes itself differently from the manifest "
            f"(classes, precision or input); re-export it"
        )


# Set by `python -m service serve` for the server it starts: the sha256 of the manifest.json whose files it has
# just verified and opened. The server's process skips its own check of the same manifest (a second opening of
# every file, which lengthens start-up); `bentoml serve` run directly has no such mark and checks.
CHECKED_ENV = "CIFAR_CHECKED_MANIFEST"


def manifest_digest(models_dir: Path) -> str:
    return sha256_file(Path(models_dir) / MANIFEST_NAME)


def checked_before(models_dir: Path, env: Mapping[str, str]) -> bool:
    """Whether ``serve`` checked this very manifest before starting the server (the workers check each file
    they load again in any case)."""
    mark = env.get(CHECKED_ENV)
    try:
        return bool(mark) and mark == manifest_digest(models_dir)
    except OSError:
        return False


def check_model_files(manifest: Manifest, models_dir: Path) -> None:
    """What a worker would refuse as it loads the models, refused once before the server starts: BentoML starts
    a worker that fails again every few seconds, for ever. Each file is opened on the CPU and closed again: a
    ManifestError where ONNX Runtime cannot load it or its card is not its entry."""
    for entry in manifest.models:
        try:
            session, _ = open_session(Path(models_dir) / entry.file, "cpu", SessionSettings(threads=1))
            card = read_card(session)
        except ValueError as exc:  # ModelFileError; no card, or one of another schema: not this project's export
            raise ManifestError(f"model {entry.name!r}: {exc}") from None
        check_card(entry, card)


def open_classifier(
    path: Path,
    settings: ServiceSettings,
    device: Device,
    session: SessionSettings = DEFAULT_SESSION,
    device_id: int = 0,
) -> OnnxClassifier:
    """A model as the service runs it: ONNX Runtime's arena as ``settings`` say, and a large batch in pieces
    where the model is placed (``settings.run_images``)."""
    session = replace(session, memory_arena=settings.memory_arena == "on")
    classifier = OnnxClassifier(path, device=device, settings=session, device_id=device_id)
    classifier.max_run_images = settings.run_images(classifier.on_gpu)
    return classifier


WARM_UP_SECONDS = 2.0


def warm_up(
    classifier: OnnxClassifier,
    size: tuple[int, int],
    max_batch_size: int,
    budget_s: float = WARM_UP_SECONDS,
    clock: Callable[[], float] = time.perf_counter,
) -> list[int]:
    """Run the model before traffic, so that first-call allocations and kernel choice are not paid by a request:
    batch 1 twice (the second call times one image), then the largest batch up to ``max_batch_size`` that the
    budget allows. A full batch of a wide network with multi-crop TTA, or of a float16 graph on a CPU, is
    slow there, and that is start-up time for every worker, so such a model warms up on a smaller batch and
    its first full batch pays the rest. Returns the batch sizes run."""
    height, width = size
    one = np.zeros((1, 3, height, width), dtype=np.float32)
    classifier.logits(one)
    start = clock()
    classifier.logits(one)
    per_image = max(clock() - start, 1e-9)
    batch = min(max_batch_size, max(1, int(budget_s / per_image)))
    if batch > 1:
        classifier.logits(np.zeros((batch, 3, height, width), dtype=np.float32))
    return [1, 1, batch] if batch > 1 else [1, 1]


def model_list(models: LoadedModels, limits: Optional[Limits] = None) -> ModelList:
    manifest = models.manifest
    return ModelList(
        fits=[FitInfo(name=fit.name, help=fit.help) for fit in FITS.values()],
        limits=limits,
        default=models.default.name,
        default_reason=models.default.reason,
        device="cuda" if models.models[models.default.name].classifier.on_gpu else "cpu",
        models=[
            ModelInfo(
                name=m.name,
                dataset=m.dataset,
                arch=m.arch,
                classes=m.classes,
                precision=m.precision,
                accuracy=m.metrics.get("val_top1"),
                input_size=list(m.input.size),
                fit=m.input.fit,
                default=m.name == models.default.name,
                default_for=[k for k in DEVICE_KINDS if manifest.default_for(k).name == m.name],
                provider=models.models[m.name].classifier.placement.provider,
                fallback=models.models[m.name].classifier.placement.fallback,
                calibrated=m.calibration.method != "none",
            )
            for m in manifest.models
        ],
    )
