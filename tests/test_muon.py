"""Muon (training/muon.py): the orthogonalisation, the two kinds of step, the parameter routing, exact resume."""

from __future__ import annotations

import math
import typing

import pytest
import torch
from torch import nn

from conftest import tiny_overrides, train_straight_and_resumed
from training.config import OptimConfig
from training.config_recipes import build_config
from training.models import create_model
from training.muon import Muon, filters_by_normalisation, orthogonalize
from training.optim import OPTIMIZERS, build_optimizer


@pytest.mark.parametrize("shape", [(16, 40), (40, 16)])
@pytest.mark.parametrize("steps", [3, 5])
def test_orthogonalize_keeps_singular_vectors_and_pushes_values_towards_one(shape, steps):
    gen = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(shape[0], 16, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], 16, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -1, 16, dtype=torch.float64)  # singular values spread over a factor of 10
    g = u @ torch.diag(s) @ v.T
    x = orthogonalize(g, steps)
    inner = u.T @ x @ v  # diagonal if x has g's singular vectors
    assert (inner - torch.diag(torch.diagonal(inner))).abs().max() < 1e-8
    values = torch.diagonal(inner)
    # About 0.7-1.2, as the coefficients promise, and in g's order.
    assert values.min() > 0.6 and values.max() < 1.25
    assert torch.allclose(torch.linalg.svdvals(x).sort().values, values.sort().values)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _set_grads(model: nn.Module, step: int) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


@pytest.mark.parametrize("momentum, nesterov", [(0.85, True), (0.85, False), (0.0, False)])
def test_groups_without_the_muon_flag_step_exactly_as_torch_sgd(momentum, nesterov):
    a, b = _model(), _model()
    settings = dict(lr=0.1, momentum=momentum, nesterov=nesterov, weight_decay=5e-3)
    muon = Muon(a.parameters(), ns_steps=3, **settings)
    sgd = torch.optim.SGD(b.parameters(), **settings)
    for step in range(3):
        _set_grads(a, step)
        _set_grads(b, step)
        muon.step()
        sgd.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6)
    assert (len(muon.state) > 0) == (momentum > 0)  # as SGD: no momentum buffer without momentum


def test_a_muon_step_rescales_the_filters_then_follows_the_orthogonalised_nesterov_momentum():
    model = _model()
    conv = model[0].weight
    before = conv.detach().clone()
    opt = Muon([{"params": [conv], "muon": True, "lr": 0.24, "momentum": 0.6}], lr=1.0, ns_steps=3)
    _set_grads(model, 0)
    grad = conv.grad.clone()
    opt.step()
    rescaled = before * math.sqrt(8) / before.norm()
    direction = orthogonalize((1.6 * grad).reshape(8, -1), 3).view_as(grad)  # first step: g + 0.6 g
    assert torch.allclose(conv.detach(), rescaled - 0.24 * direction, atol=1e-6)
    # No weight decay on filters: the rescaling already fixes their scale.
    opt2 = Muon([{"params": [conv], "muon": True}], lr=0.1, weight_decay=0.5)
    conv.grad = torch.zeros_like(conv)
    opt2.step()
    assert conv.norm().item() == pytest.approx(math.sqrt(8), rel=1e-5)


