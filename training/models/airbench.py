"""The airbench94 network (Jordan, 2024, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU").

A frozen 2x2 patch-whitening convolution, three conv groups (conv, max-pool, BatchNorm, GELU, conv,
BatchNorm, GELU), a 3x3 max-pool and a bias-free linear head whose logits are scaled down. Every
option the paper ablates is a constructor argument, so the ablation is a set of recipe overrides:
``whiten`` (the frozen whitening layer, else a trainable 2x2 conv), ``dirac`` (identity init of the
3x3 convolutions), ``bn_scale`` (learnable BatchNorm scale; the paper freezes it at 1),
``logit_scale`` (1/9 in the paper) and ``widths`` (64-256-256; the paper's 95% variant is 128-384-384).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .layers import check_logit_scale
from .whitening import PatchWhitening, dirac_init_

AIRBENCH94_WIDTHS = (64, 256, 256)
# BatchNorm running statistics follow the last few batches: with ~10 epochs and EMA/lookahead of the
# weights, slow statistics lag far behind the weights they normalise (the paper's 0.6, in PyTorch's sense 0.4).
FAST_BN_MOMENTUM = 0.4


class ScaleFreeBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose scale is fixed at 1 (not trained) unless ``scale`` is set; the shift stays learnable."""

    def __init__(self, channels: int, momentum: float | None = FAST_BN_MOMENTUM, scale: bool = False) -> None:
        super().__init__(channels, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(scale)


class ConvGroup(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, bn_momentum: float | None, bn_scale: bool) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            ScaleFreeBatchNorm(c_out, bn_momentum, bn_scale),
            nn.GELU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            ScaleFreeBatchNorm(c_out, bn_momentum, bn_scale),
            nn.GELU(),
        )


class AirbenchNet(nn.Module):
    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = AIRBENCH94_WIDTHS,
        whiten: bool = True,
        dirac: bool = True,
        bn_scale: bool = False,
        bn_momentum: float | None = FAST_BN_MOMENTUM,
        logit_scale: float = 1 / 9,
        whiten_eps: float = 5e-4,
    ) -> None:
        super().__init__()
        if len(widths) != 3:
            raise ValueError(f"airbench takes three group widths, got {list(widths)}")
        # None is PyTorch's cumulative average of every batch, which model.bn_momentum: null cannot ask for
        if bn_momentum is not None and not 0 < bn_momentum <= 1:
            # model.bn_momentum refuses the same: at 0 the running statistics never leave their initial mean 0 and
            # variance 1, which evaluation and export would then normalise with; above 1 they overshoot each batch
            raise ValueError(
                f"bn_momentum {bn_momentum} must be above 0 and at most 1 (PyTorch's sense: the new batch's share "
                "of BatchNorm's running statistics; the paper's 0.6 is the old statistics' share, so 0.4 here)"
            )
        check_logit_scale("logit_scale", logit_scale, "1/9")
        self.whiten = PatchWhitening(3, kernel_size=2, eps=whiten_eps) if whiten else nn.Conv2d(3, 24, 2)
        groups, c_in = [], self.whiten.out_channels
        for width in widths:
            groups.append(ConvGroup(c_in, width, bn_momentum, bn_scale))
            c_in = width
        self.stages = nn.Sequential(*groups)
        self.act = nn.GELU()
        # The paper's MaxPool2d(3) over the 3x3 map a 32x32 image leaves; global, so other sizes work too.
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(c_in, num_classes, bias=False)
        self.logit_scale = logit_scale
        if dirac:
            dirac_init_(self.stages)

    @property
    def cam_layer(self) -> nn.Module:
        return self.stages[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stages(self.act(self.whiten(x)))).flatten(1)
        return self.fc(x) * self.logit_scale
