"""A loader over tensors held whole in memory (or on the GPU): shuffle, shard, augment, batch.

CIFAR fits in 150 MB as uint8, so there is no per-sample Dataset and no
worker processes: a batch is one index_select plus a few tensor ops.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .arrays import ImageArrays
from .augment import AugmentParams, alternating_flip_mask, augment_batch, resize_batch, seeded, size_at, to_unit
from .mix import MixParams, mix_batch
from .prune import LossPruning, PruneParams
from .targets import DistilledTargets, PrunedTargets, Targets


def training_batches(images: int, batch_size: int, world_size: int = 1, max_batches: int | None = None) -> int:
    """The batches of a training epoch on each process: whole batches of its share of ``images`` (as
    ``TensorLoader`` shards and batches them), at most ``max_batches``. Known before the loader is built, so a run
    too short for its settings is refused before the work that comes first (a teacher's pass over the images)."""
    batches = (images // world_size) // batch_size
    return min(batches, max_batches) if max_batches else batches


class TensorLoader:
    def __init__(
        self,
        data: ImageArrays,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool = False,
        augment: AugmentParams | None = None,
        mix: MixParams | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        max_batches: int | None = None,
        teacher: torch.Tensor | None = None,
        prune: PruneParams | None = None,
    ) -> None:
        self.device = torch.device(device)
        # uint8 on the device: 4x less memory and transfer than preprocessed floats.
        self.images = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous().to(self.device)
        self.labels = torch.from_numpy(data.labels).to(self.device)
        # a teacher's logits for each image, which the training batches carry beside the labels (training.distill)
        self.teacher = teacher.to(self.device) if teacher is not None and train else None
        if self.teacher is not None and len(self.teacher) != len(self.labels):
            raise ValueError(f"{len(self.teacher)} teacher logits for {len(self.labels)} images")
        self.batch_size, self.train = batch_size, train
        self.augment = augment if train else None
        self.mix = mix if train else None
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last, self.max_batches = channels_last, max_batches
        self.epoch = 0
        # each training image's last loss, from which a pruning epoch skips some the network already fits
        self.pruning = (
            LossPruning(len(self.labels), prune, seed, self.device)
            if prune is not None and prune.enabled and train
            else None
        )
        # The first epoch's flips, fixed by the seed alone, so resume and every rank see the same ones.
        self.base_flips = None
        if self.augment is not None and self.augment.flip and self.augment.alternate_flip:
            flip_gen = seeded(seed * 100_003 - 1)
            self.base_flips = (torch.rand(len(self.labels), generator=flip_gen) < 0.5).to(self.device)

    def set_epoch(self, epoch: int) -> None:
        """The shuffle and augmentation of an epoch depend only on (seed, epoch): resume replays them exactly."""
        self.epoch = epoch

    def record_losses(self, index: torch.Tensor, losses: torch.Tensor) -> None:
        """Each trained image's loss, which the next epochs' pruning plans read."""
        if self.pruning is not None:
            self.pruning.record(index, losses)

    def image_size(self) -> int:
        """The side of this epoch's batches: the data's own, or a smaller one early in a progressive-resizing plan."""
        full = self.images.shape[-1]
        return size_at(self.augment.progressive_sizes, self.epoch, full) if self.augment else full

    def _indices(self, gen: torch.Generator) -> torch.Tensor:
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.train else torch.arange(n)
        if self.world_size > 1:
            per_rank = n // self.world_size if self.train else -(-n // self.world_size)
            order = order[self.rank :: self.world_size][:per_rank]
        return order

    def __len__(self) -> int:
        n = len(self.labels)
        if self.train:
            return training_batches(n, self.batch_size, self.world_size, self.max_batches)
        if self.world_size > 1:
            # as _indices shards: in evaluation the first n % world_size ranks hold one image more, so that every
            # image is evaluated once
            n = -(-(n - self.rank) // self.world_size)
        batches = -(-n // self.batch_size)
        return min(batches, self.max_batches) if self.max_batches else batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Targets]]:
        gen = seeded(self.seed * 100_003 + self.epoch)
        order = self._indices(gen).to(self.device)
        if self.rank:
            # Every rank draws the one permutation it shards; drawing its augmentations from the same stream would
            # give each rank's k-th image the crop, flip, cutout and mix of every other rank's k-th.
            key = np.random.SeedSequence((self.seed, self.epoch, self.rank))
            gen = seeded(int(key.generate_state(1, np.uint64)[0]))
        # resized only under a plan: the data's own images may be other than square, which a resize would squash
        size = self.image_size() if self.augment is not None and self.augment.progressive_sizes else None
        plan = self.pruning.plan(self.epoch) if self.pruning is not None and self.pruning.records(self.epoch) else None
        y: Targets
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            full = len(idx)
            if plan is not None:
                kept = plan.keep[idx]
                # a step on no image would still move the schedule; train on one instead (only tiny batches get here)
                idx = idx[kept] if kept.any() else idx[:1]
            x, y = self.images[idx], self.labels[idx]
            if self.augment:
                flips = None if self.base_flips is None else alternating_flip_mask(self.base_flips[idx], self.epoch)
                x = augment_batch(x, self.augment, gen, flips)
                if size is not None:
                    x = resize_batch(x, size)
            else:
                x = to_unit(x)
            if self.mix is not None and self.mix.enabled:
                x, y = mix_batch(x, y, self.mix, gen)
            elif self.teacher is not None:
                y = DistilledTargets(y, self.teacher[idx])
            if plan is not None:
                y = PrunedTargets(y, idx, plan.weight[idx], full)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y
