"""Mixup (Zhang et al., 2018) and CutMix (Yun et al., 2019) on a whole batch.

``mix_batch`` returns the mixed images with both label sets and the mixing
weight; ``mixed_cross_entropy`` turns that into lam * CE(y_a) + (1 - lam) * CE(y_b).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class MixParams:
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    prob: float = 1.0

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)


@dataclass
class MixedTargets:
    y_a: torch.Tensor
    y_b: torch.Tensor
    lam: float


def _rng(gen: torch.Generator) -> np.random.Generator:
    # Seeded from the torch generator so a resumed run draws the same lambdas.
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device)))


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, params: MixParams, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | MixedTargets]:
    """x float [N, 3, H, W]; with probability ``prob`` apply Mixup or CutMix (chosen evenly when both are on)."""
    rng = _rng(gen)
    if not params.enabled or rng.random() >= params.prob:
        return x, y
    use_cutmix = params.cutmix_alpha > 0 and (params.mixup_alpha <= 0 or rng.random() < 0.5)
    alpha = params.cutmix_alpha if use_cutmix else params.mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(x.shape[0])).to(x.device)
    if use_cutmix:
        h, w = x.shape[2:]
        cut_h, cut_w = int(h * np.sqrt(1 - lam)), int(w * np.sqrt(1 - lam))
        cy, cx = rng.integers(h), rng.integers(w)
        y0, y1 = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, h)
        x0, x1 = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the box may be clipped: use its real area
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, MixedTargets(y, y[perm], float(lam))


def mixed_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor | MixedTargets, label_smoothing: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    """The batch's mean loss, or each image's with ``reduction="none"``."""
    if isinstance(target, MixedTargets):
        return target.lam * F.cross_entropy(
            logits, target.y_a, label_smoothing=label_smoothing, reduction=reduction
        ) + (1 - target.lam) * F.cross_entropy(logits, target.y_b, label_smoothing=label_smoothing, reduction=reduction)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing, reduction=reduction)
