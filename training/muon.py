"""Muon (Keller Jordan et al., 2024), in the form of airbench94_muon: convolution filters step along their
orthogonalised Nesterov momentum, everything else takes plain Nesterov SGD, all in one optimizer so that one
state dict, one schedule and the lookahead cover the whole model.

For a filter bank W (out_channels x in_channels x k x k, seen as a matrix of out_channels rows) the step is
the momentum matrix with its singular values pushed towards 1 (a quintic Newton-Schulz iteration, no SVD):
every direction the gradient names moves the same distance, however small its singular value. Before each
step the bank is rescaled to norm sqrt(out_channels): behind BatchNorm a filter's scale only sets its
effective learning rate, so fixing it keeps that rate at the group's ``lr``. That is why filters take no
weight decay here, and why Muon is meant for networks whose convolutions feed a normalisation layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

# The quintic's coefficients (Jordan et al.): chosen for the steepest slope at zero, so that a few steps
# bring even small singular values near 1; the iteration then oscillates within about 0.7-1.2 instead of
# converging, which the authors found costs nothing.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T for matrix = U S V^T: the same singular vectors, singular values near 1."""
    a, b, c = NS_COEFFICIENTS
    x = matrix / (matrix.norm() + eps)  # every singular value <= 1, where the iteration is stable
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the smaller Gram matrix
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Groups with ``muon=True`` take Muon steps (lr, momentum, nesterov; no weight decay); the others take
    exactly ``torch.optim.SGD``'s step (lr, momentum, nesterov, weight_decay, no dampening)."""

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        ns_steps: int = 3,
    ) -> None:
        if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0 or ns_steps < 1:
            raise ValueError(
                f"invalid Muon settings: lr={lr}, momentum={momentum}, weight_decay={weight_decay}, ns_steps={ns_steps}"
            )
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, muon=False)
        super().__init__(params, defaults)
        self.ns_steps = ns_steps

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum, nesterov = group["lr"], group["momentum"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if not group["muon"] and group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                state = self.state[p]
                if "momentum_buffer" not in state:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf = state["momentum_buffer"].mul_(momentum).add_(grad)
                direction = grad.add(buf, alpha=momentum) if nesterov else buf
                if group["muon"]:
                    p.mul_(math.sqrt(p.shape[0]) / (p.norm() + 1e-12))
                    rows = direction.reshape(p.shape[0], -1)
                    direction = orthogonalize(rows, self.ns_steps).view_as(p)
                p.add_(direction, alpha=-lr)
        return loss
