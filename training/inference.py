"""Batched prediction and the top-k accuracy helpers used by training, evaluation and export."""
from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn

from .data.loader import TensorLoader


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


TTA_CHOICES = ("none", "flip")


class FlipAverage(nn.Module):
    """Logits averaged over the image and its mirror: flip test-time augmentation as a model, so the
    exported ONNX graph and ``evaluate --tta flip`` compute the same thing (at twice the cost)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x).float() + self.model(x.flip(3)).float()) / 2


def check_tta(tta: str) -> None:
    if tta not in TTA_CHOICES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTA_CHOICES)}")


def with_tta(model: nn.Module, tta: str) -> nn.Module:
    check_tta(tta)
    return FlipAverage(model) if tta == "flip" else model


@torch.no_grad()
def predict_logits(model: nn.Module, loader: TensorLoader, bf16: bool = False, tta_flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return float32 logits [N, C] and labels [N] over a non-shuffled loader."""
    model = with_tta(model, "flip" if tta_flip else "none").eval()
    logits, labels = [], []
    for x, y in loader:
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
