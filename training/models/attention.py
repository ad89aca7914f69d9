"""Channel attention modules that the residual blocks take as an option.

Attention is a block option ("none", "se"), not a copy of the network per
attention type, so every architecture gets every attention for free.
"""
from __future__ import annotations

from torch import nn

from ..registry import Registry

ATTENTION: Registry = Registry("attention")


@ATTENTION.register("none")
def no_attention(channels: int, reduction: int = 16) -> nn.Module:
    return nn.Identity()


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation (Hu et al., 2018): global pool -> bottleneck MLP -> sigmoid gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1), nn.Sigmoid()
        )

    def forward(self, x):
        return x * self.fc(self.pool(x))


@ATTENTION.register("se")
def squeeze_excite(channels: int, reduction: int = 16) -> nn.Module:
    return SqueezeExcite(channels, reduction)
