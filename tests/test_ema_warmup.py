"""The weights' EMA (train.ema_decay) rises to its decay over its first updates: at a fixed decay a short run
(a small folder dataset's few steps) evaluated and exported mostly its random initial weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.ema import WARMUP_OFFSET, warmed_up_decay, weight_ema


def _averaged_after(steps: int, decay: float) -> float:
    """The EMA of a weight that starts at 0 (the first update copies it) and is 1 for every later update."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = weight_ema(model, decay)
    ema.update_parameters(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(steps - 1):
        ema.update_parameters(model)
    return float(ema.module.weight.detach())


def test_a_short_runs_average_is_its_trained_weights_not_its_initial_ones():
    """40 updates at 0.99 kept 0.99**39 = 68% of the initial weight; warmed up, the initial weight's share is the
    product of the rising decays, (2 x 3 x ... x 40) / (11 x 12 x ... x 49): about 2e-12."""
    kept = math.prod((1 + n) / (WARMUP_OFFSET + n) for n in range(1, 40))
    assert _averaged_after(40, 0.99) == pytest.approx(1 - kept, abs=1e-6)
    assert _averaged_after(40, 0.99) > 0.999


def test_the_decay_rises_to_the_configured_one_and_stays_there():
    assert warmed_up_decay(0.99, 1) == pytest.approx(2 / 11)
    assert warmed_up_decay(0.99, 889) < 0.99 and warmed_up_decay(0.99, 891) == 0.99
    assert all(warmed_up_decay(0.999, n) <= warmed_up_decay(0.999, n + 1) <= 0.999 for n in range(0, 20000, 7))


def test_after_the_rise_an_update_is_torchs_fixed_decay_bit_for_bit():
    torch.manual_seed(0)
    model, other = nn.Linear(8, 4), nn.Linear(8, 4)
    ours, torchs = weight_ema(model, 0.99), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    for averaged in (ours, torchs):
        averaged.update_parameters(model)
        averaged.n_averaged.fill_(5000)  # past the rise
        averaged.update_parameters(other)
    for a, b in zip(ours.module.parameters(), torchs.module.parameters()):
        assert torch.equal(a, b)
