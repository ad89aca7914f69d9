"""Dynamic data pruning (InfoBatch): which images an epoch skips, how the rest are weighted, and exact resume."""

from __future__ import annotations

import pytest
import torch

from conftest import make_arrays, tiny_overrides, train_straight_and_resumed
from training.config import ConfigError, TrainConfig
from training.config_recipes import build_config
from training.data.arrays import ImageArrays
from training.data.loader import TensorLoader
from training.data.prune import LossPruning, PruneParams
from training.data.targets import PrunedTargets
from training.engine import Trainer


def test_a_plan_skips_only_below_mean_images_about_ratio_of_them_and_weighs_the_kept_ones_up():
    n, ratio = 20_000, 0.4
    pruning = LossPruning(n, PruneParams(ratio, last_epoch=5), seed=3)
    # half the images fit (loss 0.1), half do not (loss 2): the mean is 1.05
    pruning.record(torch.arange(n), torch.where(torch.arange(n) % 2 == 0, 0.1, 2.0))
    plan = pruning.plan(2)
    low = torch.arange(n) % 2 == 0
    assert plan.keep[~low].all(), "an image above the mean loss was skipped"
    skipped = (~plan.keep[low]).float().mean().item()
    assert abs(skipped - ratio) < 0.02
    assert torch.allclose(plan.weight[low], torch.tensor(1 / (1 - ratio)))
    assert torch.equal(plan.weight[~low], torch.ones(n // 2))
    # the kept weights sum to the whole set's count in expectation: the epoch's gradient is unbiased
    assert abs(plan.weight[plan.keep].sum().item() - n) / n < 0.02


def test_plans_depend_on_seed_and_epoch_only_and_spare_the_first_the_last_and_the_unseen():
    n = 1_000
    losses = torch.linspace(0, 1, n)
    first = LossPruning(n, PruneParams(0.5, last_epoch=4), seed=0)
    again = LossPruning(n, PruneParams(0.5, last_epoch=4), seed=0)
    for pruning in (first, again):
        pruning.record(torch.arange(n - 100), losses[: n - 100])
    assert torch.equal(first.plan(2).keep, again.plan(2).keep)
    assert not torch.equal(first.plan(2).keep, first.plan(3).keep)
    for epoch in (0, 4, 7):  # nothing known yet, and the annealing epochs
        assert first.plan(epoch).keep.all()
    assert first.plan(2).keep[n - 100 :].all(), "an image with no recorded loss was skipped"
    assert not LossPruning(n, PruneParams(0.5, 4), 0).plan(2).keep.logical_not().any(), "pruned with no losses"


def test_the_epochs_that_prune_are_infobatchs_for_any_share_and_run_length():
    """InfoBatch's sampler (NUS-HPC-AI-Lab/InfoBatch, infobatch/infobatch.py: IBSampler.reset) prunes the 0-based
    epoch e while e + 1 <= num_epochs * delta, the first int(delta * num_epochs) epochs; its first epoch prunes
    nothing, every image having the same initial score. train.prune_until is that delta."""
    n = 200
    for epochs in (3, 7, 8, 10, 90, 100, 200):
        for until in (0.3, 0.5, 0.57, 0.7, 0.8, 0.875, 0.9, 0.99, 1.0):
            params = TrainConfig(epochs=epochs, prune_ratio=0.5, prune_until=until).prune_params()
            if not params.enabled:
                continue
            pruning = LossPruning(n, params, seed=0)
            pruning.record(torch.arange(n), torch.linspace(0, 1, n))
            prunes = [e for e in range(epochs) if not pruning.plan(e).keep.all()]
            reference = [e for e in range(1, epochs) if e + 1 <= epochs * until]
            assert prunes == reference, (epochs, until)
            # the last pruning epoch's plan reads the losses of the one before it
            assert all(pruning.records(e) for e in range(max(prunes)))


def test_the_loader_shrinks_its_batches_keeps_their_count_and_carries_indices_and_weights():
    data = ImageArrays(*make_arrays(3, 32, size=8), ["a", "b", "c"])
    loader = TensorLoader(data, 16, train=True, prune=PruneParams(0.5, last_epoch=3), seed=1)
    batches = list(loader)
    assert len(batches) == len(loader) == 6
    assert all(isinstance(y, PrunedTargets) and len(y.index) == 16 and y.full == 16 for _, y in batches)
    for _, y in batches:  # an unpruned epoch's losses are recorded to plan the next
        loader.record_losses(y.index, torch.rand(len(y.index)))
    loader.set_epoch(1)
    batches = list(loader)
    assert len(batches) == 6
    sizes = [len(y.index) for _, y in batches]
    assert sum(sizes) < 96 and all(1 <= s <= 16 for s in sizes)
    for x, y in batches:
        assert len(x) == len(y.index) == len(y.weight) == len(y.target)
        assert torch.equal(y.target, torch.from_numpy(data.labels)[y.index])
    loader.set_epoch(3)  # annealing: plain batches, as without pruning
    assert all(isinstance(y, torch.Tensor) and len(y) == 16 for _, y in loader)


def test_each_images_loss_averages_to_the_batch_loss_for_labels_mixes_and_teachers():
    from training.data.mix import MixedTargets, mixed_cross_entropy
    from training.data.targets import DistilledTargets
    from training.distill import distill_loss

    gen = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(12, 5, generator=gen), torch.randn(12, 5, generator=gen)
    labels, other = torch.randint(0, 5, (12,), generator=gen), torch.randint(0, 5, (12,), generator=gen)
    for target in (labels, MixedTargets(labels, other, 0.3)):
        each = mixed_cross_entropy(logits, target, 0.1, reduction="none")
        assert each.shape == (12,) and torch.allclose(each.mean(), mixed_cross_entropy(logits, target, 0.1))
    target = DistilledTargets(labels, teacher)
    each = distill_loss(logits, target, 0.1, 0.5, 2.0, reduction="none")
    assert each.shape == (12,) and torch.allclose(each.mean(), distill_loss(logits, target, 0.1, 0.5, 2.0))


def test_a_pruned_step_is_the_full_batch_step_when_nothing_is_skipped(image_folder, tmp_path):
    overrides = tiny_overrides(image_folder, tmp_path / "cache", label_smoothing=0.1, epochs=4)
    plain = Trainer(build_config("resnet9_half_cpu", overrides), tmp_path / "a")
    pruned = Trainer(build_config("resnet9_half_cpu", [*overrides, "prune_ratio=0.5"]), tmp_path / "b")
    pruned.model.load_state_dict(plain.model.state_dict())
    x, y = next(iter(plain.train_loader))
    weights = torch.ones(len(y))
    _, loss_plain = plain._forward_backward(x, y)
    _, loss_pruned = pruned._forward_backward(x, PrunedTargets(y, torch.arange(len(y)), weights, len(y)))
    assert torch.allclose(loss_plain, loss_pruned, atol=1e-6)
    for p, q in zip(plain.model.parameters(), pruned.model.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-6)
    recorded = pruned.train_loader.pruning.scores[: len(y)]
    assert not recorded.isnan().any() and abs(recorded.mean().item() - loss_pruned.item()) < 1e-5


def test_a_pruning_run_skips_images_records_the_share_and_resumes_exactly(image_folder, tmp_path, monkeypatch):
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=4, prune_ratio=0.6, prune_until=0.75)
    a, b = train_straight_and_resumed("resnet9_half_cpu", overrides, tmp_path, monkeypatch)
    kept = [h["train_kept"] for h in a["history"]]
    assert kept[0] == 1.0 and kept[3] == 1.0  # no losses yet; the annealing epoch
    assert kept[1] < 1.0 and kept[2] < 1.0
    assert [h["train_kept"] for h in b["history"]] == kept
    assert torch.equal(a["pruning"]["scores"], b["pruning"]["scores"])
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_pruning_is_refused_across_processes_and_outside_its_range(image_folder, tmp_path, monkeypatch):
    from training import trainer_setup
    from training.distributed import DistInfo

    with pytest.raises(ConfigError, match="prune_ratio"):
        build_config("resnet9_half_cpu", ["prune_ratio=1"])
    # 0.875 of 2 epochs leaves no epoch after the first, which has no losses to prune by
    with pytest.raises(ConfigError, match="no epoch would prune"):
        build_config("resnet9_half_cpu", ["prune_ratio=0.5", "epochs=2"])
    # two processes, as torchrun would start (without the process group, which the refusal comes before)
    monkeypatch.setattr(trainer_setup.distributed, "setup", lambda kind: DistInfo(0, 2, 0))
    overrides = tiny_overrides(image_folder, tmp_path / "cache", prune_ratio=0.5, epochs=4)
    with pytest.raises(ConfigError, match="one process"):
        Trainer(build_config("resnet9_half_cpu", overrides), tmp_path / "run")
