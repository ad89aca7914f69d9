"""Dynamic data pruning after InfoBatch (Qin et al., "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic
Data Pruning", ICLR 2024).

Each epoch skips a random share (``ratio``) of the training images whose loss, when last trained on, was below the
mean of all such losses: the ones the network already fits. The kept ones among them weigh 1 / (1 - ratio) in the
loss, so the expected gradient is the whole data's. The last epochs train on every image (the paper's annealing),
so the network ends on an unbiased gradient.

One difference from the paper, deliberate: the paper re-batches the kept images into fewer, full batches; here each
batch keeps its place and shrinks. The step count, and with it every schedule, lookahead and EMA sized to the run,
stays what the recipe says, and each step costs what its kept images do. The loss of a shrunk batch is divided
by its size before pruning, so each step's gradient estimates the full batch's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .augment import seeded


@dataclass(frozen=True)
class PruneParams:
    ratio: float = 0.0  # the share of the below-mean images skipped each pruning epoch
    last_epoch: int = 0  # epochs 1 .. last_epoch - 1 (0-based) prune; epoch 0 has no losses yet

    @property
    def enabled(self) -> bool:
        return self.ratio > 0 and self.last_epoch > 1


@dataclass
class EpochPlan:
    """Which of the training set's images an epoch trains on, and each one's loss weight."""

    keep: torch.Tensor  # bool [N]
    weight: torch.Tensor  # float [N]


class LossPruning:
    """The training images' last losses, and each epoch's plan drawn from them."""

    def __init__(self, n: int, params: PruneParams, seed: int, device: torch.device | str = "cpu") -> None:
        self.params, self.seed = params, seed
        # NaN: not trained on yet, never pruned (a NaN compares False with the threshold)
        self.scores = torch.full((n,), float("nan"), device=device)

    def records(self, epoch: int) -> bool:
        """Whether an epoch's losses are still needed: the last pruning epoch's plan reads the one before it."""
        return epoch < self.params.last_epoch

    def plan(self, epoch: int) -> EpochPlan:
        """The epoch's plan, a function of the scores and (seed, epoch) alone, so a resumed run draws it again."""
        n, device = len(self.scores), self.scores.device
        keep = torch.ones(n, dtype=torch.bool, device=device)
        weight = torch.ones(n, device=device)
        if not 1 <= epoch < self.params.last_epoch:
            return EpochPlan(keep, weight)
        low = self.scores < self.scores.nanmean()  # False for every image while none has a loss (the mean is NaN)
        # its own generator: the augmentation's draws stay those of the same run without pruning
        gen = seeded(self.seed * 100_003 + 50_021 + epoch)
        drop = low & (torch.rand(n, generator=gen).to(device) < self.params.ratio)
        weight[low] = 1 / (1 - self.params.ratio)
        return EpochPlan(~drop, weight)

    def record(self, index: torch.Tensor, losses: torch.Tensor) -> None:
        self.scores[index] = losses.detach().float().to(self.scores.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scores": self.scores.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["scores"].shape != self.scores.shape:
            raise ValueError(f"{len(state['scores'])} saved losses for {len(self.scores)} training images")
        self.scores.copy_(state["scores"])
