"""The training numbers against the sources the recipes cite (Keller Jordan's airbench94.py, airbench95.py and
airbench94_muon.py): the learning rate each optimizer step takes through the trainer, micro-batches included, and
each parameter group's weight decay per step."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_overrides
from training.config import ScheduleConfig
from training.config_recipes import build_config
from training.engine import Trainer
from training.models import create_model
from training.optim import build_optimizer, lr_factor


def test_every_group_follows_airbench94_muons_linear_decay_once_per_optimizer_step(image_folder, tmp_path):
    """The source sets each group's lr to its initial lr x (1 - step / total_train_steps) before step number
    ``step`` (from 0), for the SGD groups and Muon's alike. Here a batch of 8 computed in micro-batches of 4 is one
    optimizer step, and one step of the schedule."""
    overrides = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        **{
            "model.name": "airbench94",
            "model.args": "{widths: [8, 8, 8]}",
            "optim.name": "muon",
            "optim.lr": 0.05,
            "schedule.name": "linear",
            "epochs": 2,
            "batch_size": 8,
            "micro_batch_size": 4,
        },
    )
    trainer = Trainer(build_config("airbench94_muon", overrides), tmp_path / "run")
    taken: list[list[float]] = []
    trainer.optimizer.register_step_pre_hook(
        lambda optimizer, args, kwargs: taken.append([group["lr"] for group in optimizer.param_groups])
    )
    initial = [group["initial_lr"] for group in trainer.optimizer.param_groups]
    muon = next(i for i, group in enumerate(trainer.optimizer.param_groups) if group["muon"])
    assert initial[muon] == pytest.approx(0.24)  # the recipe's muon_lr, on the same schedule
    assert max(initial) == pytest.approx(0.05 * 64)  # BatchNorm shifts at 64x
    trainer.fit()
    total = len(trainer.train_loader) * 2
    assert len(taken) == total and total > 2
    for k, lrs in enumerate(taken):
        assert lrs == pytest.approx([lr * (1 - k / total) for lr in initial], rel=1e-12), k


def _reference_triangle(steps: int, start: float, end: float, peak: float) -> torch.Tensor:
    """airbench94.py's ``triangle``: piecewise linear through (0, start), (int(peak x steps), 1), (steps, end)."""
    xp = torch.tensor([0, int(peak * steps), steps])
    fp = torch.tensor([start, 1, end], dtype=torch.float64)
    x = torch.arange(1 + steps)
    m = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])
    b = fp[:-1] - (m * xp[:-1])
    indices = torch.clamp(torch.sum(torch.ge(x[:, None], xp[None, :]), 1) - 1, 0, len(m) - 1)
    return m[indices] * x + b[indices]


@pytest.mark.parametrize("recipe", ["airbench94", "airbench95"])
def test_the_triangular_recipes_take_the_sources_triangle_at_every_step(recipe):
    """At the recipe's own settings and its 43 steps an epoch (45,000 images in batches of 1,024), where the peak
    falls on a whole step as the source rounds it to."""
    cfg = build_config(recipe)
    s, epochs, per_epoch = cfg.schedule, cfg.train.epochs, 45_000 // cfg.train.batch_size
    total = per_epoch * epochs
    reference = _reference_triangle(total, s.initial_lr_fraction, s.final_lr_fraction, s.peak_fraction)
    ours = torch.tensor([lr_factor(k, per_epoch, epochs, s) for k in range(total + 1)], dtype=torch.float64)
    assert torch.allclose(ours, reference, atol=1e-12)
    assert ours.max() == 1.0 and ours[0] == pytest.approx(s.initial_lr_fraction)


def test_a_warmup_reaches_the_peak_on_its_last_step_and_the_decay_ends_one_step_above_the_floor():
    """resnet9_half_cpu's shape: linear from 1/(warmup steps) to 1 over the warmup, then linear to the floor, which
    the step after the last would take."""
    s = ScheduleConfig(name="linear", warmup_epochs=5, final_lr_fraction=0.0)
    per_epoch, epochs = 87, 40
    warm, total = 5 * per_epoch, per_epoch * epochs
    assert lr_factor(0, per_epoch, epochs, s) == pytest.approx(1 / warm)
    assert lr_factor(warm - 1, per_epoch, epochs, s) == 1.0 == lr_factor(warm, per_epoch, epochs, s)
    assert lr_factor(total - 1, per_epoch, epochs, s) == pytest.approx(1 / (total - warm))
    assert lr_factor(total, per_epoch, epochs, s) == 0.0


def _decay_per_step(group: dict) -> float:
    return group["lr"] * group["weight_decay"]


@pytest.mark.parametrize(
    ("recipe", "source_decay"),
    [
        # airbench94.py / airbench95.py: wd = weight_decay x batch_size / kilostep_scale, each group's
        # weight_decay being wd / its lr, so wd itself per step; kilostep_scale = 1024 x (1 + 1 / (1 - momentum))
        ("airbench94", 0.0153 * 1024 / (1024 * (1 + 1 / (1 - 0.85)))),
        ("airbench95", 0.0153 * 1024 / (1024 * (1 + 1 / (1 - 0.85)))),
        # airbench94_muon.py: wd = 2e-6 x batch_size, each SGD group's weight_decay wd / its lr
        ("airbench94_muon", 2e-6 * 2000),
    ],
)
def test_each_sgd_group_decays_per_step_as_the_source_and_muons_filters_not_at_all(recipe, source_decay):
    cfg = build_config(recipe)
    model = create_model("airbench94", 10, widths=(8, 8, 8))
    optimizer = build_optimizer(model, cfg.optim, torch.rand(2, 3, 32, 32))
    decayed = [g for g in optimizer.param_groups if not g.get("muon")]
    # the weights (SGD's filters, the head) with the whitening bias, and the BatchNorm shifts at 64x the lr
    assert len(decayed) == 2
    for group in decayed:
        assert _decay_per_step(group) == pytest.approx(source_decay, rel=0.01)
    assert all(g["weight_decay"] == 0.0 for g in optimizer.param_groups if g.get("muon"))
