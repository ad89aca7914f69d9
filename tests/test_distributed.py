"""training.distributed: starting a process group from torchrun's environment, its collectives when a peer is gone,
and leaving the group on every way out. Two gloo processes are started here with the variables torchrun sets, not
by torchrun, whose SIGTERM to the rank left would race with what that rank says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import training.__main__ as training_cli
from conftest import ROOT, free_port, tiny_overrides
from training import distributed
from training.__main__ import main as training_main


def run_two_ranks(script: str) -> list[subprocess.CompletedProcess]:
    """``script`` in two processes of one gloo group's environment (ranks 0 and 1), each one thread."""
    for _ in range(3):
        results = _two_ranks(script)
        # free_port lets its port go before rank 0's store binds it: another program may take it in between
        if not any("EADDRINUSE" in result.stderr for result in results):
            break
    return results


def _two_ranks(script: str) -> list[subprocess.CompletedProcess]:
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
        if "EADDRINUSE" in err:  # rank 1 would wait for rank 0's store for the backend's whole timeout (30 min)
            for other in procs[len(results) :]:
                other.kill()
                out, err = other.communicate()
                results.append(subprocess.CompletedProcess(other.args, other.returncode, out, err))
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


def test_two_ranks_whose_port_another_program_took_start_again_on_another(monkeypatch):
    """free_port lets its port go before rank 0's store binds it: when another program takes it in between, rank 0
    fails at once and rank 1 waited for that store until the test's timeout; both start again on another port."""
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    handed: list[int] = []
    free = free_port

    def port() -> int:
        handed.append(taken.getsockname()[1] if not handed else free())
        return handed[-1]

    monkeypatch.setattr(sys.modules[__name__], "free_port", port)
    script = """
        from training import distributed
        info = distributed.setup("cpu")
        distributed.barrier(info)
        print(f"rank {info.rank} joined")
        distributed.cleanup(info)
    """
    try:
        results = run_two_ranks(script)
    finally:
        taken.close()
    assert len(handed) == 2, handed
    for rank, result in enumerate(results):
        assert result.returncode == 0 and f"rank {rank} joined" in result.stdout, result.stderr[-2000:]


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


def test_an_epochs_training_figures_are_every_ranks_not_rank_zeros():
    """Each rank counts its own share of the images; the history (and, without a validation split, the best epoch)
    was rank 0's half alone."""
    script = """
        from training import distributed
        info = distributed.setup("cpu")
        mine = [[1.5, 3, 10], [2.25, 5, 12]][info.rank]
        print(distributed.summed(mine, info))
        distributed.leave_at_exit()
    """
    ranks = run_two_ranks(script)
    for rank in ranks:
        assert rank.returncode == 0, rank.stderr
        assert rank.stdout.strip() == "[3.75, 8.0, 22.0]", rank.stdout
    assert distributed.summed([1.5, 3, 10], distributed.DistInfo()) == [1.5, 3, 10]  # one process: as counted


def test_a_batch_larger_than_a_ranks_share_names_the_share(image_folder, tmp_path):
    """batch_size 30 on 45 training images and two ranks (22 each) was refused as exceeding "the 45 training images
    per process"."""
    sets = tiny_overrides(image_folder, tmp_path / "cache", batch_size=30, threads=1)
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *sets]
    script = f"""
        import sys
        from training.__main__ import main
        sys.exit(main({argv!r}))
    """
    ranks = run_two_ranks(script)
    assert [rank.returncode for rank in ranks] == [2, 2], [rank.stderr for rank in ranks]
    said = ranks[0].stderr
    assert "batch_size 30 exceeds the 22 training images per process" in said, said


def test_a_run_resumed_on_another_number_of_processes_goes_on_from_the_same_point_of_its_schedule(
    image_folder, tmp_path
):
    """The schedule counts steps, and two ranks take half the steps per epoch of one: resumed on two, a run saved
    by one went on from twice as far into its schedule (past its end, here)."""
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, epochs=3, ema_decay=0)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(straight), "--set", *sets]) == 0
    one = [s if not s.startswith("epochs=") else "epochs=1" for s in sets]
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(resumed), "--set", *one]) == 0
    script = f"""
        import sys
        from training.__main__ import main
        sys.exit(main(["resume", {str(resumed)!r}, "--epochs", "3"]))
    """
    ranks = run_two_ranks(script)
    assert [rank.returncode for rank in ranks] == [0, 0], [rank.stderr for rank in ranks]
    assert "the schedule goes on from the same epoch" in ranks[0].stderr, ranks[0].stderr
    lr = {
        run: [e["lr"] for e in torch.load(run / "last.pt", weights_only=True)["history"]] for run in (straight, resumed)
    }
    assert len(lr[resumed]) == 3
    assert lr[resumed][1:] == pytest.approx(lr[straight][1:], rel=1e-9, abs=1e-12), lr


