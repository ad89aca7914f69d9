"""CIFAR ResNets (He et al., 2016) with a 3x3 stem and no max-pool, and the variants built from them.

Stage widths 64-128-256-512 and strides 1-2-2-2 follow the common CIFAR
adaptation (11.17M parameters for ResNet-18 with 10 classes). The same network
and blocks also give ResNeXt (``groups``, ``base_width`` of the bottleneck),
the "v1b"/ResNet-D tweaks (``deep_stem``, ``avg_down``) and, with the block in
``res2net.py``, Res2Net. Every block takes the same options: ``attention``
("none", "se", "ca"), ``reduction``, ``attention_pool`` (SE's descriptors) and
``activation`` ("relu", "elu", "gelu", "silu").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .activation import make_activation
from .attention import make_attention

if TYPE_CHECKING:  # res2net builds on this module's shortcut
    from .res2net import Res2NetBottleneck


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        attention: str = "none",
        reduction: int | None = None,
        *,
        attention_pool: str = "avg",
        activation: str = "relu",
        avg_down: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.attention = make_attention(attention, planes, reduction, attention_pool)
        self.shortcut = _shortcut(in_planes, planes, stride, avg_down)
        self.act = make_activation(activation)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.act(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck; ``groups`` and ``base_width`` make it ResNeXt's (Xie et al., 2017):
    the 3x3 conv is ``groups`` convolutions of ``planes * base_width / 64`` channels each."""

    expansion = 4

    def __init__(
        self,
        in_planes: int,
        planes: int,
        stride: int,
        attention: str = "none",
        reduction: int | None = None,
        *,
        attention_pool: str = "avg",
        activation: str = "relu",
        avg_down: bool = False,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * base_width / 64) * groups
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.attention = make_attention(attention, out_planes, reduction, attention_pool)
        self.shortcut = _shortcut(in_planes, out_planes, stride, avg_down)
        self.act = make_activation(activation)

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.attention(self.bn3(self.conv3(out)))
        return self.act(out + self.shortcut(x))


def _shortcut(in_planes: int, out_planes: int, stride: int, avg_down: bool = False) -> nn.Module:
    """Identity, or a 1x1 projection. ``avg_down`` (ResNet-D, Res2Net-v1b) averages 2x2 before a stride-1
    projection, so downsampling reads every input pixel instead of one in four."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    if avg_down and stride > 1:
        return nn.Sequential(
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(in_planes, out_planes, 1, bias=False),
            nn.BatchNorm2d(out_planes),
        )
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


def _stem(width: int, activation: str, deep: bool) -> nn.Sequential:
    """One 3x3 conv, or (``deep``, Res2Net-v1b / ResNet-C) three: width/2, width/2, width, all stride 1 on CIFAR."""
    widths = (3, width // 2, width // 2, width) if deep else (3, width)
    layers = []
    for c_in, c_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), make_activation(activation)]
    return nn.Sequential(*layers)


class ResNet(nn.Module):
    """Stem, stages of ``block`` (the first block of every stage but the first has stride 2), pool, linear.

    ``block_options`` go to every block: ``attention_pool``, ``avg_down``, and the block's own
    (``groups`` and ``base_width`` of a Bottleneck, ``scale`` and ``base_width`` of Res2Net's).
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck | Res2NetBottleneck],
        depths: tuple[int, ...],
        num_classes: int = 10,
        attention: str = "none",
        reduction: int | None = None,
        dropout: float = 0.0,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        *,
        activation: str = "relu",
        deep_stem: bool = False,
        **block_options,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths):
            # zip would build as many stages as the shorter one has, silently another network
            raise ValueError(f"widths {list(widths)} need one entry per stage: {len(depths)}, as depths {list(depths)}")
        self.stem = _stem(widths[0], activation, deep_stem)
        stages, in_planes = [], widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = []
            for j in range(depth):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(
                    block(in_planes, width, stride, attention, reduction, activation=activation, **block_options)
                )
                in_planes = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        """The last convolutional stage: where Grad-CAM looks."""
        return self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
