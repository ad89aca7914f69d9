"""The exponential moving average of a network's weights (``train.ema_decay``), bias-corrected.

At a fixed decay the average starts as the network's random initial weights and keeps ``decay ** steps`` of them:
a run of few steps (a small folder dataset: 40 steps at 0.99 keep two thirds) would evaluate and export mostly
its initialisation. Corrected as Adam corrects its moments, the average after ``n + 1`` updates weighs them as
the fixed decay does (the newest 1, the one before ``decay``, ...), normalised to sum to one: each update's decay
is ``(decay - decay ** (n + 1)) / (1 - decay ** (n + 1))``, which rises to ``decay``. The first weights' share of
40 updates at 0.99 is 2%; the horizon of a long run's average, and so every recipe's, is the fixed decay's.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

Lerp = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor], float], None]


def _lerp_each(averages: Sequence[torch.Tensor], current: Sequence[torch.Tensor], weight: float) -> None:
    for a, c in zip(averages, current):
        a.lerp_(c, weight)


def pick_lerp() -> Lerp:
    """torch's private ``_foreach_lerp_`` (one kernel launch per group of tensors on a GPU, not one per tensor),
    else the same ``lerp_`` per tensor, where a torch release no longer has it."""
    fused = getattr(torch, "_foreach_lerp_", None)
    if fused is None:
        return _lerp_each

    def lerp(averages: Sequence[torch.Tensor], current: Sequence[torch.Tensor], weight: float) -> None:
        fused(list(averages), list(current), weight)

    return lerp


_lerp = pick_lerp()


def corrected_decay(decay: float, averaged: int) -> float:
    """The decay of the update after ``averaged`` updates (the first one copies the weights)."""
    oldest = decay ** (averaged + 1)
    return (decay - oldest) / (1 - oldest)


class WeightEMA(AveragedModel):
    """``AveragedModel``'s EMA of the weights and buffers (BatchNorm's statistics averaged with them) at the
    corrected decay, kept as torch keeps it (the same update, the same ``n_averaged`` in the checkpoint). Its own
    update reads its count of updates on the host: torch's copies ``n_averaged`` to the weights' device every
    step, which on a GPU is a blocking copy that makes each training step wait for the GPU."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self.updates = 0

    def restore_updates(self, updates: int) -> None:
        """A resumed run's count of updates (``n_averaged`` in its checkpoint), so that it goes on at the same
        decay."""
        self.updates = updates
        self.n_averaged.fill_(updates)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        averages = [*self.module.parameters(), *self.module.buffers()]
        current = [t.detach() for t in (*model.parameters(), *model.buffers())]
        current = [c if c.device == a.device else c.to(a.device) for a, c in zip(averages, current, strict=True)]
        if self.updates == 0:
            for a, c in zip(averages, current):
                a.copy_(c)
        else:
            decay = corrected_decay(self.decay, self.updates)
            floats = [(a, c) for a, c in zip(averages, current) if a.is_floating_point()]
            if floats:
                _lerp([a for a, _ in floats], [c for _, c in floats], 1 - decay)
            for a, c in zip(averages, current):
                if not a.is_floating_point():  # BatchNorm's step counters: as torch's EMA averages them
                    a.copy_(a * decay + c * (1 - decay))
        self.n_averaged += 1  # on the host, where AveragedModel keeps it
        self.updates += 1
