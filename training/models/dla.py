"""Deep Layer Aggregation (Yu et al., 2018), DLA-34 adapted to 32x32 inputs.

DLA-34: levels (1, 1, 1, 2, 2, 1), channels 16-32-64-128-256-512, basic blocks
merged by hierarchical trees whose Root nodes concatenate and 1x1-convolve
their children. The ImageNet network downsamples 32x; here the stem is a
3x3 convolution and levels 1 and 2 keep their resolution, so the last level
is 4x4 like the last stage of a CIFAR ResNet.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .resnet import _init_weights
from .resnet9 import _conv_bn

DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)
# Strides of the four trees (levels 2-5): 32 -> 32 -> 16 -> 8 -> 4.
TREE_STRIDES = (1, 2, 2, 2)


class Block(nn.Module):
    """A ResNet basic block whose shortcut its tree hands it (max-pooled and projected, not a strided conv)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, shortcut: torch.Tensor | None = None) -> torch.Tensor:
        return self.relu(self.body(x) + (x if shortcut is None else shortcut))


class Tree(nn.Module):
    """A tree of ``levels`` levels; a level root also feeds its (downsampled) input to the deepest Root."""

    def __init__(
        self, levels: int, c_in: int, c_out: int, stride: int = 1, level_root: bool = False, root_dim: int = 0
    ) -> None:
        super().__init__()
        root_dim = (root_dim or 2 * c_out) + (c_in if level_root else 0)
        self.levels, self.level_root = levels, level_root
        # ceil_mode rounds an odd side up, as the strided 3x3 conv of tree1 does: floored, a side not a multiple of 8
        # (28, 36, 100) would leave the shortcut a pixel short of the block it is added to
        self.downsample = nn.MaxPool2d(stride, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.tree1: Block | Tree
        self.tree2: Block | Tree
        if levels == 1:
            self.tree1 = Block(c_in, c_out, stride)
            self.tree2 = Block(c_out, c_out, 1)
            self.root = nn.Sequential(
                nn.Conv2d(root_dim, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
            )
            # The reference code also builds this projection in trees of two levels, where forward never uses
            # it; as in timm it lives only here, so DDP finds no parameter without a gradient.
            self.project = (
                nn.Identity()
                if c_in == c_out
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
            )
        else:
            self.tree1 = Tree(levels - 1, c_in, c_out, stride)
            self.tree2 = Tree(levels - 1, c_out, c_out, root_dim=root_dim + c_out)

    def forward(self, x: torch.Tensor, children: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        bottom = self.downsample(x)
        children = [*children, bottom] if self.level_root else list(children)
        if self.levels == 1:
            x1 = self.tree1(x, self.project(bottom))
            return self.root(torch.cat([self.tree2(x1), x1, *children], 1))
        x1 = self.tree1(x)
        return self.tree2(x1, [*children, x1])


class DLA(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        levels: Sequence[int] = DLA34_LEVELS,
        channels: Sequence[int] = DLA34_CHANNELS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(levels) != len(DLA34_LEVELS) or len(channels) != len(DLA34_CHANNELS):
            raise ValueError(
                f"DLA takes {len(DLA34_LEVELS)} levels and {len(DLA34_CHANNELS)} channels, one per level: got "
                f"levels {list(levels)}, channels {list(channels)}"
            )
        if min(levels) < 1:
            # a tree of 0 levels would recurse without end, and a level of no convolution hand the next the
            # channels of the one before
            raise ValueError(f"DLA levels {list(levels)} must each be 1 or more")
        self.stem = _conv_bn(3, channels[0])
        convs, c_in = [], channels[0]
        for level in (0, 1):
            for _ in range(levels[level]):
                convs.append(_conv_bn(c_in, channels[level]))
                c_in = channels[level]
        trees = [
            Tree(levels[i], channels[i - 1], channels[i], stride, level_root=i > 2)
            for i, stride in zip(range(2, 6), TREE_STRIDES)
        ]
        self.levels = nn.Sequential(*convs, *trees)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels[-1], num_classes)
        _init_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        return self.levels[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.levels(self.stem(x))).flatten(1)
        return self.fc(self.dropout(x))
