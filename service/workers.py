"""How the service's worker processes share the GPUs and the CPU cores: one rule, no I/O, tested on a fake GPU list.

BentoML's documented way to spread workers over GPUs: the service asks for ``resources={"gpu": n}`` (BentoML
then makes n devices visible to its workers) and each worker picks its device from
``bentoml.server_context.worker_index``, which counts from 1.
"""

from __future__ import annotations

from dataclasses import dataclass


def worker_count(requested: int, gpus: int) -> int:
    """``requested`` when set (non-zero); otherwise one worker per visible GPU, or one on a CPU host (where one
    worker using every core measured as fast as two sharing them: docs/deploy.md)."""
    return requested or max(1, gpus)


@dataclass(frozen=True)
class WorkerPlacement:
    index: int  # BentoML's worker index, from 1
    workers: int
    device_id: int | None  # the CUDA device this worker runs its models on; None: the CPU
    cores: int  # the CPU cores this worker sizes its threads for, where --threads and the like do not set them

    def describe(self) -> str:
        """Where the worker runs and its share of the cores: the threads it sizes by that share may be set by
        hand (--streams, --threads, --decode-threads), so the share is said as such, beside the threads used."""
        where = f"GPU {self.device_id}" if self.device_id is not None else "the CPU"
        return f"worker {self.index} of {self.workers} on {where} with {self.cores} core(s)"


def place_worker(worker_index: int | None, workers: int, gpus: int, cores: int) -> WorkerPlacement:
    """Worker ``worker_index`` (from 1; None outside a BentoML worker, taken as 1) of ``workers``: GPUs are dealt
    round-robin (more workers than GPUs share them evenly), cores are split evenly, the first workers taking
    one more each where they do not divide."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    index = worker_index or 1
    if not 1 <= index <= workers:
        raise ValueError(f"worker index {index} is outside 1..{workers}")
    position = index - 1
    share, extra = divmod(max(1, cores), workers)
    return WorkerPlacement(
        index=index,
        workers=workers,
        device_id=position % gpus if gpus else None,
        cores=max(1, share + (1 if position < extra else 0)),
    )
