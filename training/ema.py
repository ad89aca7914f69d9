"""The exponential moving average of a network's weights (``train.ema_decay``), warmed up.

At a fixed decay the average starts as the network's random initial weights and keeps ``decay ** steps`` of them:
a run of few steps (a small folder dataset: 40 steps at 0.99 keep two thirds) would evaluate and export mostly
its initialisation. So the decay rises as ``(1 + n) / (10 + n)`` after ``n`` updates until it reaches
``train.ema_decay`` (TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``; timm's EMA warm-up). A long
run's average is the fixed decay's: the first steps' share of it is ``decay ** (steps - n)`` by the time the rise
ends (at 0.99, about 890 updates in), and every update after it is the fixed decay's own.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

# (1 + n) / (WARMUP_OFFSET + n): the decay after n updates while it is below the configured one.
WARMUP_OFFSET = 10


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of the update after ``updates`` earlier ones."""
    return min(decay, (1 + updates) / (WARMUP_OFFSET + updates))


Tensors = Sequence[torch.Tensor]


def warmed_up_ema_fn(decay: float) -> Callable[[Tensors, Tensors, torch.Tensor | int], None]:
    """``AveragedModel``'s ``multi_avg_fn`` for an EMA of ``decay`` warmed up: the update torch's own EMA makes,
    at ``warmed_up_decay``. ``n_averaged`` is part of the checkpoint, so a resumed run goes on at the same decay."""
    steady = get_ema_multi_avg_fn(decay)

    def update(averages: Tensors, current: Tensors, n_averaged: torch.Tensor | int) -> None:
        now = warmed_up_decay(decay, int(n_averaged))
        (steady if now == decay else get_ema_multi_avg_fn(now))(averages, current, n_averaged)

    return update


def weight_ema(model: nn.Module, decay: float) -> AveragedModel:
    """The warmed-up EMA of ``model``'s weights and buffers (BatchNorm's statistics averaged with them)."""
    return AveragedModel(model, multi_avg_fn=warmed_up_ema_fn(decay), use_buffers=True)
