"""The raw ONNX Runtime engine: the ceiling the service and the scorer are measured against.

Pre-decoded float32 batches straight into ``OnnxClassifier.logits``, in two shapes of the same cores:
one stream with every core as intra-op threads, and one stream per core with one thread each (the
service's and the scorer's default: concurrent runs on one session, which is thread-safe). The better
is the ceiling, so that a setting the product uses can never flatter its own ratio.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from inference.runtime import OnnxClassifier, SessionSettings, default_threads


@dataclass(frozen=True)
class EngineRate:
    streams: int
    threads: int
    batch_size: int
    images_per_s: float
    cpu_ms_per_image: float

    @property
    def label(self) -> str:
        return f"{self.streams} stream(s) x {self.threads} thread(s), batch {self.batch_size}"


def measure(
    path: str | Path, pixels: np.ndarray, batch_size: int, streams: int, threads: int, seconds: float = 3.0
) -> EngineRate:
    """``streams`` threads each running batches of ``batch_size`` back to back on one session for ``seconds``."""
    clf = OnnxClassifier(path, device="cpu", settings=SessionSettings(threads=threads, spin=streams == 1))
    batches = [pixels[i : i + batch_size] for i in range(0, len(pixels) - batch_size + 1, batch_size)] or [pixels]
    batch_size = len(batches[0])  # fewer images than a batch (a small --pool): the batch run is all of them
    for batch in batches[:2]:
        clf.logits(batch)
    counts = [0] * streams
    deadline = time.perf_counter() + seconds

    def stream(s: int) -> None:
        i = s
        while time.perf_counter() < deadline:
            batch = batches[i % len(batches)]
            clf.logits(batch)
            counts[s] += len(batch)
            i += streams

    start, cpu = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=stream, args=(s,)) for s in range(streams)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    images = max(1, sum(counts))
    return EngineRate(streams, threads, batch_size, images / elapsed, cpu * 1000 / images)


def shapes(cores: int | None = None) -> list[tuple[int, int]]:
    """(streams, threads) worth trying on this many cores."""
    cores = cores or default_threads()
    return sorted({(1, cores), (cores, 1)})


def ceiling(
    path: str | Path, pixels: np.ndarray, batch_sizes: Sequence[int], seconds: float = 3.0, cores: int | None = None
) -> list[EngineRate]:
    """Every (shape, batch size) measured; the best first."""
    rates = [
        measure(path, pixels, bs, streams, threads, seconds) for streams, threads in shapes(cores) for bs in batch_sizes
    ]
    return sorted(rates, key=lambda r: -r.images_per_s)
