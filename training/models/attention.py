"""Attention modules that the residual blocks take as an option.

Attention is a block option ("none", "se", "ca"), not a copy of the network per
attention type, so every architecture gets every attention for free. Each entry
of ``ATTENTION`` is called as ``(channels, reduction, pool)``; a ``reduction`` of
None means the module's published default.
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import Registry

ATTENTION: Registry = Registry("attention")

SE_REDUCTION = 16  # Hu et al., 2018
CA_REDUCTION = 32  # Hou et al., 2021
CA_MIN_HIDDEN = 8  # Hou et al.'s floor, so narrow layers keep a usable bottleneck


def _avg(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True)


def _max(x: torch.Tensor) -> torch.Tensor:
    return x.amax((2, 3), keepdim=True)


# L1 and L2 are power means (mean |x|, root mean square) rather than plain norms, so a
# descriptor's size does not grow with the feature map (32x32 in stage 1, 4x4 in stage 4)
# and stays on the scale of the average the MLP also sees.
def _l1(x: torch.Tensor) -> torch.Tensor:
    return x.abs().mean((2, 3), keepdim=True)


def _l2(x: torch.Tensor) -> torch.Tensor:
    # The floor keeps the gradient of sqrt finite on an all-zero channel.
    return x.square().mean((2, 3), keepdim=True).clamp_min(1e-12).sqrt()


POOLS = {"avg": _avg, "max": _max, "l1": _l1, "l2": _l2}


def parse_pool(pool: str) -> tuple[str, ...]:
    """``"avg+max"`` -> ``("avg", "max")``, rejecting unknown and repeated descriptors."""
    names = tuple(pool.split("+"))
    unknown = [n for n in names if n not in POOLS]
    if unknown or len(set(names)) != len(names):
        raise ValueError(f"bad attention pool {pool!r}: join distinct names from {', '.join(POOLS)} with '+'")
    return names


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018): global pool -> bottleneck MLP -> sigmoid gate.

    ``pool`` picks the channel descriptors ("avg", or e.g. "avg+max", "avg+l2"). Each goes
    through the one shared MLP and the results are summed before the sigmoid, as CBAM's
    channel attention does, rather than concatenated: the parameter count stays that of
    plain SE whatever the pooling, so a pooling ablation changes only the descriptor, and
    "avg" alone is exactly the original SE.
    """

    def __init__(self, channels: int, reduction: int = SE_REDUCTION, pool: str = "avg") -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = parse_pool(pool)
        # "fc" and its indices are the names SE checkpoints were saved with.
        self.fc = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))

    def forward(self, x):
        logits = sum(self.fc(POOLS[name](x)) for name in self.pool)
        return x * torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return f"pool={'+'.join(self.pool)}"


class CoordinateAttention(nn.Module):
    """Coordinate Attention (Hou et al., CVPR 2021): pool along H and along W separately, so the
    gate keeps where in the image a channel fired, not only whether it fired.

    The two directional descriptors share one 1x1 conv + BN + h-swish, then split into an
    H gate and a W gate; the output is ``x * gate_h * gate_w``, as in the authors' code.
    """

    def __init__(self, channels: int, reduction: int = CA_REDUCTION) -> None:
        super().__init__()
        hidden = max(CA_MIN_HIDDEN, channels // reduction)
        self.shared = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.Hardswish())
        self.gate_h = nn.Conv2d(hidden, channels, 1)
        self.gate_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        h, w = x.shape[2:]
        along_h = x.mean(3, keepdim=True)  # N, C, H, 1
        along_w = x.mean(2, keepdim=True).transpose(2, 3)  # N, C, W, 1
        y = self.shared(torch.cat([along_h, along_w], 2))
        y_h, y_w = torch.split(y, [h, w], 2)
        return x * torch.sigmoid(self.gate_h(y_h)) * torch.sigmoid(self.gate_w(y_w.transpose(2, 3)))


@ATTENTION.register("none")
def no_attention(channels: int, reduction: int | None = None, pool: str = "avg") -> nn.Module:
    # Off means off: the pool of a switched-off SE (use_se=false ablations) is not an error.
    return nn.Identity()


def _reduction(reduction: int | None, default: int) -> int:
    if reduction is None:
        return default
    if reduction < 1:
        # read by its truth, 0 would become the default; a negative one would make a bottleneck of one channel
        raise ValueError(f"attention reduction must be 1 or more (null for the published {default}), got {reduction}")
    return reduction


@ATTENTION.register("se")
def squeeze_excite(channels: int, reduction: int | None = None, pool: str = "avg") -> nn.Module:
    return SqueezeExcite(channels, _reduction(reduction, SE_REDUCTION), pool)


@ATTENTION.register("ca")
def coordinate_attention(channels: int, reduction: int | None = None, pool: str = "avg") -> nn.Module:
    if pool != "avg":
        # CA's pooling is directional averaging by design; ignoring the option would make a pooling ablation lie.
        raise ValueError(f"attention pool {pool!r} applies to 'se' only; coordinate attention averages along H and W")
    return CoordinateAttention(channels, _reduction(reduction, CA_REDUCTION))


def make_attention(name: str, channels: int, reduction: int | None = None, pool: str = "avg") -> nn.Module:
    return ATTENTION.get(name)(channels, reduction, pool)
