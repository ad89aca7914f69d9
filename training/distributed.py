"""DistributedDataParallel setup from torchrun's environment (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


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


def setup(device_type: str) -> DistInfo:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        with terminated_outright():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


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


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Share rank 0's decision (e.g. early stop) so every rank leaves the loop together."""
    if not info.enabled:
        return flag
    t = torch.tensor([int(flag)], device=collective_device())
    dist.broadcast(t, 0)
    return bool(t.item())


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
    dist.all_gather_object(states, mine)
    return states


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
