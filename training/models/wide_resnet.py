"""Wide ResNets (Zagoruyko & Komodakis, 2016): pre-activation blocks, widths 16k-32k-64k.

WRN-28-10 has 36.5M parameters and WRN-16-8 11.0M for 10 classes.
"""

from __future__ import annotations

from torch import nn

from .attention import make_attention
from .resnet import _init_weights


class WideBlock(nn.Module):
    def __init__(
        self, in_planes: int, planes: int, stride: int, dropout: float, attention: str, reduction: int | None
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.attention = make_attention(attention, planes, reduction)
        self.relu = nn.ReLU(inplace=True)
        equal = stride == 1 and in_planes == planes
        self.shortcut = None if equal else nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        out = self.attention(out)
        # The projection shortcut reads the pre-activated input, as in the reference code.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int = 28,
        widen: int = 10,
        num_classes: int = 10,
        dropout: float = 0.3,
        attention: str = "none",
        reduction: int | None = None,
    ) -> None:
        super().__init__()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (depth, widen)):
            # torch would refuse a fractional width only later, in words about a tensor's shape
            raise ValueError(f"WRN depth and widen must be whole numbers, got depth {depth!r}, widen {widen!r}")
        if depth < 10 or (depth - 4) % 6:
            # 4 (n = 0) and below would build a stem and a head with no residual block between them
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        if widen < 1:
            raise ValueError(f"WRN widen must be 1 or more, got {widen}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        stages, in_planes = [], widths[0]
        for i, width in enumerate(widths[1:]):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(WideBlock(in_planes, width, stride, dropout, attention, reduction))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head_bn = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    @property
    def cam_layer(self) -> nn.Module:
        return self.head_bn

    def forward(self, x):
        x = self.head_bn(self.stages(self.stem(x)))
        return self.fc(self.pool(x).flatten(1))
