"""The weights' EMA lerps through torch's private ``_foreach_lerp_``, checked once: where a torch release no longer
has it, a ``lerp_`` per tensor gives the same averaged weights."""

from __future__ import annotations

import torch
from torch import nn

import training.ema as ema
from training.ema import WeightEMA


def _averaged(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    average = WeightEMA(model, 0.9)
    for _ in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(8, 3, 8, 8))  # BatchNorm's running statistics and step counter move too
        average.update_parameters(model)
    return {k: v.clone() for k, v in average.module.state_dict().items()}


def test_this_torch_has_the_fused_lerp_the_average_uses():
    # breaks loudly when torch drops its private API: the average then runs on the slower fallback
    assert hasattr(torch, "_foreach_lerp_")
    assert ema.pick_lerp() is not ema._lerp_each


def test_without_foreach_lerp_the_fallback_averages_the_same_weights(monkeypatch):
    fast = _averaged(0)
    monkeypatch.delattr(torch, "_foreach_lerp_")
    fallback = ema.pick_lerp()
    assert fallback is ema._lerp_each
    monkeypatch.setattr(ema, "_lerp", fallback)
    slow = _averaged(0)
    assert fast.keys() == slow.keys()
    for key in fast:
        assert torch.equal(fast[key], slow[key]), key
