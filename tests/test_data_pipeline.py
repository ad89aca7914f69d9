"""The training data pipeline after the images are read: the validation split, sharding over processes,
augmentation's shapes and random streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config_recipes import build_config
from training.data.arrays import DatasetError, ImageArrays
from training.data.augment import AugmentParams, seeded
from training.data.loader import TensorLoader
from training.data.mix import MixParams
from training.data.prune import LossPruning, PruneParams
from training.data.split import stratified_split


@pytest.mark.parametrize(("sizes", "val_size"), [([10] * 9 + [1], 10), ([5, 5, 5, 5, 1], 5), ([1, 9], 5)])
def test_a_class_of_one_image_is_trained_on_instead_of_the_split_being_refused(sizes, val_size):
    """The largest remainder of val_size fell to the one-image class, whose only image the split then refused
    to take, though the other classes could spare one: the dataset could not be trained on at that val_size."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    train, val = stratified_split(labels, val_size)
    assert len(val) == val_size and len(train) + len(val) == len(labels)
    assert set(labels[train].tolist()) == set(range(len(sizes))), "a class has no training image"
    small = sizes.index(1)
    assert small not in labels[val].tolist()


def test_a_split_is_refused_only_where_no_share_leaves_every_class_an_image_to_train_on():
    labels = np.array([0] + [1] * 2)  # a validation split of 2 takes the last image of one of them
    with pytest.raises(DatasetError, match="every image of class rare into validation"):
        stratified_split(labels, 2, classes=["rare", "common"])


def test_images_other_than_square_keep_their_shape_through_augmentation():
    """Every batch was resized to its width square, progressive plan or none: 12x10 images trained as 10x10
    and were evaluated as 12x10."""
    rng = np.random.default_rng(0)
    data = ImageArrays(rng.integers(0, 256, (16, 12, 10, 3), dtype=np.uint8), np.arange(16) % 2, ["a", "b"])
    params = AugmentParams(crop_padding=2, pad_mode="reflect", flip=True, cutout=4)
    loader = TensorLoader(data, 8, train=True, augment=params, mix=MixParams(cutmix_alpha=1.0))
    assert [tuple(x.shape) for x, _ in loader] == [(8, 3, 12, 10)] * 2
    assert [tuple(x.shape) for x, _ in TensorLoader(data, 8)] == [(8, 3, 12, 10)] * 2


def test_evaluation_sharded_over_processes_sees_every_image_once():
    """Each rank counted its batches from n // world_size images while it held up to one more: 50 images over
    3 ranks in batches of 4 left 2 unevaluated."""
    n, world = 50, 3
    data = ImageArrays(np.zeros((n, 4, 4, 3), np.uint8), np.arange(n), [str(i) for i in range(n)])
    seen = []
    for rank in range(world):
        loader = TensorLoader(data, 4, rank=rank, world_size=world)
        batches = [y for _, y in loader if isinstance(y, torch.Tensor)]
        assert len(batches) == len(loader) and all(len(y) for y in batches)
        seen += torch.cat(batches).tolist()
    assert sorted(seen) == list(range(n))


def _first_batch(seed: int = 0, **kwargs) -> torch.Tensor:
    # one image repeated: the batches differ only by their augmentations
    image = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    data = ImageArrays(image.repeat(64, 0), np.zeros(64, dtype=np.int64), ["a"])
    params = AugmentParams(crop_padding=4, flip=True, cutout=6)
    loader = TensorLoader(data, 16, train=True, augment=params, mix=MixParams(mixup_alpha=1.0), seed=seed, **kwargs)
    loader.set_epoch(1)
    return next(iter(loader))[0]


def test_each_process_augments_its_images_with_its_own_draws():
    """Every rank drew its crops, flips, cutouts and mixes from the stream it shuffles with, the same on every
    rank: each rank's k-th image was augmented as every other rank's k-th."""
    ranks = [_first_batch(rank=rank, world_size=2) for rank in range(2)]
    assert not torch.equal(ranks[0], ranks[1])
    # rank 0 draws as one process does, and each rank's draws are a function of (seed, epoch, rank): resume repeats them
    assert torch.equal(ranks[0], _first_batch())
    assert torch.equal(ranks[1], _first_batch(rank=1, world_size=2))


def test_every_seed_the_config_takes_drives_the_loader_and_pruning():
    """The loader and the pruning plans seed their generators with train.seed times 100,003: a seed above about
    1.8e14, which the config takes up to 2**63, failed at the first batch ("Overflow when unpacking long")."""
    seed = build_config("resnet9_half_cpu", [f"seed={2**63 - 1}"]).train.seed
    data = ImageArrays(np.zeros((16, 8, 8, 3), np.uint8), np.arange(16) % 2, ["a", "b"])
    params = AugmentParams(alternate_flip=True)
    batches = []
    for _ in range(2):
        loader = TensorLoader(data, 4, train=True, augment=params, seed=seed, prune=PruneParams(0.5, 3))
        loader.set_epoch(1)
        batches.append([x for x, _ in loader])
    assert len(batches[0]) == 4 and all(torch.equal(a, b) for a, b in zip(*batches))
    pruning = LossPruning(16, PruneParams(0.5, 3), seed)
    pruning.record(torch.arange(16), torch.arange(16.0))
    assert not pruning.plan(1).keep.all()
    # the seeds the generators took already are kept as they were: the recipes train on the same draws
    for value in (-1, 0, 7 * 100_003 + 3, 2**64 - 1):
        assert seeded(value).initial_seed() == torch.Generator().manual_seed(value).initial_seed()
