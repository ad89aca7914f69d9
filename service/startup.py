"""What this process serves with: the settings, checked once when BentoML imports the service, and the worker's
place (GPUs, cores, streams). BentoML's decorators need these at class creation, before any request; one home for
them keeps every module of the service reading the same values.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

import bentoml

from inference.manifest import ManifestError, load_manifest

from .contract import Limits
from .gpus import gpu_report
from .settings import ServiceSettings, SettingsError, cpu_count, start_notes
from .workers import place_worker, worker_count

with bentoml.importing():  # onnxruntime may be missing where the Bento is only being built
    from inference.runtime import wants_cuda

    from .loading import CHECKED_ENV, check_model_files, checked_before

# Read when BentoML imports the service in each worker: its decorators need them at class creation.
# `bentoml serve` (the container's command) imports it directly, without `python -m service serve`'s checks:
# a bad CIFAR_* value or key file is then one line and exit 2, not BentoML's traceback of the import.
try:
    SETTINGS = ServiceSettings.checked()
    if bentoml.server_context.worker_index is None:
        # The server's own process, not a worker: a missing or tampered model folder (a mount that is not
        # there) is refused here once; a worker would raise it in tracebacks, and outside a container BentoML
        # starts the worker again every few seconds. The workers check the files again as they load them.
        # onnxruntime is there to open them where check_model_files is (not where a Bento is built).
        opens = "check_model_files" in globals()
        if not (opens and checked_before(Path(SETTINGS.models_dir), os.environ)):
            manifest = load_manifest(SETTINGS.models_dir, verify=True)
            if opens:
                check_model_files(manifest, Path(SETTINGS.models_dir))
except (SettingsError, ManifestError) as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


def _on_gpu() -> bool:
    try:
        return wants_cuda(SETTINGS.device)
    except NameError:  # onnxruntime not importable where the service is only being built
        return False


def says_the_settings(worker_index: int | None, environ: Mapping[str, str], command: str | None) -> bool:
    """Whether this process says what the start runs with (``start_notes``: the settings given, the warnings): the
    process of `bentoml serve` itself (``command``: the click command importing the service), once, not each
    worker, nor `bentoml build`, a test or a script that imports the module; and not a server that `python -m
    service serve` became, which said it before (its mark of the manifest it checked is in the environment)."""
    try:
        mark = CHECKED_ENV
    except NameError:  # onnxruntime not importable where the service is only being built: no server runs here
        return False
    return command in ("serve", "serve-http") and worker_index is None and not environ.get(mark)


def _bentoml_command() -> str | None:
    """The name of the bentoml command importing this module, if one is (``bentoml serve``, ``bentoml build``)."""
    import click

    context = click.get_current_context(silent=True)
    return None if context is None else context.info_name


ON_GPU = _on_gpu()
if says_the_settings(bentoml.server_context.worker_index, os.environ, _bentoml_command()):
    for note in start_notes(os.environ, {}, SETTINGS, on_gpu=ON_GPU, cores=cpu_count()):
        print(note, file=sys.stderr, flush=True)
# One worker per visible GPU unless --workers says otherwise; BentoML makes GPUS devices visible to the workers
# (the service's resources) and each takes its own by its index (service/workers.py).
GPUS = len(gpu_report().gpus) if ON_GPU else 0
WORKERS = worker_count(SETTINGS.workers, GPUS)
WORKER = place_worker(bentoml.server_context.worker_index, WORKERS, GPUS, cpu_count())
STREAMS = SETTINGS.inference_streams(ON_GPU, WORKER.cores)
INTRA_OP_THREADS = SETTINGS.intra_op_threads(ON_GPU, WORKER.cores)

LIMITS = Limits(
    max_images=SETTINGS.max_images,
    max_body_bytes=SETTINGS.max_body_bytes,
    max_pixels=SETTINGS.max_pixels,
    timeout_s=SETTINGS.timeout_s,
)
DEFAULT_K = 5
SERVICE_NAME = "cifar_classifier"
