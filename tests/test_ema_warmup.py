"""The weights' EMA (train.ema_decay) is bias-corrected: at a fixed decay a short run (a small folder dataset's
few steps) evaluated and exported mostly its random initial weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from training.ema import WeightEMA, corrected_decay


def _averaged_after(updates: int, decay: float) -> float:
    """The EMA of a weight that is 0 at the first update (which copies it) and 1 at every later one."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = WeightEMA(model, decay)
    ema.update_parameters(model)
    with torch.no_grad():
        model.weight.fill_(1.0)
    for _ in range(updates - 1):
        ema.update_parameters(model)
    return float(ema.module.weight.detach())


def test_a_short_runs_average_is_its_trained_weights_not_its_initial_ones():
    """40 updates at 0.99 kept 0.99**39 = 68% of the initial weight; corrected, its share is its weight in the fixed
    decay's sum, normalised: 0.99**39 / (1 + 0.99 + ... + 0.99**39), about 2%."""
    first = 0.99**39 * (1 - 0.99) / (1 - 0.99**40)
    assert first == pytest.approx(0.0204, abs=1e-4)
    assert _averaged_after(40, 0.99) == pytest.approx(1 - first, abs=1e-6)


def test_the_decay_rises_to_the_configured_one_and_keeps_its_horizon():
    assert corrected_decay(0.99, 1) == pytest.approx(0.99 / 1.99)  # two updates: weighed 0.99 and 1, normalised
    assert all(corrected_decay(0.999, n) < corrected_decay(0.999, n + 1) < 0.999 for n in range(1, 9000, 7))
    # a long recipe's average is the fixed decay's: 3,500 steps at 0.999 (se_resnet18_fast) end within 4e-5 of it
    assert corrected_decay(0.999, 3500) == pytest.approx(0.999, abs=4e-5)


def test_after_many_updates_an_update_is_torchs_fixed_decay_bit_for_bit():
    torch.manual_seed(0)
    model, other = nn.Linear(8, 4), nn.Linear(8, 4)
    ours, torchs = WeightEMA(model, 0.99), AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.99))
    ours.update_parameters(model)
    torchs.update_parameters(model)
    ours.restore_updates(5000)
    torchs.n_averaged.fill_(5000)
    ours.update_parameters(other)
    torchs.update_parameters(other)
    for a, b in zip(ours.module.parameters(), torchs.module.parameters()):
        assert torch.equal(a, b)


def test_an_update_copies_nothing_between_host_and_device(monkeypatch):
    """torch's update copies its count of updates (on the host) to the weights' device every step: on a GPU a
    blocking copy, which makes each training step wait for the GPU. A network on the meta device stands for one on
    a GPU: every copy of a tensor to another device is recorded."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    ema = WeightEMA(model, 0.999)
    copies = []
    real_to = torch.Tensor.to

    def to(tensor, *args, **kwargs):
        moved = real_to(tensor, *args, **kwargs)
        if moved.device != tensor.device:
            copies.append((tensor.device.type, moved.device.type))
        return moved

    monkeypatch.setattr(torch.Tensor, "to", to)
    for _ in range(3):
        ema.update_parameters(model)
    assert copies == [] and ema.updates == 3 and int(ema.n_averaged) == 3, copies


def test_the_average_weighs_the_updates_as_the_fixed_decay_does_normalised():
    torch.manual_seed(1)
    model, decay, seen = nn.Linear(3, 2), 0.9, []
    ema = WeightEMA(model, decay)
    for _ in range(7):
        with torch.no_grad():
            model.weight.normal_()
        seen.append(model.weight.detach().clone())
        ema.update_parameters(model)
    weights = torch.tensor([decay ** (len(seen) - 1 - k) for k in range(len(seen))])
    expected = sum(w * s for w, s in zip(weights / weights.sum(), seen))
    assert torch.allclose(ema.module.weight, expected, atol=1e-6)
