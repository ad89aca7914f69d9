"""Data-dependent layers and initialisations from the fast-training literature (Page 2018; Jordan 2024).

``PatchWhitening`` is a first convolution whose filters are the eigenvectors of the training images'
patch covariance, scaled to unit variance, and their negatives: its output is whitened patches
(split into positive and negative halves so a following ReLU/GELU keeps both signs). The filters are
computed once from data and never trained; only the bias is, for the first few epochs.
``dirac_init_`` makes convolutions start as identities, so a deep plain stack starts near the
shallow network it contains.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from inference.errors import UsageError


class DiracError(UsageError):
    """Dirac init asked of a network it cannot change."""


def image_patches(images: torch.Tensor, size: int) -> torch.Tensor:
    """All ``size`` x ``size`` patches (stride 1) of float images [N, C, H, W], as [P, C * size * size]."""
    n, c = images.shape[:2]
    patches = images.unfold(2, size, 1).unfold(3, size, 1)  # N, C, H', W', size, size
    return patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * size * size)


class PatchWhitening(nn.Conv2d):
    bias: torch.Tensor  # built with bias=True, so never the None that nn.Conv2d's type allows

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4) -> None:
        if not (math.isfinite(eps) and eps > 0):
            # the patch covariance of real images has directions of almost no variance: a negative eps makes
            # their filters NaN, 0 infinite, and an infinite one zeroes every filter
            raise ValueError(f"whiten_eps {eps} must be a finite number above 0 (the paper's 5e-4)")
        dim = in_channels * kernel_size * kernel_size
        super().__init__(in_channels, 2 * dim, kernel_size, padding=0, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from float images [N, C, H, W] (already normalised as the model will see them)."""
        patches = image_patches(images.float(), self.kernel_size[0]).double()
        # The uncentred second moment, as the reference code does: the mean patch is one more direction.
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)[:, None]).flip(0)
        filters = filters.reshape(-1, *self.weight.shape[1:]).to(self.weight.dtype)
        self.weight.copy_(torch.cat([filters, -filters]))


def whitening_layers(model: nn.Module) -> list[PatchWhitening]:
    return [m for m in model.modules() if isinstance(m, PatchWhitening)]


@torch.no_grad()
def dirac_init_(module: nn.Module) -> int:
    """Identity-initialise the first min(out, in) filters of every ungrouped odd-kernel convolution
    (a whitening layer excluded); the other filters keep their initialisation. Returns how many convs; a module
    with none is refused (``DiracError``), since the option would change nothing."""
    count = 0
    for m in module.modules():
        if (
            isinstance(m, nn.Conv2d)
            and not isinstance(m, PatchWhitening)
            and m.groups == 1
            and all(k % 2 == 1 for k in m.kernel_size)
        ):
            w = m.weight
            nn.init.dirac_(w[: min(w.shape[0], w.shape[1])])
            count += 1
    if not count:
        raise DiracError(
            f"{type(module).__name__} has no ungrouped odd-kernel convolution for Dirac init to start as an "
            "identity: set model.dirac_init=false"
        )
    return count
