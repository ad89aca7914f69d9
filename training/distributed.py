"""DistributedDataParallel setup from torchrun's environment (NCCL on GPUs, gloo on CPUs).

What a run of N processes is (training/engine.py): batch_size is each process's, so a step averages the gradients
of N x batch_size images and an epoch takes 1/N of the steps, at the recipe's learning rate (not scaled);
BatchNorm normalises each process's batch alone (no SyncBatchNorm) and its running statistics are rank 0's, which
DDP sends to the others at each step; rank 0 alone evaluates the validation split and writes the run folder.

Every process runs the whole command line, so every process but rank 0 keeps to its own errors
(``quiet_unless_main``); the commands that do not train run in one process and are refused under torchrun."""

from __future__ import annotations

import atexit
import gc
import logging
import os
import re
import shlex
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import timedelta
from functools import partialmethod

import torch
import torch.distributed as dist
from tqdm import tqdm

from inference.errors import UsageError

# What init_process_group's env:// rendezvous reads beside WORLD_SIZE; torchrun sets them all.
TORCHRUN_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")

# How long ranks wait for one-off work that some of them do before the first step (rank 0's pass of the teacher over
# every training image). The group's own timeout (gloo 30 minutes, NCCL 10) stays the bound of the steps'
# collectives, where a peer that stops answering is a hang to end soon; a pass over a large dataset outlasts it with
# nothing wrong. This bound only has to end a peer that hangs alive: one that dies is seen at once (its gloo
# connection closes, and torchrun stops the other processes), so it can be as long as the longest such pass.
ONE_OFF_WORK_TIMEOUT = timedelta(hours=24)

# The gloo group that those waits go through, made by every rank before such work (``prepare_one_off_waits``), in
# the runs that do it only: a run without it needs no gloo connection between nodes beside NCCL's. Gloo, under NCCL
# as well: a rank waiting there has no NCCL work pending, which NCCL's watchdog would end at NCCL's own timeout.
_one_off_work_group: dist.ProcessGroup | None = None


class LaunchError(UsageError):
    """A start that cannot make a process group: set by hand in part, or more processes than GPUs."""


class PeerLost(ConnectionError):
    """Another process of the group stopped (or stopped answering) during a collective. A ConnectionError, so the
    command lines print it in one line as they print any OSError: the process that failed has said why."""


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def is_main_process() -> bool:
    """Whether this is torchrun's rank 0, or no torchrun: known from the environment before ``setup`` joins the
    group, for what rank 0 alone does (claim the run folder, print the summary)."""
    return os.environ.get("RANK", "0") == "0"


def launched_processes() -> int:
    """How many processes run this command: torchrun's WORLD_SIZE, 1 without it."""
    text = os.environ.get("WORLD_SIZE", "").strip() or "1"
    try:
        return int(text)
    except ValueError:
        raise LaunchError(
            f"WORLD_SIZE={text!r} is not a number of processes: unset it, or start with torchrun"
        ) from None


