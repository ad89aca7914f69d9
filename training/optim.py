"""Optimizer and per-step learning-rate schedule from the config."""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from .config import OptimConfig, ScheduleConfig
from .models.layers import NORM_LAYERS
from .muon import Muon, filters_by_normalisation

log = logging.getLogger(__name__)


def param_groups(
    model: nn.Module,
    weight_decay: float,
    decay_norm_and_bias: bool,
    lr: float = 1.0,
    norm_lr_scale: float = 1.0,
    own_group: dict | None = None,
) -> list[dict]:
    """Groups for the optimizer. Every parameter is listed, trainable or not, so a parameter frozen for a
    while (a whitening bias) keeps its place; the optimizer skips those without a gradient. ``own_group``, a
    group with its own settings (Muon's filters), comes last as given, and its parameters are in no other."""
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    taken = {id(p) for p in own_group["params"]} if own_group else set()
    undecayed = _no_weight_decay(model)
    decay, no_decay, norms = [], [], []
    for p in model.parameters():
        if id(p) in taken:
            continue
        if id(p) in norm and norm_lr_scale != 1.0:
            norms.append(p)
        elif id(p) in undecayed:
            no_decay.append(p)
        # 1-D parameters are norm scales/shifts and biases.
        elif decay_norm_and_bias or p.ndim > 1:
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if norms:
        norm_decay = weight_decay / norm_lr_scale if decay_norm_and_bias else 0.0
        groups.append({"params": norms, "lr": lr * norm_lr_scale, "weight_decay": norm_decay})
    if own_group:
        groups.append(own_group)
    return [g for g in groups if g["params"]]


def _no_weight_decay(model: nn.Module) -> set[int]:
    """The parameters a network exempts from decay by name (its modules' ``no_weight_decay()``, timm's convention:
    a ViT's positional embedding), which their shape alone would leave decayed."""
    exempt: set[int] = set()
    for module in model.modules():
        names = getattr(module, "no_weight_decay", None)
        if callable(names):
            exempt.update(id(module.get_parameter(name)) for name in names())
    return exempt


def _sgd(model: nn.Module, cfg: OptimConfig, example: torch.Tensor | None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, cfg.lr, cfg.norm_lr_scale)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def _adamw(model: nn.Module, cfg: OptimConfig, example: torch.Tensor | None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, cfg.lr, cfg.norm_lr_scale)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def _muon(model: nn.Module, cfg: OptimConfig, example: torch.Tensor | None) -> torch.optim.Optimizer:
    if example is None:
        raise ValueError("muon needs an example input, to find the filters that feed a normalisation layer")
    normalised, others = filters_by_normalisation(model, example)  # refuses a network with none to step
    if others:
        log.info("muon: %d filter banks feed no normalisation layer and take SGD: %s", len(others), ", ".join(others))
    ids = {id(p) for p in normalised.values()}
    # In the model's order, as the other groups, whatever order the tracing met them in.
    filters = [p for p in model.parameters() if id(p) in ids]
    own = {"params": filters, "lr": cfg.muon_lr, "momentum": cfg.muon_momentum, "weight_decay": 0.0, "muon": True}
    groups = param_groups(model, cfg.weight_decay, cfg.decay_norm_and_bias, cfg.lr, cfg.norm_lr_scale, own)
    return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, ns_steps=cfg.muon_ns_steps)


# One entry per value of OptimConfig.name.
OPTIMIZERS = {"sgd": _sgd, "adamw": _adamw, "muon": _muon}


def build_optimizer(model: nn.Module, cfg: OptimConfig, example: torch.Tensor | None = None) -> torch.optim.Optimizer:
    """``example``, a batch of inputs, lets Muon trace which filters feed a normalisation layer."""
    return OPTIMIZERS[cfg.name](model, cfg, example)


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base lr at a global step; warmup is linear from ~0 for every schedule."""
    epoch = step / steps_per_epoch
    if cfg.name == "triangular":
        progress = min(1.0, step / max(steps_per_epoch * epochs, 1))
        if progress < cfg.peak_fraction:
            return cfg.initial_lr_fraction + (1 - cfg.initial_lr_fraction) * progress / cfg.peak_fraction
        return 1 - (1 - cfg.final_lr_fraction) * (progress - cfg.peak_fraction) / (1 - cfg.peak_fraction)
    warmup = cfg.warmup_epochs
    if warmup and epoch < warmup:
        # a fractional warmup's last step would pass 1 (e.g. 0.5 epochs of 43 steps: 22/21.5)
        return min(1.0, (step + 1) / (warmup * steps_per_epoch))
    floor = cfg.final_lr_fraction
    progress = min(1.0, (epoch - warmup) / max(epochs - warmup, 1e-8))
    if cfg.name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.name == "linear":
        return floor + (1 - floor) * (1 - progress)
    if cfg.name == "multistep":
        return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    if cfg.name == "step":
        return cfg.gamma ** int(epoch // cfg.step_size)
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, cfg: ScheduleConfig):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, epochs, cfg))
