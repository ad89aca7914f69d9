"""The exponential moving average of a network's weights (``train.ema_decay``), bias-corrected.

At a fixed decay the average starts as the network's random initial weights and keeps ``decay ** steps`` of them:
a run of few steps (a small folder dataset: 40 steps at 0.99 keep two thirds) would evaluate and export mostly
its initialisation. Corrected as Adam corrects its moments, the average after ``n + 1`` updates weighs them as
the fixed decay does (the newest 1, the one before ``decay``, ...), normalised to sum to one: each update's decay
is ``(decay - decay ** (n + 1)) / (1 - decay ** (n + 1))``, which rises to ``decay``. The first weights' share of
40 updates at 0.99 is 2%; the horizon of a long run's average, and so every recipe's, is the fixed decay's.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def corrected_decay(decay: float, averaged: int) -> float:
    """The decay of the update after ``averaged`` updates (the first one copies the weights)."""
    oldest = decay ** (averaged + 1)
    return (decay - oldest) / (1 - oldest)


class WeightEMA(AveragedModel):
    """``AveragedModel``'s EMA of the weights and buffers (BatchNorm's statistics averaged with them) at the
    corrected decay. The count of updates is kept on the host as well as in ``n_averaged`` (the checkpoint's), so
    that no update reads a GPU tensor back, which would make every training step wait for the GPU."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=self._average, use_buffers=True)
        self.decay = decay
        self.updates = 0
        self._now = decay

    def restore_updates(self, updates: int) -> None:
        """A resumed run's count of updates (``n_averaged`` in its checkpoint), so that it goes on at the same
        decay."""
        self.updates = updates
        self.n_averaged.fill_(updates)

    def update_parameters(self, model: nn.Module) -> None:
        self._now = corrected_decay(self.decay, self.updates)
        super().update_parameters(model)
        self.updates += 1

    def _average(self, averages: Sequence[torch.Tensor], current: Sequence[torch.Tensor], n: object) -> None:
        get_ema_multi_avg_fn(self._now)(averages, current, n)