def training_command(*arguments: str) -> str:
    """The command line of ``python -m training ARGUMENTS`` as this command was launched: under torchrun, on as
    many processes, as a run of N processes continues exactly only on N (its steps, batches and each rank's
    random state)."""
    processes = launched_processes()
    if processes == 1:
        return shlex.join(["python", "-m", "training", *arguments])
    # torchrun's LOCAL_WORLD_SIZE is a node's share of them: a run on several nodes is given them so (its
    # rendezvous flags, which this process does not see, the user's own)
    local = os.environ.get("LOCAL_WORLD_SIZE", "").strip()
    per_node = int(local) if local.isdigit() else processes
    nodes = ["--nnodes", str(processes // per_node)] if 0 < per_node < processes else []
    per_node = per_node if nodes else processes
    return shlex.join(["torchrun", *nodes, "--nproc_per_node", str(per_node), "-m", "training", *arguments])


@contextmanager
def quiet_unless_main() -> Iterator[None]:
    """Rank 0's output alone for the body, where every process runs the same command: the others would repeat
    each warning, log line, progress bar and summary (theirs wrong at that: rank 0 alone keeps the validation
    figures). Their errors still reach stderr, each in its own line (or a bug's traceback)."""
    if is_main_process():
        yield
        return
    with ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore")
        stack.enter_context(redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        stack.enter_context(_bars_off())
        disabled = logging.root.manager.disable
        logging.disable(logging.WARNING)
        stack.callback(logging.disable, disabled)
        yield


@contextmanager
def _bars_off() -> Iterator[None]:
    """Every tqdm bar made in the body starts disabled, but where its caller says otherwise. tqdm's own switch,
    the TQDM_DISABLE variable, is read once when tqdm is imported, which torch does (torch.hub) before any
    command runs."""
    constructor = tqdm.__dict__["__init__"]
    tqdm.__init__ = partialmethod(constructor, disable=True)
    try:
        yield
    finally:
        tqdm.__init__ = constructor


def process_device(device: torch.device) -> torch.device:
    """The device this process trains on: under torchrun each process takes the GPU of its LOCAL_RANK, whatever
    index was named."""
    if device.type == "cuda" and launched_processes() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def setup(device_type: str) -> DistInfo:
    world_size = launched_processes()
    if world_size <= 1:
        return DistInfo()
    check_launched(world_size)
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        # before joining: a rank that cannot run stops alone, and the others' wait in the setup ends with it
        check_gpu_for(info)
    if not dist.is_initialized():
        with terminated_outright():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        # The trainer leaves the group when a run ends; a refusal or an error after the setup skips that, and a
        # group left to the interpreter's exit is destroyed with its backend's threads running (gloo can abort
        # there: "terminate called without an active exception"; NCCL warns of pending operations).
        atexit.unregister(leave_at_exit)
        atexit.register(leave_at_exit)
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def prepare_one_off_waits(info: DistInfo) -> None:
    """Make the group of ``wait_out_one_off_work``: called by every rank before the one-off work, where they are
    together (every rank takes part in making a group, and the waits, which they reach hours apart, are no place to
    make it). Making it goes through rank 0's store: a rank 0 that stops meanwhile is PeerLost, as in a
    collective."""
    global _one_off_work_group
    if info.enabled and _one_off_work_group is None:
        with peers_watched(info):
            group = dist.new_group(backend="gloo", timeout=ONE_OFF_WORK_TIMEOUT)
        assert isinstance(group, dist.ProcessGroup), "every rank is a member of it"
        _one_off_work_group = group


def check_launched(world_size: int) -> None:
    """A WORLD_SIZE without the rest of torchrun's environment (set by hand, or left over from another launcher)
    is refused in one line, not met with a KeyError or the rendezvous's ValueError."""
    missing = [name for name in TORCHRUN_VARIABLES if not os.environ.get(name)]
    if missing:
        raise LaunchError(
            f"WORLD_SIZE={world_size} but no {', '.join(missing)}: start several processes with torchrun "
            f"(torchrun --nproc_per_node {world_size} -m training ...), or unset WORLD_SIZE for one"
        )


def check_gpu_for(info: DistInfo) -> None:
    """Each process on a machine trains on the GPU of its LOCAL_RANK: torchrun starting more than there are would
    otherwise fail in CUDA's "invalid device ordinal" (or share one, where NCCL refuses or hangs)."""
    count = torch.cuda.device_count()
    if info.local_rank >= count:
        raise LaunchError(
            f"process {info.local_rank} of this machine (LOCAL_RANK) has no GPU: {count} visible, so start at "
            f"most --nproc_per_node {count}, or train on the CPU (--set device=cpu)"
        )


def leave_at_exit() -> None:
    """Destroy a process group still held when the interpreter exits: the trainer's wrapper, unreachable once the
    command has returned, is collected first, as it holds the group."""
    if dist.is_initialized():
        gc.collect()
        _forget_one_off_work_group()
        dist.destroy_process_group()


@contextmanager
def terminated_outright() -> Iterator[None]:
    """SIGTERM's default action (the process ends) for the body. A Python handler (the commands turn SIGTERM into
    an interrupt, to save and clean up) cannot run while the group's setup waits in C++ for the other ranks; when
    one of them refuses to start, torchrun's SIGTERM then waits out its grace period and is followed by SIGKILL.
    Before the group exists there is nothing to save."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# What the backends' errors say when a peer has gone, where they are not DistErrors: gloo names its own source file.
BACKEND_ERROR = re.compile(r"gloo|NCCL|[Cc]onnection (closed|reset) by peer")


@contextmanager
def peers_watched(info: DistInfo, peer_errors_only: bool = False) -> Iterator[None]:
    """A collective whose peer has gone raises the backend's RuntimeError (gloo: "Connection closed by peer"),
    whose traceback, printed by every rank left, would bury the one line of the rank that failed: said as
    PeerLost. A peer killed (SIGKILL: the out-of-memory killer) or stopped alone by a signal says nothing of
    its own, so the line also names where its end is told: torchrun's report of its exit.
    Around collectives alone, any RuntimeError is the backend's; around more (a training step, whose backward
    pass exchanges gradients), ``peer_errors_only`` keeps the others (a CUDA out-of-memory) as they are."""
    if not info.enabled:  # one process: no peer to lose
        yield
        return
    try:
        yield
    except RuntimeError as exc:
        # DistError: the backend's (DistBackendError), or its store's and network's, which say "Failed to recv"
        from_backend = isinstance(exc, dist.DistError) or BACKEND_ERROR.search(str(exc)) is not None
        if peer_errors_only and not from_backend:
            raise
        raise PeerLost(
            f"rank {info.rank} of {info.world_size}: another process of this run stopped or stopped answering "
            f"({backend_reason(exc)}); its own error says why, or, where it printed none (killed, or stopped by "
            "a signal of its own), torchrun's report of its exit code"
        ) from exc


def backend_reason(exc: BaseException) -> str:
    """The backend's message in short: without its source location, its first sentence."""
    lines = str(exc).strip().splitlines()
    first = re.sub(r"^\[[^\]]*\]\s*", "", lines[0]) if lines else ""
    return first.split(". ")[0] or type(exc).__name__


def barrier(info: DistInfo) -> None:
    if info.enabled:
        with peers_watched(info):
            dist.barrier()


def wait_out_one_off_work(info: DistInfo) -> None:
    """A barrier where some ranks do one-off work before the first step while the others wait for them (the
    teacher's logits): bounded by ``ONE_OFF_WORK_TIMEOUT``, not by the group's timeout, which that work may outlast
    on a large dataset. A peer that stops meanwhile is PeerLost, as in any collective."""
    if not info.enabled:
        return
    assert _one_off_work_group is not None, "prepare_one_off_waits makes the group of the one-off waits"
    with peers_watched(info):
        dist.barrier(group=_one_off_work_group)


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Share rank 0's decision (e.g. early stop) so every rank leaves the loop together."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=collective_device())
    with peers_watched(info):
        dist.broadcast(t, 0)
    return bool(t.item())


def summed(values: list[float], info: DistInfo) -> list[float]:
    """``values`` summed over every process of the run (themselves when it has one): an epoch's training figures,
    which each rank counts over its own share of the images."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    with peers_watched(info):
        dist.all_reduce(t)
    return t.tolist()


def collective_device() -> torch.device:
    """Where a tensor for a collective must be: NCCL moves CUDA tensors only."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def rng_state() -> dict:
    """This process's random state: the CPU generator's and its own CUDA device's (dropout draws from them)."""
    cuda = torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def gather_rng_states(info: DistInfo) -> list[dict]:
    """Every rank's random state, in rank order, on every rank. Each rank draws its own dropout masks, so a
    resumed run is only the uninterrupted one if each rank gets its own state back, not rank 0's."""
    mine = rng_state()
    if not info.enabled:
        return [mine]
    states: list = [None] * info.world_size
    with peers_watched(info):
        dist.all_gather_object(states, mine)
    return states


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        _forget_one_off_work_group()
        dist.destroy_process_group()


def _forget_one_off_work_group() -> None:
    """Destroying the default group destroys the others too: a group set up again makes its own."""
    global _one_off_work_group
    _one_off_work_group = None
