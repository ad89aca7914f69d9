"""training.distributed: starting a process group from torchrun's environment, its collectives when a peer is gone,
and leaving the group on every way out. Two gloo processes are started here with the variables torchrun sets, not
by torchrun, whose SIGTERM to the rank left would race with what that rank says."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import ROOT, free_port, tiny_overrides
from training import distributed
from training.__main__ import main as training_main


def run_two_ranks(script: str) -> list[subprocess.CompletedProcess]:
    """``script`` in two processes of one gloo group's environment (ranks 0 and 1), each one thread."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)],
            env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for other in procs:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.parametrize(
    "collective",
    ["distributed.barrier(info)", "distributed.broadcast_flag(False, info)", "distributed.gather_rng_states(info)"],
    ids=["barrier", "broadcast_flag", "gather_rng_states"],
)
def test_a_rank_whose_peer_stopped_says_so_in_one_line(collective):
    """Rank 0 stops (a full disk while saving, say) while rank 1 waits for it in a collective: rank 1 said so in
    the backend's traceback ("Connection closed by peer"), which buried rank 0's one line."""
    script = f"""
        import sys
        from training import distributed
        info = distributed.setup("cpu")
        distributed.barrier(info)  # both have joined: what follows is the collective under test alone
        if info.rank == 0:
            sys.exit(3)
        try:
            {collective}
        except OSError as exc:  # as the command lines catch it
            print(f"error: {{exc}}", file=sys.stderr)
            sys.exit(2)
    """
    stopped, left = run_two_ranks(script)
    assert stopped.returncode == 3, stopped.stderr
    assert left.returncode == 2, left.stderr
    lines = left.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in left.stderr, left.stderr
    assert "rank 1 of 2: another process of this run stopped" in lines[0], lines[0]


def test_a_group_left_by_an_error_is_destroyed_before_the_interpreter_exits():
    """A refusal or error after the setup skips the trainer's leaving of the group; the group was then left to the
    interpreter's exit, destroyed there with gloo's threads running."""
    script = """
        import atexit, sys
        import torch.distributed as dist
        from training import distributed
        # registered first, so it runs last: what the interpreter's exit finds
        atexit.register(lambda: print(f"held at exit: {dist.is_initialized()}", flush=True))
        info = distributed.setup("cpu")
        distributed.barrier(info)
        raise SystemExit("error: a refusal after the setup")
    """
    for rank in run_two_ranks(script):
        assert rank.returncode == 1 and "a refusal after the setup" in rank.stderr, rank.stderr
        assert "held at exit: False" in rank.stdout, rank.stdout + rank.stderr


def torchrun_environment(monkeypatch, rank: int, **variables: str) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_more_processes_than_gpus_are_refused_before_joining(monkeypatch):
    """torchrun --nproc_per_node 2 on a machine of one GPU: rank 1 failed in CUDA's "invalid device ordinal" after
    joining the group, while rank 0 went on to wait for it."""
    torchrun_environment(monkeypatch, rank=1)
    joined = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda *a, **k: joined.append(a))
    with pytest.raises(distributed.LaunchError, match="no GPU: 1 visible, so start at most --nproc_per_node 1"):
        distributed.setup("cuda")
    assert joined == []


def test_a_world_size_set_without_torchrun_is_refused_in_one_line(image_folder, tmp_path, monkeypatch, capsys):
    """WORLD_SIZE=2 set by hand (or left by another launcher) ended in a KeyError on RANK."""
    torchrun_environment(monkeypatch, rank=0)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("MASTER_PORT")
    sets = tiny_overrides(image_folder, tmp_path / "cache")
    status = training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *sets])
    said = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(said) == 1, said
    assert said[0].startswith("error: WORLD_SIZE=2 but no RANK, MASTER_PORT: start several processes with torchrun")
