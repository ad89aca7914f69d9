"""Batched prediction and the top-k accuracy helpers used by training, evaluation and export."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from inference.errors import UsageError

from .data.targets import Targets


def hardware_bf16(device: torch.device) -> bool:
    """Whether bf16 runs natively: a ROCm GPU, a CUDA GPU of compute capability 8 (Ampere) or later, or a CPU with
    AVX512-BF16 or AMX (read from /proc/cpuinfo). An AVX2-only CPU emulates it at a small fraction of its float32
    speed, as does an older GPU."""
    if device.type == "cuda":
        # torch.cuda.is_bf16_supported() counts emulation in by default (a V100 or T4 says yes), and asks the
        # current device rather than this one
        if not torch.cuda.is_available():
            return False
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device)[0] >= 8
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def resolve_bf16(setting: bool | str, device: torch.device) -> bool:
    return hardware_bf16(device) if setting == "auto" else bool(setting)


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# Test-time augmentation: each choice is a list of views (crop offset into the image padded by one pixel with
# reflection, 1 being the image itself; mirrored or not) and their weights. "multicrop" is airbench's level 2:
# the flip average counts half, the two one-pixel diagonal translations (each flip-averaged) a quarter each.
TTA_VIEWS: dict[str, tuple[tuple[int, bool, float], ...]] = {
    "none": ((1, False, 1.0),),
    "flip": ((1, False, 0.5), (1, True, 0.5)),
    "multicrop": (
        (1, False, 0.25),
        (1, True, 0.25),
        (0, False, 0.125),
        (0, True, 0.125),
        (2, False, 0.125),
        (2, True, 0.125),
    ),
}
TTA_CHOICES = tuple(TTA_VIEWS)
TTA_DESCRIPTIONS = {
    "none": "no test-time augmentation",
    "flip": "flip test-time augmentation (the image and its mirror)",
    "multicrop": "multi-crop test-time augmentation (mirror and one-pixel translations, 6 views)",
}


class ViewAverage(nn.Module):
    """Logits averaged over the views of a TTA choice, as a model: the exported ONNX graph and
    ``evaluate --tta`` compute the same thing. The views go through the network as one batch."""

    def __init__(self, model: nn.Module, tta: str) -> None:
        super().__init__()
        check_tta(tta)
        self.model, self.views = model, TTA_VIEWS[tta]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        padded = (
            nn.functional.pad(x, (1, 1, 1, 1), mode="reflect") if any(offset != 1 for offset, _, _ in self.views) else x
        )
        crops = [
            x if offset == 1 else padded[:, :, offset : offset + h, offset : offset + w] for offset, _, _ in self.views
        ]
        batch = torch.cat([c.flip(3) if mirrored else c for c, (_, mirrored, _) in zip(crops, self.views)])
        logits = self.model(batch).float().unflatten(0, (len(self.views), -1))
        # Plain-float weights: wrapping happens after the model is on its device, where a buffer would not follow.
        return sum(weight * view for (_, _, weight), view in zip(self.views, logits))


def network_of(module: nn.Module) -> nn.Module:
    """The network inside a ViewAverage, or the module itself."""
    return module.model if isinstance(module, ViewAverage) else module


def check_tta(tta: str) -> None:
    if tta not in TTA_VIEWS:
        raise UsageError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_CHOICES)}")


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    check_tta(tta)
    return model if tta == "none" else ViewAverage(model, tta)


def tta_logits_numpy(logits_fn, batch: np.ndarray, tta: str) -> np.ndarray:
    """The same averaging for a function of float NCHW arrays (an ONNX Runtime session): one call over all views."""
    check_tta(tta)
    views = TTA_VIEWS[tta]
    if tta == "none":
        return logits_fn(batch)
    h, w = batch.shape[2:]
    padded = np.pad(batch, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")
    crops = [batch if o == 1 else padded[:, :, o : o + h, o : o + w] for o, _, _ in views]
    stacked = np.concatenate([c[..., ::-1] if m else c for c, (_, m, _) in zip(crops, views)])
    logits = np.asarray(logits_fn(np.ascontiguousarray(stacked)), dtype=np.float32).reshape(len(views), len(batch), -1)
    return np.tensordot(np.array([v[2] for v in views], np.float32), logits, axes=1)


class Batches(Protocol):
    """Images and labels in batches on ``device``: a TensorLoader, or one seen through a progress bar."""

    device: torch.device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Targets]]: ...


@torch.no_grad()
def predict_logits(
    model: nn.Module, loader: Batches, bf16: bool = False, tta: str = "none"
) -> tuple[np.ndarray, np.ndarray]:
    """Return float32 logits [N, C] and labels [N] over a non-shuffled loader."""
    model = with_tta(model, tta).eval()
    logits, labels = [], []
    for x, y in loader:
        assert isinstance(y, torch.Tensor), "an evaluation loader does not mix its labels"
        with autocast(loader.device, bf16):
            out = model(x).float()
        logits.append(out.cpu())
        labels.append(y.cpu())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Ties go to the lower class index, as with argmax (INT8 logits tie often)."""
    k = min(k, logits.shape[1])
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float((topk == labels[:, None]).any(axis=1).mean())


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
