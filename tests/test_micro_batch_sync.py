"""Micro-batches under DDP: one gradient exchange per optimizer step, not one per micro-batch, and the same update.
Two gloo ranks build a trainer and take two steps from the same weights, without micro-batches and with them; a
communication hook counts the buckets each backward pass exchanges."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import tiny_overrides
from test_distributed import run_two_ranks

# batch_size 8 in micro-batches of 2: four backward passes a step
MICRO = 2
STEPS = 2

NETWORKS: dict[str, dict[str, str | int]] = {
    # no unused parameters: DDP built without find_unused_parameters
    "resnet9": {"lookahead_every": 0},
    # a whitening bias frozen from the start: DDP looks for unused parameters, and finds it
    "airbench94": {"model.name": "airbench94", "model.args": "{widths: [8, 8, 8]}", "whiten_bias_epochs": 0},
}
LOOKS_FOR_UNUSED = {"resnet9": False, "airbench94": True}

# Both scripts' start: a trainer of {sets} in {run} whose DDP model counts in ``exchanged`` the buckets each
# backward pass all-reduces.
COUNTING_TRAINER = """
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from training.config_recipes import build_config
    from training.engine import Trainer

    trainer = Trainer(build_config("resnet9_half_cpu", {sets!r}), {run!r})
    exchanged = []

    def counted(state, bucket):
        exchanged.append(bucket.index())
        return default_hooks.allreduce_hook(state, bucket)

    trainer.forward_model.register_comm_hook(None, counted)
"""

SCRIPT = (
    COUNTING_TRAINER
    + """
    import copy, json, torch
    from training.models.whitening import whitening_layers

    # as train_epoch freezes it; BatchNorm on its running statistics, so that only the chunking differs
    for layer in whitening_layers(trainer.model):
        layer.bias.requires_grad_(False)
    trainer.model.eval()
    start = copy.deepcopy((trainer.model.state_dict(), trainer.optimizer.state_dict()))
    found = {{"unused": trainer.forward_model.find_unused_parameters}}
    for micro in (None, {micro}):
        trainer.model.load_state_dict(start[0])
        trainer.optimizer.load_state_dict(start[1])
        trainer.config.train.micro_batch_size = micro
        exchanged.clear()
        batches = iter(trainer.train_loader)
        for _ in range({steps}):
            x, y = next(batches)
            trainer.optimizer.zero_grad(set_to_none=True)
            trainer._forward_backward(x, y)
            trainer.optimizer.step()
        weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        found[str(micro)] = {{"exchanged": len(exchanged), "weights": weights.tolist()}}
    trainer._leave_process_group()
    print(json.dumps(found))
"""
)


@pytest.fixture(scope="module", params=list(NETWORKS))
def two_ranks_stepped(request, image_folder, tmp_path_factory) -> list[dict]:
    """Each rank's exchange count and weights after the steps, without ("None") and with micro-batches."""
    tmp = tmp_path_factory.mktemp(request.param)
    sets = tiny_overrides(image_folder, tmp / "cache", threads=1, batch_size=8, ema_decay=0, **NETWORKS[request.param])
    script = SCRIPT.format(micro=MICRO, sets=sets, run=str(tmp / "run"), steps=STEPS)
    ranks = run_two_ranks(script)
    for rank in ranks:
        assert rank.returncode == 0, rank.stderr[-3000:]
    found = [json.loads(rank.stdout.strip().splitlines()[-1]) for rank in ranks]
    assert [rank["unused"] for rank in found] == [LOOKS_FOR_UNUSED[request.param]] * 2
    return found


def test_micro_batches_exchange_gradients_once_a_step(two_ranks_stepped):
    """Each micro-batch's backward pass all-reduced the gradients: four exchanges of every bucket a step, of which
    the last alone counts."""
    for rank in two_ranks_stepped:
        whole, micro = rank["None"]["exchanged"], rank[str(MICRO)]["exchanged"]
        assert whole >= STEPS, rank
        assert micro == whole, f"{micro} bucket exchanges in micro-batches, {whole} without"


def test_micro_batches_under_ddp_take_the_step_of_the_whole_batch(two_ranks_stepped):
    for rank in two_ranks_stepped:
        whole, micro = (torch.tensor(rank[key]["weights"]) for key in ("None", str(MICRO)))
        assert torch.allclose(micro, whole, atol=1e-5, rtol=1e-4), float((micro - whole).abs().max())
    # the ranks' own batches, exchanged: one set of weights
    first, second = (torch.tensor(rank[str(MICRO)]["weights"]) for rank in two_ranks_stepped)
    assert torch.equal(first, second)


UNEVEN = (
    COUNTING_TRAINER
    + """
    import torch, torch.distributed as dist
    from training.data.targets import part_of

    x, y = next(iter(trainer.train_loader))
    keep = len(x) - {micro} * trainer.dist.rank
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer._forward_backward(x[:keep], part_of(y, slice(0, keep)))
    trainer.optimizer.step()
    flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
    both = [torch.zeros_like(flat) for _ in range(2)]
    dist.all_gather(both, flat)
    print(len(exchanged), float((both[0] - both[1]).abs().max()))
    trainer._leave_process_group()
"""
)


def test_ranks_splitting_their_batches_into_different_counts_of_micro_batches_keep_in_step(image_folder, tmp_path):
    """Each micro-batch's backward pass was an exchange: a rank of four micro-batches made one exchange more than
    a rank of three, whose next collective it then met. Whatever the count, each rank now exchanges once a step.
    (Training batches are whole and micro_batch_size divides them, so only a batch cut short, as pruning does in
    one process, splits otherwise.)"""
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, batch_size=8, micro_batch_size=MICRO)
    ranks = run_two_ranks(UNEVEN.format(sets=sets, run=str(tmp_path / "run"), micro=MICRO))
    said = []
    for rank in ranks:
        assert rank.returncode == 0, rank.stderr[-3000:]
        said.append(rank.stdout.split()[-2:])
    assert said[0][0] == said[1][0], said  # as many bucket exchanges on each rank
    assert [float(difference) for _, difference in said] == [0.0, 0.0], said
