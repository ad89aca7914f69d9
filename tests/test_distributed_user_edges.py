"""A run under torchrun as a user meets it when something goes wrong: a process of the run killed, a refusal whose
advice is a command to run next, a run folder left with nothing to continue from."""

from __future__ import annotations

import shlex

import pytest

from conftest import tiny_overrides
from test_distributed import run_two_ranks, torchrun_environment
from training import distributed
from training.__main__ import main as training_main


def test_a_peer_killed_without_a_word_is_said_where_its_end_is_told():
    """A rank killed outright (SIGKILL: the out-of-memory killer) prints nothing, yet the rank left said "its own
    message says why", sending the user to look for a message that is nowhere."""
    script = """
        import os, signal, sys
        from training import distributed
        info = distributed.setup("cpu")
        distributed.barrier(info)  # both have joined: rank 1 is killed outside any collective
        if info.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            distributed.barrier(info)
        except OSError as exc:  # as the command lines catch it
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    """
    left, killed = run_two_ranks(script)
    assert killed.returncode == -9 and killed.stderr == "", killed.stderr
    assert left.returncode == 2, left.stderr
    lines = left.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in left.stderr, left.stderr
    said = lines[0]
    assert said.startswith("error: rank 0 of 2: another process of this run stopped or stopped answering"), said
    assert said.endswith(
        "where it printed none (killed, or stopped by a signal of its own), torchrun's report of its exit code"
    )


def test_the_command_advised_for_more_epochs_keeps_the_processes_the_run_was_given(
    image_folder, tmp_path, monkeypatch, capsys
):
    """`torchrun --nproc_per_node 2 ... train --resume` with more epochs was told to run `python -m training resume
    RUN --epochs N`: one process, where the run continues exactly only on the two it was given."""
    run = tmp_path / "my run"
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, epochs=1)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(run), "--set", *sets]) == 0
    capsys.readouterr()
    torchrun_environment(monkeypatch, rank=0)
    more = [s if not s.startswith("epochs=") else "epochs=3" for s in sets]
    status = training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(run), "--resume", "--set", *more])
    said = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(said) == 1, said
    command = shlex.join(["torchrun", "--nproc_per_node", "2", "-m", "training", "resume", str(run), "--epochs", "3"])
    assert said[0].endswith(f"to train it to 3 epochs: {command}"), said[0]


def test_a_damaged_last_checkpoint_with_nothing_else_to_go_on_from_says_what_is_left(tmp_path, capsys):
    """A last.pt cut short (a disk filled while copying the folder) with no whole best.pt beside it was said to be
    no checkpoint, and nothing more: not what the user can still do."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"PK\x03\x04" + bytes(100))
    (run / "best.pt").write_bytes(b"not a checkpoint")
    assert training_main(["resume", str(run)]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and said[0].startswith(f"error: {run / 'last.pt'} is not a training checkpoint"), said
    assert said[0].endswith(f"{run} holds no other checkpoint to continue from: start over with `train --force`")


def test_a_peer_killed_while_a_training_step_exchanges_gradients_is_one_line_not_a_traceback():
    """A rank killed mid-epoch: the one left met the loss in its backward pass (DDP's gradient exchange), outside
    the watched collectives, and printed a 30-line traceback ending in gloo's "Connection closed by peer"."""
    script = """
        import os, signal, sys
        import torch
        from torch.nn.parallel import DistributedDataParallel
        from training import distributed
        info = distributed.setup("cpu")
        model = DistributedDataParallel(torch.nn.Linear(4, 2))
        distributed.barrier(info)
        if info.rank == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            with distributed.peers_watched(info, peer_errors_only=True):
                model(torch.ones(3, 4)).sum().backward()
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    """
    left, killed = run_two_ranks(script)
    assert killed.returncode == -9, killed.stderr
    lines = left.stderr.strip().splitlines()
    assert left.returncode == 2 and len(lines) == 1 and "Traceback" not in left.stderr, left.stderr
    assert lines[0].startswith("error: rank 0 of 2: another process of this run stopped or stopped answering")


def test_an_error_of_the_step_itself_is_not_taken_for_a_lost_peer():
    """Around a whole training step, an error of the step's own (out of memory, a shape) stays itself."""
    info = distributed.DistInfo(rank=0, world_size=2, local_rank=0)
    with pytest.raises(RuntimeError, match="CUDA out of memory") as raised:
        with distributed.peers_watched(info, peer_errors_only=True):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert not isinstance(raised.value, distributed.PeerLost)
    with pytest.raises(distributed.PeerLost):
        with distributed.peers_watched(info, peer_errors_only=True):
            raise RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer")


def test_a_run_folder_in_use_is_told_to_continue_on_the_processes_it_was_given(
    image_folder, tmp_path, monkeypatch, capsys
):
    """`torchrun --nproc_per_node 2 ... train --out RUN` over a run already there advised `python -m training
    resume RUN`: one process, where a run of two continues exactly only on two."""
    run = tmp_path / "run"
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, epochs=1)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(run), "--set", *sets]) == 0
    capsys.readouterr()
    torchrun_environment(monkeypatch, rank=0)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(run), "--set", *sets]) == 2
    said = capsys.readouterr().err
    assert f"continue it with `torchrun --nproc_per_node 2 -m training resume {run}`" in said, said


