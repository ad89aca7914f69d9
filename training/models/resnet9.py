"""A compact ResNet-9 (Page, 2018, "How to train your ResNet") for fast CPU training.

conv-pool stages with two residual units and a scaled linear head; ``width``
sets the stem width (64 is the original, 32 the half-width CPU default).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import check_logit_scale
from .resnet import _init_weights


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.insert(1, nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x):
        return x + self.body(x)


class ResNet9(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 64, dropout: float = 0.0, head_scale: float = 0.125) -> None:
        super().__init__()
        check_logit_scale("head_scale", head_scale, "1/8")
        w = width
        self.stem = _conv_bn(3, w)
        self.stages = nn.Sequential(
            nn.Sequential(_conv_bn(w, 2 * w, pool=True), Residual(2 * w)),
            _conv_bn(2 * w, 4 * w, pool=True),
            nn.Sequential(_conv_bn(4 * w, 8 * w, pool=True), Residual(8 * w)),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(8 * w, num_classes, bias=False)
        # A small logit scale keeps the softmax soft early on; it is what lets this net train fast.
        self.head_scale = head_scale
        _init_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        return self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x)) * self.head_scale
