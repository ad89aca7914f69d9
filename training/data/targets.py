"""What a training batch's images are trained towards: their labels, two label sets mixed (Mixup, CutMix), or
their labels with a teacher's logits (knowledge distillation); in a pruned epoch, any of those with each image's
index and loss weight (training.data.prune)."""

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


@dataclass
class PrunedTargets:
    """A batch of a pruning run: its targets, each image's index in the training set (its loss is recorded there)
    and loss weight, and the batch's size before pruning, by which its weighted loss is divided."""

    target: Union[torch.Tensor, MixedTargets, DistilledTargets]
    index: torch.Tensor
    weight: torch.Tensor
    full: int


Targets = Union[torch.Tensor, MixedTargets, DistilledTargets, PrunedTargets]


def hard_labels(target: Targets) -> torch.Tensor:
    """The labels a batch's training accuracy is counted against (a mixed batch's first set)."""
    if isinstance(target, MixedTargets):
        return target.y_a
    if isinstance(target, DistilledTargets):
        return target.labels
    if isinstance(target, PrunedTargets):
        return hard_labels(target.target)
    return target


def part_of(target: Targets, part: slice) -> Targets:
    """The targets of a micro-batch."""
    if isinstance(target, MixedTargets):
        return MixedTargets(target.y_a[part], target.y_b[part], target.lam)
    if isinstance(target, PrunedTargets):
        inner = part_of(target.target, part)
        assert not isinstance(inner, PrunedTargets)
        return PrunedTargets(inner, target.index[part], target.weight[part], target.full)
    return target[part]