GLOO_PEER_GONE = "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:1"


def test_a_peer_lost_in_a_training_step_stops_the_epoch_as_a_lost_peer(image_folder, tmp_path, monkeypatch):
    """The trainer's own step: the backward pass's gradient exchange meeting a gone peer is a PeerLost, said in
    one line by the command, while an error of the step itself keeps its traceback."""
    from training.config_recipes import build_config
    from training.engine import Trainer

    trainer = Trainer(build_config("resnet9_half_cpu", tiny_overrides(image_folder, tmp_path / "c")), tmp_path / "r")
    trainer.dist = distributed.DistInfo(rank=0, world_size=2)  # as under torchrun, for the step's error alone

    def step(error):
        def forward_backward(x, y):
            raise RuntimeError(error)

        monkeypatch.setattr(trainer, "_forward_backward", forward_backward)

    step(GLOO_PEER_GONE)
    with pytest.raises(distributed.PeerLost, match="Connection closed by peer"):
        trainer.train_epoch()
    step("mat1 and mat2 shapes cannot be multiplied (8x10 and 12x10)")
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied") as raised:
        trainer.train_epoch()
    assert not isinstance(raised.value, distributed.PeerLost)


@pytest.mark.parametrize("saved", [False, True])
def test_a_lost_peer_is_told_where_the_run_goes_on_from(image_folder, tmp_path, monkeypatch, capsys, saved):
    """The line said the last saved epoch was kept to resume from even where the run had saved none (a peer lost
    in the first epoch); it now says what the run left, as after Ctrl-C."""
    from training.engine import Trainer

    run = tmp_path / "run"
    sets = tiny_overrides(image_folder, tmp_path / "cache", threads=1, epochs=2)
    original = Trainer.train_epoch

    def lost_in_second_epoch(self):
        if self.epoch == (1 if saved else 0):
            raise distributed.PeerLost("rank 0 of 2: another process of this run stopped")
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", lost_in_second_epoch)
    assert training_main(["train", "--recipe", "resnet9_half_cpu", "--out", str(run), "--set", *sets]) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith("error: rank 0 of 2: another process of this run stopped; stopped"), said
    if saved:
        assert said.endswith(f"continue with `python -m training resume {run}`"), said
    else:
        assert said.endswith("nothing to continue; run the same command again"), said


def test_the_command_advised_on_several_nodes_gives_each_node_its_share(monkeypatch):
    """WORLD_SIZE counts every node's processes: `--nproc_per_node 8` on each of two nodes of 4 would start 16."""
    torchrun_environment(monkeypatch, rank=0, WORLD_SIZE="8", LOCAL_WORLD_SIZE="4")
    said = distributed.training_command("resume", "runs/x")
    assert said == "torchrun --nnodes 2 --nproc_per_node 4 -m training resume runs/x"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert distributed.training_command("resume", "runs/x") == "torchrun --nproc_per_node 8 -m training resume runs/x"
