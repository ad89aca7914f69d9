"""Res2Net's bottleneck (Gao et al., TPAMI 2019), a block for the shared ``ResNet``.

The 3x3 conv of a bottleneck is replaced by ``scale`` groups of ``width`` channels
in a hierarchy: each group's 3x3 conv also sees the previous group's output, so
one block mixes several receptive-field sizes. ``width = planes * base_width / 64``
(26w x 4s is the paper's Res2Net-50). The network around it, the shortcuts, the
attention and the v1b tweaks are ``ResNet``'s.
"""

from __future__ import annotations

import torch
from torch import nn

from .activation import make_activation
from .attention import make_attention
from .resnet import _shortcut


class Res2NetBottleneck(nn.Module):
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
        scale: int = 4,
        base_width: int = 26,
    ) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"Res2Net scale must be >= 1, got {scale}")
        self.width = int(planes * base_width / 64)
        out_planes = planes * self.expansion
        # The first block of a stage changes shape: its groups do not add up (their inputs would not match the
        # strided outputs), and the group that is passed through is average-pooled to the new size instead.
        self.first = stride != 1 or in_planes != out_planes
        self.conv1 = nn.Conv2d(in_planes, self.width * scale, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.width * scale)
        convolved = max(1, scale - 1)  # the last group is passed through, unless it is the only one
        self.convs = nn.ModuleList(
            nn.Conv2d(self.width, self.width, 3, stride, 1, bias=False) for _ in range(convolved)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(self.width) for _ in range(convolved))
        self.passed = scale > 1
        self.pool = nn.AvgPool2d(3, stride, 1) if self.passed and self.first else nn.Identity()
        self.conv3 = nn.Conv2d(self.width * scale, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.attention = make_attention(attention, out_planes, reduction, attention_pool)
        self.shortcut = _shortcut(in_planes, out_planes, stride, avg_down)
        self.act = make_activation(activation)

    def forward(self, x):
        groups = torch.split(self.act(self.bn1(self.conv1(x))), self.width, 1)
        outs: list[torch.Tensor] = []
        for group, conv, bn in zip(groups, self.convs, self.bns):
            y = group if not outs or self.first else outs[-1] + group
            outs.append(self.act(bn(conv(y))))
        if self.passed:
            outs.append(self.pool(groups[-1]))
        out = self.attention(self.bn3(self.conv3(torch.cat(outs, 1))))
        return self.act(out + self.shortcut(x))
