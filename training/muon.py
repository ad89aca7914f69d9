"""Muon (Keller Jordan et al., 2024), in the form of airbench94_muon: convolution filters step along their
orthogonalised Nesterov momentum, everything else takes plain Nesterov SGD, all in one optimizer so that one
state dict, one schedule and the lookahead cover the whole model.

For a filter bank W (out_channels x in_channels x k x k, seen as a matrix of out_channels rows) the step is
the momentum matrix with its singular values pushed towards 1 (a quintic Newton-Schulz iteration, no SVD):
every direction the gradient names moves the same distance, however small its singular value. Before each
step the bank is rescaled to norm sqrt(out_channels): behind BatchNorm a filter's scale only sets its
effective learning rate, so fixing it keeps that rate at the group's ``lr``. That is why filters take no
weight decay here, and why only filters whose output is read by normalisation layers alone take Muon steps
(``filters_by_normalisation``); the others (a pre-activation block's last convolution, which feeds a sum, or a
stem that feeds an identity shortcut as well as a BatchNorm) keep SGD, where their scale is part of the function.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from inference.errors import UsageError

from .models.layers import NORM_LAYERS

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


# Modules with f(a x) = a f(x) for a > 0: a filter's scale passes through them to the normalisation layer
# unchanged (airbench's convolution, max-pool, BatchNorm order).
SCALE_EQUIVARIANT = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.ReLU, nn.Identity, nn.Dropout, nn.Flatten)


class MuonError(UsageError):
    """Muon asked of a network it has no filters to step in."""


def _tensors(tree: object) -> Iterator[torch.Tensor]:
    """The tensors in nested tuples, lists and dicts (an operation's arguments or result)."""
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


class _FreeOperations(TorchFunctionMode):
    """Calls ``seen(args, kwargs, result)`` for every tensor operation a forward pass runs while no leaf module
    runs: the ones a container's own forward applies (a residual sum, a concatenation), which no module hook sees."""

    def __init__(self, seen: Callable[[tuple, dict, object], None]) -> None:
        super().__init__()
        self.seen = seen
        self.leaves_running = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not self.leaves_running:
            self.seen(args, kwargs, result)
        return result


@torch.no_grad()
def filters_by_normalisation(model: nn.Module, example: torch.Tensor) -> tuple[dict, dict]:
    """The trainable convolution filters whose output reaches normalisation layers only, directly or through
    scale-equivariant modules, and the other trainable filters, each as {parameter name: weight}. An output also
    read elsewhere (a stem that feeds an identity shortcut's sum as well as the block's BatchNorm) carries the
    filters' scale into the function, so those filters are of the second kind. Traced by one forward pass of
    ``example`` in eval mode, which changes no state of the model. A network with none of the first kind is
    refused (``MuonError``): Muon would train it as plain SGD."""
    names = {m: name for name, m in model.named_modules()}
    source: dict[int, nn.Conv2d] = {}  # id of a tensor -> the convolution whose scale it carries
    seen: list[torch.Tensor] = []  # kept alive, so no id is reused during the pass
    reached: set[nn.Conv2d] = set()
    escaped: set[nn.Conv2d] = set()  # read by something other than a normalisation layer
    passing: dict[nn.Module, nn.Conv2d] = {}

    def sources(*trees: object) -> set[nn.Conv2d]:
        return {source[id(t)] for t in _tensors(trees) if id(t) in source}

    def before(module: nn.Module, args: tuple) -> None:
        free.leaves_running += 1
        for conv in sources(args):
            if isinstance(module, NORM_LAYERS):
                reached.add(conv)
            elif isinstance(module, SCALE_EQUIVARIANT):
                passing[module] = conv
            else:
                escaped.add(conv)

    def after(module: nn.Module, args: tuple, out) -> None:
        free.leaves_running -= 1
        conv = module if isinstance(module, nn.Conv2d) else passing.pop(module, None)
        if conv is not None and isinstance(out, torch.Tensor):
            source[id(out)] = conv
            seen.append(out)

    def free_operation(args: tuple, kwargs: dict, result: object) -> None:
        # metadata (a shape, a dtype) reads no value; an operation giving a tensor reads the scale
        if next(_tensors(result), None) is not None:
            escaped.update(sources(args, kwargs))

    free = _FreeOperations(free_operation)
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [h for m in leaves for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    training = model.training
    try:
        model.eval()
        with free:
            model(example)
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    convs = [m for m in leaves if isinstance(m, nn.Conv2d) and m.weight.requires_grad]
    normalised = {f"{names[m]}.weight": m.weight for m in convs if m in reached - escaped}
    others = {f"{names[m]}.weight": m.weight for m in convs if m not in reached - escaped}
    if not normalised:
        network = type(getattr(model, "backbone", model)).__name__
        raise MuonError(
            f"optim.name muon: no convolution of {network} feeds normalisation layers only, so Muon has no filters "
            "to step; use optim.name=sgd"
        )
    return normalised, others


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
                direction = grad
                if momentum:
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