def test_the_ranks_of_a_lookahead_run_keep_one_set_of_weights(image_folder, tmp_path):
    """The lookahead's slow copy (and the EMA's) were taken before DDP gave every rank rank 0's weights: each rank
    kept its own initial weights there, and the first lookahead step pulled the ranks apart (0.09 after an epoch)."""
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, batch_size=8, ema_decay=0, lookahead_every=2)
    script = f"""
        import torch, torch.distributed as dist
        from training.config_recipes import build_config
        from training.engine import Trainer
        trainer = Trainer(build_config("resnet9_half_cpu", {sets!r}), {str(tmp_path / "run")!r})
        trainer.forward_model.train()
        trainer.train_epoch()
        flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        # the BatchNorm statistics are each rank's own until DDP sends rank 0's at the next step: the weights only
        named = dict(trainer.model.named_parameters())
        slow = torch.cat([v.detach().flatten() for k, v in trainer.lookahead.slow.items() if k in named])
        got = [[torch.zeros_like(flat) for _ in range(2)], [torch.zeros_like(slow) for _ in range(2)]]
        dist.all_gather(got[0], flat)
        dist.all_gather(got[1], slow)
        print(float((got[0][0] - got[0][1]).abs().max()), float((got[1][0] - got[1][1]).abs().max()))
        trainer._leave_process_group()
    """
    ranks = run_two_ranks(script)
    for rank in ranks:
        assert rank.returncode == 0, rank.stderr
        assert rank.stdout.split()[-2:] == ["0.0", "0.0"], rank.stdout


def test_only_rank_zero_says_its_warnings_progress_and_summary(image_folder, tmp_path):
    """Every rank printed the same warnings, progress bars and summary (rank 1's summary a wrong one: it keeps no
    validation figures), so each line came N times."""
    run = tmp_path / "run"
    # 22 images per rank in batches of 16: the trainer warns that 6 of them wait for the next epoch
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, epochs=1)
    started = ["train", "--recipe", "resnet9_half_cpu", "--out", str(run), "--set", *sets]
    for argv in (started, ["resume", str(run), "--epochs", "2"]):
        main, other = run_two_ranks(f"import sys\nfrom training.__main__ import main\nsys.exit(main({argv!r}))")
        assert [main.returncode, other.returncode] == [0, 0], [main.stderr, other.stderr]
        # c10d's own C++ log lines ("[W ... socket.cpp ...]" on some hosts) are out of any Python setting's reach
        said = [line for line in other.stderr.splitlines() if not line.startswith("[")]
        assert (other.stdout, said) == ("", []), (other.stdout, other.stderr)
        assert main.stderr.count("WARNING training: each epoch trains on 16 of the 22") == 1, main.stderr
        assert json.loads(main.stdout)["best"]["val_top1"] >= 0, main.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["models"],
        ["recipes"],
        ["evaluate", "--checkpoint", "RUN"],
        ["compare", "RUN", "RUN"],
        ["ablate", "--recipe", "resnet9_half_cpu", "--vary", "lr=0.1,0.2"],
        ["ensemble", "RUN", "RUN", "--out", "ENSEMBLE"],
    ],
    ids=lambda argv: argv[0],
)
def test_a_command_that_does_not_train_is_refused_under_torchrun(argv, tmp_path, monkeypatch, capsys):
    """evaluate, compare, ablate and ensemble ran whole in every process, each writing the same report, table or
    checkpoint into one place at once."""
    torchrun_environment(monkeypatch, rank=0)
    monkeypatch.chdir(tmp_path)
    status = training_main(argv)
    said = capsys.readouterr()
    assert status == 2 and said.out == "", said
    assert said.err.splitlines() == [
        f"error: {argv[0]} runs in one process; run it without torchrun (WORLD_SIZE=2 here)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_rank_other_than_zero_still_says_its_own_error(tmp_path, monkeypatch, capsys):
    """Its warnings and summary are rank 0's too; its errors are its own, and reach the user."""
    torchrun_environment(monkeypatch, rank=1)
    status = training_main(["resume", str(tmp_path / "missing")])
    said = capsys.readouterr().err.splitlines()
    assert status == 2 and len(said) == 1 and said[0].startswith("error: "), said


@pytest.mark.parametrize("stage", ["loading", "running"])
@pytest.mark.parametrize("rank", [0, 1])
def test_an_interrupt_is_said_by_rank_zero_alone(rank, stage, tmp_path, monkeypatch, capsys):
    """torchrun passes Ctrl-C to every process, and each said where the run stopped: the message came N times."""
    torchrun_environment(monkeypatch, rank=rank)

    def interrupted(*args):
        raise KeyboardInterrupt

    # while the figures load, before the command has started; or in the command
    monkeypatch.setattr(training_cli, "get_args_parser" if stage == "loading" else "cmd_resume", interrupted)
    status = training_main(["resume", str(tmp_path)])
    said = capsys.readouterr().err.splitlines()
    assert status == 130
    assert len(said) == (1 if rank == 0 else 0) and all(line.startswith("interrupted") for line in said), said


@pytest.mark.parametrize("value", ["", "two"])
def test_a_world_size_that_is_no_number_is_said_in_one_line(value, image_folder, tmp_path, monkeypatch, capsys):
    """WORLD_SIZE= (empty) or a word ended in int()'s ValueError traceback once the data was read."""
    monkeypatch.setenv("WORLD_SIZE", value)
    sets = tiny_overrides(image_folder, tmp_path / "cache", epochs=1)
    status = training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", *sets])
    said = capsys.readouterr().err.strip().splitlines()
    if value:
        assert status == 2 and said == [
            "error: WORLD_SIZE='two' is not a number of processes: unset it, or start with torchrun"
        ], said
    else:  # unset, as the shell's empty value means
        assert status == 0, said
