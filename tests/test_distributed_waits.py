"""Waits under torchrun for one-off work before the first step (the teacher's logits, which rank 0 computes while
the others wait): bounded by their own timeout, not by the process group's, which such work outlasts on a large
dataset. The group's timeout is shortened here to a second, once both ranks have joined, and the work made to take
longer than that."""

from __future__ import annotations

from test_distributed import run_two_ranks

# The teacher's pass of Trainer._teacher_logits, in two gloo ranks whose group times out after GROUP_TIMEOUT_S, once
# for each rank of SLOW_RANKS in turn: that rank works for WORK_S (or, WORK_S negative, stops there), then both
# meet in a collective of the group, as DDP's first one meets them after the pass. PREPARED: a statement run by
# both ranks before the pass (the group of the waits made there, or nothing, when the pass makes it itself).
SCRIPT = """
    import datetime, os, sys, time, types
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from training import distributed, engine, trainer_setup

    def teacher_pass(*args, **kwargs):
        if info.rank == slow_rank:
            if {WORK_S} < 0:
                os._exit(3)  # stopped in the pass (killed, out of memory)
            time.sleep({WORK_S})
        return torch.zeros(4, 10), {{"path": "teacher.pt"}}

    trainer_setup.load_or_compute = teacher_pass
    info = distributed.setup("cpu")
    # made for the runs with such work only: a run without a teacher needs no gloo connection beside NCCL's
    assert distributed._one_off_work_group is None, "a group for one-off waits made by setup"
    {PREPARED}
    distributed.barrier(info)  # both have joined: what follows is the teacher's pass alone
    dist.set_timeout(datetime.timedelta(seconds={GROUP_TIMEOUT_S}))
    trainer = types.SimpleNamespace(
        dist=info,
        config=types.SimpleNamespace(
            train=types.SimpleNamespace(eval_batch_size=4), augment=types.SimpleNamespace(flip=True)
        ),
        out_dir=Path("."),
        meta={{}},
        device=torch.device("cpu"),
        bf16=False,
    )
    for slow_rank in {SLOW_RANKS}:
        try:
            engine.Trainer._teacher_logits(trainer, "teacher.pt", types.SimpleNamespace(images=None), False)
            distributed.barrier(info)
        except OSError as exc:  # as the command lines catch it
            print(f"error: {{exc}}", file=sys.stderr)
            sys.exit(2)
        print(f"rank {{info.rank}} waited for rank {{slow_rank}}")
    distributed.cleanup(info)
"""

GROUP_TIMEOUT_S = 1


def test_ranks_wait_for_a_teacher_pass_longer_than_the_group_timeout():
    """The waiting rank failed in gloo's timeout ("another process of this run stopped or stopped answering")
    although the other was only working: rank 1 while rank 0 computed the logits, and rank 0 while a rank on
    another node, which does not see the run folder, computed its own after it."""
    script = SCRIPT.format(
        GROUP_TIMEOUT_S=GROUP_TIMEOUT_S, SLOW_RANKS=[0, 1], WORK_S=2.5 * GROUP_TIMEOUT_S, PREPARED="pass"
    )
    for rank, result in enumerate(run_two_ranks(script)):
        assert result.returncode == 0, result.stderr
        waited = [f"rank {rank} waited for rank {slow}" for slow in (0, 1)]
        assert result.stdout.splitlines() == waited, result.stdout + result.stderr


def test_a_rank_that_stops_in_the_teacher_pass_ends_the_wait_at_once():
    """The waits' own bound is long (a day): a peer that dies meanwhile must still end them, in one line, rather
    than leave the others waiting out that bound. The group of the waits is made before the pass: rank 0, which
    stops, must not stop while rank 1 still makes it through rank 0's store (the test below)."""
    script = SCRIPT.format(
        GROUP_TIMEOUT_S=GROUP_TIMEOUT_S,
        SLOW_RANKS=[0],
        WORK_S=-1,
        PREPARED="distributed.prepare_one_off_waits(info)",
    )
    stopped, left = run_two_ranks(script)
    assert stopped.returncode == 3, stopped.stderr
    assert left.returncode == 2, left.stderr
    lines = left.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in left.stderr, left.stderr
    assert "rank 1 of 2: another process of this run stopped" in lines[0], lines[0]


# Rank 0, whose store the ranks make groups through, stops once both have joined; rank 1 then makes the group of
# the one-off waits alone.
STOPS_BEFORE_THE_GROUP = """
    import os, sys
    from training import distributed

    info = distributed.setup("cpu")
    distributed.barrier(info)
    if info.rank == 0:
        os._exit(3)
    try:
        distributed.prepare_one_off_waits(info)
    except OSError as exc:  # as the command lines catch it
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
"""


def test_a_rank_0_that_stops_while_the_group_of_the_waits_is_made_is_said_in_one_line():
    """The group's making reads rank 0's store: rank 0 gone, it failed in torch's DistNetworkError ("Connection
    reset by peer"), a traceback on every rank left (CI's test above once met it, rank 0 having stopped in the
    pass before rank 1 had made the group). The backend's own warnings may come before the line."""
    stopped, left = run_two_ranks(STOPS_BEFORE_THE_GROUP)
    assert stopped.returncode == 3, stopped.stderr
    assert left.returncode == 2, left.stderr
    assert "Traceback" not in left.stderr, left.stderr
    last = left.stderr.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 of 2: another process of this run stopped"), left.stderr