def test_muon_routes_filters_to_muon_and_everything_else_to_sgd():
    cfg = build_config("airbench94_muon")
    model = create_model("airbench94", 10, widths=(8, 8, 8))
    opt = build_optimizer(model, cfg.optim, torch.rand(2, 3, 32, 32))
    assert isinstance(opt, Muon) and opt.ns_steps == cfg.optim.muon_ns_steps == 3
    muon_groups = [g for g in opt.param_groups if g["muon"]]
    assert len(muon_groups) == 1
    filters = muon_groups[0]
    assert filters["lr"] == cfg.optim.muon_lr and filters["momentum"] == cfg.optim.muon_momentum
    # Every trainable filter bank (each feeds a BatchNorm, the first of a group through its max-pool); the
    # frozen whitening filters take no step at all.
    trainable = {id(p) for p in model.parameters() if p.ndim == 4 and p.requires_grad}
    assert len(trainable) == 6 and {id(p) for p in filters["params"]} == trainable
    others = [g for g in opt.param_groups if not g["muon"]]
    assert all(g["momentum"] == cfg.optim.momentum for g in others)
    assert any(g["lr"] == pytest.approx(cfg.optim.lr * 64) for g in others)  # BatchNorm shifts
    head = next(m for m in model.modules() if isinstance(m, nn.Linear)).weight
    assert any(p is head for g in others for p in g["params"])
    listed = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_filters_feeding_a_sum_keep_sgd_in_a_pre_activation_network():
    model = create_model("wrn_16_4", 10)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone(), int(bn.num_batches_tracked)
    normalised, others = filters_by_normalisation(model, torch.rand(2, 3, 32, 32))
    # Pre-activation: the stem and each block's first convolution feed a BatchNorm; the second convolution
    # and the projection shortcut feed the residual sum, where their scale is part of the function.
    assert set(normalised) == {n for n in dict(model.named_parameters()) if n.endswith(("stem.weight", "conv1.weight"))}
    assert set(others) == {n for n in dict(model.named_parameters()) if n.endswith(("conv2.weight", "shortcut.weight"))}
    assert len(normalised) == 7 and len(others) == 9
    assert model.training and torch.equal(bn.running_mean, before[0]) and int(bn.num_batches_tracked) == before[1]
    opt = build_optimizer(model, build_config("airbench94_muon").optim, torch.rand(2, 3, 32, 32))
    muon = next(g for g in opt.param_groups if g["muon"])
    assert {id(p) for p in muon["params"]} == {id(p) for p in normalised.values()}
    assert all(any(p is q for g in opt.param_groups if not g["muon"] for q in g["params"]) for p in others.values())


def test_squeeze_excitation_filters_keep_sgd_and_a_net_without_norms_is_refused():
    _, others = filters_by_normalisation(create_model("se_resnet18", 10), torch.rand(2, 3, 32, 32))
    assert len(others) == 16 and all(".attention.fc." in n for n in others), sorted(others)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    with pytest.raises(ValueError, match="no convolution"):
        build_optimizer(plain, OptimConfig(name="muon"), torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="example input"):
        build_optimizer(_model(), OptimConfig(name="muon"))


def test_every_optimizer_name_has_a_builder():
    names = typing.get_args(OptimConfig.model_fields["name"].annotation)
    assert set(names) == set(OPTIMIZERS)


def test_muon_learns_a_small_problem():
    torch.manual_seed(0)
    x = torch.randn(256, 3, 8, 8)
    y = (x[:, 0].mean((1, 2)) > 0).long() + 2 * (x[:, 1].mean((1, 2)) > 0).long()
    model = _model()
    cfg = OptimConfig(name="muon", lr=0.05, momentum=0.9, weight_decay=0.0, muon_lr=0.05)
    opt = build_optimizer(model, cfg, x[:2])
    losses = []
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_muon_resume_is_exact(image_folder, tmp_path, monkeypatch):
    overrides = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        **{
            "model.name": "airbench94",
            "model.args": "{widths: [8, 8, 8]}",
            "optim.name": "muon",
            "epochs": 3,
            "whiten_bias_epochs": 1,
            "schedule.name": "linear",
            "micro_batch_size": 8,
        },
    )
    a, b = train_straight_and_resumed("airbench94_muon", overrides, tmp_path, monkeypatch)
    assert any(group.get("muon") for group in a["optimizer"]["param_groups"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["model"].keys() == b["model"].keys()


def test_muon_on_a_network_without_normalised_filters_is_refused_in_one_line(image_folder, tmp_path, capsys):
    from training.__main__ import main

    overrides = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        **{"model.name": "vit_small_patch4", "model.args": "{dim: 16, depth: 1, heads: 2}", "optim.name": "muon"},
    )
    assert main(["train", "--recipe", "vit_small_patch4", "--out", str(tmp_path / "run"), "--set", *overrides]) == 2
    err = capsys.readouterr().err
    assert "error: optim.name muon: no convolution of VisionTransformer feeds" in err and "optim.name=sgd" in err
    assert "Traceback" not in err and not (tmp_path / "run" / "last.pt").exists()
