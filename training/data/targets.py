"""What a training batch's images are trained towards: their labels, two label sets mixed (Mixup, CutMix), or
their labels with a teacher's logits (knowledge distillation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch

from .mix import MixedTargets


@dataclass
class DistilledTargets:
    """A batch's labels with the teacher's logits for the same images."""

    labels: torch.Tensor
    teacher: torch.Tensor

    def __getitem__(self, part: slice) -> DistilledTargets:
        return DistilledTargets(self.labels[part], self.teacher[part])


Targets = Union[torch.Tensor, MixedTargets, DistilledTargets]


def hard_labels(target: Targets) -> torch.Tensor:
    """The labels a batch's training accuracy is counted against (a mixed batch's first set)."""
    if isinstance(target, MixedTargets):
        return target.y_a
    if isinstance(target, DistilledTargets):
        return target.labels
    return target


def part_of(target: Targets, part: slice) -> Targets:
    """The targets of a micro-batch."""
    if isinstance(target, MixedTargets):
        return MixedTargets(target.y_a[part], target.y_b[part], target.lam)
    return target[part]
