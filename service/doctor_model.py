"""The doctor's check of one model: placed and opened as the service would open it, its answers compared with the
CPU provider's (or its accuracy on the labelled folder), and its speed.

One model at a time, with the thresholds it is judged by beside the code that applies them: a model that passes
here is one the service would start with and answer for correctly on this host.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from inference.devices import Device
from inference.manifest import ManifestError, ModelEntry
from inference.messages import counted
from inference.precisions import precision

from .doctor_report import Report, Status

if TYPE_CHECKING:
    from .settings import ServiceSettings

GENERATED_IMAGES = 256
# Least top-1 agreement between a model on CUDA and the same file on the CPU provider, on generated images.
# Loose enough for near-ties that float16 accumulation order flips; a wrong kernel or layout agrees far less.
MIN_AGREEMENT = 0.97
SPEED_BATCHES = (1, 256)
SPEED_SECONDS = 0.5  # per batch size: enough runs to average out one slow first call, short enough to wait for


def check_model(
    report: Report,
    entry: ModelEntry,
    models_dir: Path,
    device: Device,
    labelled: tuple[np.ndarray, np.ndarray] | None,
    speed: bool,
    settings: ServiceSettings,
    timing: Callable[[], None] = lambda: None,
):
    from inference.runtime import CudaPlacementError, ModelFileError

    from .loading import check_card, open_classifier

    path = models_dir / entry.file
    topic = f"model {entry.name}"
    try:
        model = open_classifier(path, settings, device)  # as the service runs it
        check_card(entry, model.card)
    except CudaPlacementError as exc:  # --device cuda: the service would refuse to start
        report.add("fail", topic, f"cannot run wholly on CUDA: {exc.reason}")
        return None
    except (ModelFileError, ManifestError) as exc:  # the service would refuse to start too
        report.add("fail", topic, str(exc))
        return None
    placement = model.placement
    cpu = model if not model.on_gpu else open_classifier(path, settings, "cpu")
    status: Status = "ok"
    where = placement.describe()
    if placement.fallback:
        status = "warn"
        where = f"{placement.provider}, not CUDA: {placement.fallback}"
    report.add(status, topic, f"{entry.precision}, every node on {where}")

    if labelled is not None:
        images, labels = labelled
        accuracy = _accuracy(model, images, labels)
        text = f"accuracy {100 * accuracy:.2f}% on {counted(len(labels), 'image')} (recorded on validation: "
        text += f"{100 * entry.metrics['val_top1']:.2f}%)"
        if model.on_gpu:
            on_cpu = _accuracy(cpu, images, labels)
            gap = 100 * abs(accuracy - on_cpu)
            allowed = precision(entry.precision).tolerance_points
            text += f", CPU provider {100 * on_cpu:.2f}%"
            report.add("ok" if gap <= allowed else "fail", topic, f"{text}, gap {gap:.2f} <= {allowed:g} points")
        else:
            report.add("ok", topic, text)
    else:
        images = generated_images(GENERATED_IMAGES, entry.input.size)
        probs = model.probabilities(images)
        if not np.isfinite(probs).all():
            report.add("fail", topic, "non-finite outputs on generated images")
        elif model.on_gpu:
            agreement = float((probs.argmax(1) == cpu.probabilities(images).argmax(1)).mean())
            ok = agreement >= MIN_AGREEMENT
            report.add(
                "ok" if ok else "fail",
                topic,
                f"top-1 agreement with the CPU provider {100 * agreement:.1f}% on {len(images)} generated images "
                f"(least {100 * MIN_AGREEMENT:g}%)",
            )
        else:
            report.add("ok", topic, f"runs on {len(images)} generated images, finite probabilities")
    if speed:
        timing()
        # the check above ran the model on a batch of GENERATED_IMAGES already: that batch size is warm
        warm = GENERATED_IMAGES if labelled is None or len(labelled[1]) >= GENERATED_IMAGES else None
        rates = ", ".join(
            f"batch {n}: {images_per_second(model, n, entry.input.size, warm=n == warm):,.0f}" for n in SPEED_BATCHES
        )
        report.add("info", topic, f"images/s on {placement.provider}: {rates}")
    return placement


def generated_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Smooth random colour fields with some noise, float32 [count, 3, H, W] in [0, 1]: structured enough that a
    CIFAR model's top-1 class is not a coin toss between near-tied logits, as it is on white noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    coarse = rng.random((count, 3, 4, 4), dtype=np.float32)
    smooth = np.repeat(np.repeat(coarse, -(-height // 4), axis=2), -(-width // 4), axis=3)[:, :, :height, :width]
    noisy = smooth + rng.normal(0, 0.05, smooth.shape).astype(np.float32)
    return np.clip(noisy, 0, 1).astype(np.float32)


def images_per_second(model, batch: int, size: tuple[int, int], warm: bool = False) -> float:
    """Images/s at ``batch``, timed over at least SPEED_SECONDS and one run. ``warm``: the model has run a batch
    of this size before (its first call's allocations and kernel choice are made), so no untimed call comes first:
    a multi-crop FP16 model's batch of 256 is slow on a few CPU cores, and an untimed one would double the wait."""
    x = generated_images(batch, size, seed=1)
    if not warm:
        model.logits(x)
    runs, start = 0, time.perf_counter()
    while runs < 1 or time.perf_counter() - start < SPEED_SECONDS:
        model.logits(x)
        runs += 1
    return runs * batch / (time.perf_counter() - start)


def _accuracy(model, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    predicted = np.concatenate([model.logits(images[i : i + batch]).argmax(1) for i in range(0, len(images), batch)])
    return float((predicted == labels).mean())
