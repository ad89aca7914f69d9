"""The service's models: every one the manifest lists, checked, loaded into ONNX Runtime and warmed up."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inference.manifest import Manifest, ManifestError, ModelEntry, load_manifest
from inference.runtime import OnnxClassifier, wants_cuda

from .contract import ModelInfo, ModelList
from .settings import ServiceSettings

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar")


class LoadedModel:
    def __init__(self, entry: ModelEntry, classifier: OnnxClassifier) -> None:
        self.entry = entry
        self.classifier = classifier
        self.size = entry.input.size
        self.classes = entry.classes


def load_models(settings: ServiceSettings) -> tuple[Manifest, dict[str, LoadedModel]]:
    """Every model in the manifest, each file checked against its sha256 first, warmed up and ready."""
    manifest = load_manifest(settings.models_dir, verify=True)
    on_gpu = wants_cuda(settings.device)  # type: ignore[arg-type]
    if on_gpu:
        _preload_cuda()
    loaded = {}
    for entry in manifest.models:
        classifier = OnnxClassifier(
            Path(settings.models_dir) / entry.file,
            device=settings.device,  # type: ignore[arg-type]
            threads=settings.intra_op_threads(on_gpu),
            spin=False,
        )
        card = classifier.card
        if (card.classes, card.precision, card.input) != (entry.classes, entry.precision, entry.input):
            raise ManifestError(
                f"model {entry.name!r}: {entry.file} describes itself differently from the manifest "
                f"(classes, precision or input); re-export it"
            )
        if settings.device == "cuda" and not classifier.on_gpu:
            raise RuntimeError(
                f"--device cuda, but ONNX Runtime could not use CUDA for {entry.name!r} "
                f"(providers {classifier.providers}): check the driver, CUDA 13 and cuDNN 9"
            )
        height, width = entry.input.size
        for n in sorted({1, settings.max_batch_size}):  # first-call allocations and kernel choice, before traffic
            classifier.logits(np.zeros((n, 3, height, width), dtype=np.float32))
        loaded[entry.name] = LoadedModel(entry, classifier)
    return manifest, loaded


def _preload_cuda() -> None:
    """Load the pip-installed CUDA 13 / cuDNN 9 libraries (nvidia-* wheels) before the first CUDA session."""
    try:
        ort.preload_dlls()
    except Exception as exc:  # the system's libraries may still be found by the loader
        log.warning("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA libraries", exc)


def model_list(manifest: Manifest) -> ModelList:
    return ModelList(
        default=manifest.default,
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
                default=m.name == manifest.default,
            )
            for m in manifest.models
        ],
    )
