"""Pieces the models share: the normalisation layers' table, stochastic depth, channel LayerNorm, MLP, head
split, init."""

from __future__ import annotations

import math
import numbers
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F

# Layers whose output does not change when their input is scaled: what lets a normalised network's filters be
# rescaled freely (Muon) and its norm parameters take their own learning rate.
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al., 2016): drop a residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map.

    Permuting to channels-last and calling F.layer_norm exports as one ONNX LayerNormalization node between two
    Transposes; the reference code's hand-written mean/variance form exports as nine elementwise and reduce nodes.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class Mlp(nn.Sequential):
    """Linear -> GELU -> Linear on the last axis: the transformer MLP and the inverted bottleneck."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )


def split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, T, 3C] from one qkv projection -> q, k, v, each [N, heads, T, C / heads]."""
    return qkv.unflatten(-1, (3, heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[N, heads, T, d] -> [N, T, heads * d]."""
    return x.transpose(1, 2).flatten(2)


def init_transformer_weights(model: nn.Module) -> None:
    """Truncated normal (std 0.02) for linear and conv weights, zero biases: the ViT/ConvNeXt recipe."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# The float32 a head multiplies its logits in: a scale outside its normal range is 0 or infinite there.
_FLOAT32 = torch.finfo(torch.float32)


def check_logit_scale(name: str, value: object, published: str) -> None:
    """A head's logit scale must be a finite number above 0: 0 zeroes every logit and gradient (a run that trains
    nothing, said only as 10% accuracy), and text or nan would pass the build and fail at the first batch, after
    the data has loaded. ``published``: the paper's value as a fraction ("1/9"), for the message."""
    try:
        # numbers.Real: numpy's floats and integers too (np.float32 is no float); a bool is an int, and no scale
        scale = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int past any float (10**400)
        scale = math.inf
    # in float32, 1e-300 is 0 (the dead network again) and 1e308 infinite (NaN logits)
    if not _FLOAT32.tiny <= scale <= _FLOAT32.max:
        raise ValueError(
            f"{name} {value!r} must be a finite number above 0 that float32 holds ({_FLOAT32.tiny:.3g} to "
            f"{_FLOAT32.max:.3g}; the paper's {published}, written {float(Fraction(published)):.4g})"
        )
