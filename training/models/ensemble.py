"""Several trained classifiers as one network: the mean of their softmax probabilities.

Networks of different designs err on different images, so their average is often right where each alone is
wrong. The output is the log of the mean probability: softmax of it is that mean, so test-time augmentation,
temperature calibration, top-k and the exported ONNX graph take it as they take any model's logits.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..inference import network_of

# The ``arch`` of an ensemble checkpoint: built from its members' descriptions, never trained as such.
ENSEMBLE_ARCH = "ensemble"
# What create_model needs of each member, as ``model_args["members"]`` of the ensemble's checkpoint stores it;
# a member's ``tta`` (optional, default none) is the test-time augmentation it averages over inside the ensemble.
MEMBER_KEYS = ("arch", "num_classes", "mean", "std", "model_args")


class Ensemble(nn.Module):
    """``members``: classifiers taking the same input (each normalises it itself) and giving the same classes."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, not {len(members)}")
        self.members = nn.ModuleList(members)

    @property
    def cam_layer(self) -> nn.Module:
        # Grad-CAM of the ensemble's decision as seen in the first member's last stage: a map needs one layer.
        # Through a member's own TTA wrapper. nn.Module's __getattr__ is typed Tensor | Module; cam_layer is a
        # Module property of every network.
        return network_of(self.members[0]).cam_layer  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs = torch.stack([F.log_softmax(member(x).float(), dim=1) for member in self.members])
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))


def member_spec(meta: dict, tta: str = "none") -> dict:
    """What rebuilds a member from its checkpoint's meta, with the test-time augmentation it runs."""
    return {**{key: meta[key] for key in MEMBER_KEYS}, "tta": tta}
