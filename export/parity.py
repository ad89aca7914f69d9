"""Measure an ONNX model against its PyTorch checkpoint on the same real images."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from inference.messages import counted
from inference.precisions import precision as precision_entry
from inference.preprocess import to_model_input
from inference.runtime import OnnxClassifier, softmax
from training.inference import topk_accuracy
from training.reports.graph import graph_logits

# Images per PyTorch and ONNX Runtime call while measuring: the card's images/s row (export/card.py) names it.
BATCH = 256


@dataclass
class Parity:
    precision: str
    samples: int
    torch_top1: float
    onnx_top1: float
    onnx_top5: float
    top1_agreement: float
    max_abs_prob_diff: float
    torch_images_per_s: float
    onnx_images_per_s: float
    failures: list[str] = field(default_factory=list)
    # what the ONNX model was measured against: the checkpoint, or an FP32 graph standing in for it (rederive)
    reference: str = "PyTorch"
    # the limits among the failures that a number of images measures (what, limit in points), for ``too_few_images``
    failed_limits: list[tuple[str, float]] = field(default_factory=list)
    # the whole validation split's images, of which ``samples`` were drawn (None: not known)
    split_images: int | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def accuracy_diff_points(self) -> float:
        return 100 * (self.onnx_top1 - self.torch_top1)

    def as_dict(self) -> dict:
        d = asdict(self)
        del d["reference"]  # the card says it: source.derived_from
        del d["failed_limits"], d["split_images"]  # said when it fails, and a failure is never recorded
        d["accuracy_diff_points"] = self.accuracy_diff_points
        d["passed"] = self.passed
        return d

    @property
    def compared(self) -> bool:
        """Whether PyTorch ran beside ONNX Runtime; without the checkpoint only the recorded top-1 is compared."""
        return not math.isnan(self.top1_agreement)

    def verdict(self) -> str:
        """The failures, and on a line of its own what ``too_few_images`` says of them."""
        note = self.too_few_images()
        return "; ".join(self.failures) + (f"\n{note}" if note else "")

    def too_few_images(self) -> str | None:
        """What to say when one image of ``samples`` moves a figure by more than a limit it failed: on so few
        images any one that differs fails that limit, so the verdict cannot tell a real difference from chance."""
        if not self.samples:
            return None
        one = 100 / self.samples
        coarse = [(what, limit) for what, limit in self.failed_limits if 0 < limit < one - 1e-9]
        if not coarse:
            return None
        what, limit = min(coarse, key=lambda failed: failed[1])
        # the fewest images of which one moves the figure by the limit at most, which then passes (judge)
        needed = math.ceil(100 / limit - 1e-9)
        said = (
            f"on {counted(self.samples, 'image')} one image is {one:.2f} points, more than the {limit:g}-point {what}"
        )
        whole = self.split_images
        if whole is not None and whole < needed:
            return (
                f"{said}: too few to judge, and the validation split holds only {counted(whole, 'image')}; judging "
                f"this limit takes a split of at least {needed:,} (data.val_size)"
            )
        return (
            f"{said}: too few to judge; check on at least {needed:,} images (--max-val-images {needed}, or the "
            "whole split)"
        )

    def summary(self) -> str:
        accuracy = (
            f"{self.precision}: {self.reference} top-1 {100 * self.torch_top1:.2f}%"
            f"{'' if self.compared else ' (recorded at export)'}, ONNX top-1 {100 * self.onnx_top1:.2f}% "
            f"({self.accuracy_diff_points:+.2f} points), "
        )
        if not self.compared:
            return (
                f"{accuracy}{counted(self.samples, 'image')}; no checkpoint here, so no per-image agreement; "
                f"throughput ONNX Runtime {self.onnx_images_per_s:.0f} img/s"
            )
        return (
            f"{accuracy}top-1 agreement {100 * self.top1_agreement:.2f}%, "
            f"max |dp| {self.max_abs_prob_diff:.2e}, {counted(self.samples, 'image')}; "
            f"throughput {self.reference} {self.torch_images_per_s:.0f} img/s, "
            f"ONNX Runtime {self.onnx_images_per_s:.0f} img/s"
        )


def _batches(images: np.ndarray, batch_size: int, desc: str):
    for i in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", leave=False):
        yield to_model_input(images[i : i + batch_size])


@torch.no_grad()
def torch_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int = BATCH) -> tuple[np.ndarray, float]:
    """float64 logits of the FP32 model and its images per second."""
    model = model.eval().float()
    out, start = [], time.perf_counter()
    for x in _batches(images, batch_size, "PyTorch"):
        out.append(model(torch.from_numpy(x)).double())
    elapsed = time.perf_counter() - start
    return torch.cat(out).numpy(), len(images) / elapsed


def onnx_logits(classifier: OnnxClassifier, images: np.ndarray, batch_size: int = BATCH) -> tuple[np.ndarray, float]:
    """float64 logits of the graph and its images per second: the logits ``python -m training evaluate --onnx``
    reports (``training.reports.graph``), so the card's figures are the report's."""
    start = time.perf_counter()
    logits = graph_logits(classifier.logits, images, batch_size)
    elapsed = time.perf_counter() - start
    return logits.astype(np.float64), len(images) / elapsed


def judge(
    precision: str,
    torch_probs: np.ndarray | None,
    onnx_probs: np.ndarray,
    labels: np.ndarray,
    torch_top1_value: float,
    torch_speed: float,
    onnx_speed: float,
    reference: str = "PyTorch",
    split_images: int | None = None,
) -> Parity:
    """``split_images``: how many images the validation split holds, of which ``labels`` are (the advice when
    they are too few to judge by; see ``Parity.too_few_images``)."""
    onnx_top1 = topk_accuracy(onnx_probs, labels, 1)
    compared = torch_probs is not None
    if torch_probs is None:
        agreement = max_diff = float("nan")
    else:
        agreement = float((torch_probs.argmax(1) == onnx_probs.argmax(1)).mean())
        max_diff = float(np.abs(torch_probs - onnx_probs).max())
    parity = Parity(
        precision,
        len(labels),
        torch_top1_value,
        onnx_top1,
        topk_accuracy(onnx_probs, labels, 5),
        agreement,
        max_diff,
        torch_speed,
        onnx_speed,
        reference=reference,
        split_images=split_images,
    )
    # A NaN or infinite output (an FP16 overflow, a diverged checkpoint) ranks its classes arbitrarily and
    # compares as no difference: counted on its own, since a few such images pass the agreement and accuracy limits.
    broken = int((~np.isfinite(onnx_probs).all(axis=1)).sum())
    if broken:
        parity.failures.append(
            f"{broken} of {counted(len(onnx_probs), 'image')} {'gives' if broken == 1 else 'give'} NaN or infinite "
            f"outputs (first: image "
            f"{int(np.argmin(np.isfinite(onnx_probs).all(axis=1)))})"
        )
    if torch_probs is not None and not np.isfinite(torch_probs).all():
        parity.failures.append(
            f"the {reference} reference gives NaN or infinite outputs on "
            f"{counted(int((~np.isfinite(torch_probs).all(axis=1)).sum()), 'image')}: the model itself is broken there"
        )
    entry = precision_entry(precision)
    tolerance = entry.tolerance_points
    # Points come from counts of images: a difference of exactly the tolerance (25 images of 5,000 at 0.5) is
    # 0.5000000000000004 in floating point and must pass.
    if abs(parity.accuracy_diff_points) > tolerance + 1e-9:
        parity.failures.append(
            f"accuracy differs by {parity.accuracy_diff_points:+.3f} points (tolerance {tolerance} for {precision})"
        )
        parity.failed_limits.append((f"top-1 tolerance for {precision}", tolerance))
    needed = entry.min_agreement
    if needed is not None and compared and agreement < needed:
        parity.failures.append(f"top-1 agreement {100 * agreement:.2f}% is below {100 * needed:g}% for {precision}")
        # one image that the two rank differently costs 100/N points of agreement
        shortfall = round(100 * (1 - needed), 9)  # 100 * (1 - 0.98) is 2.0000000000000018
        parity.failed_limits.append((f"agreement limit ({100 * needed:g}%) for {precision}", shortfall))
    most = entry.max_prob_diff
    if most is not None and compared and max_diff > most:
        parity.failures.append(f"a probability differs by {max_diff:.2e} (at most {most:g} for {precision})")
    return parity


def parity_and_logits(
    model: torch.nn.Module, classifier: OnnxClassifier, images: np.ndarray, labels: np.ndarray, batch_size: int = BATCH
) -> tuple[Parity, np.ndarray]:
    """The parity of ``classifier`` with ``model``, and the ONNX logits it was measured on (float64)."""
    reference, torch_speed = torch_logits(model, images, batch_size)
    return parity_against(reference, torch_speed, classifier, images, labels, batch_size)


def parity_against(
    reference_logits: np.ndarray,
    torch_speed: float,
    classifier: OnnxClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = BATCH,
    split_images: int | None = None,
    reference: str = "PyTorch",
) -> tuple[Parity, np.ndarray]:
    """``parity_and_logits`` with the reference's logits already computed (float64, what the graph should output:
    PyTorch's, or the FP32 graph's a derived graph came from, named by ``reference``); ``split_images`` as
    ``judge`` takes it."""
    torch_probs = softmax(reference_logits)
    logits, onnx_speed = onnx_logits(classifier, images, batch_size)
    onnx_probs = softmax(logits)
    parity = judge(
        classifier.card.precision,
        torch_probs,
        onnx_probs,
        labels,
        topk_accuracy(torch_probs, labels, 1),
        torch_speed,
        onnx_speed,
        reference,
        split_images=split_images,
    )
    return parity, logits


def measure_parity(
    model: torch.nn.Module, classifier: OnnxClassifier, images: np.ndarray, labels: np.ndarray, batch_size: int = BATCH
) -> Parity:
    return parity_and_logits(model, classifier, images, labels, batch_size)[0]
