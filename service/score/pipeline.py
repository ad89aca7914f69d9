"""What an engine is to the run loop (``Backend``), and chunks of the walk through a ``ChunkBackend``'s streams,
rows out in the walk's order."""

from __future__ import annotations

import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Protocol

from inference.interrupts import stops_dropped

from .sinks import Row
from .walk import Entry


class Backend(Protocol):
    """What the run loop needs of an engine (local.LocalBackend, remote.RemoteBackend, ray_engine.RayBackend):
    chunks of the walk in, rows out. The run loop owns the walk, the output, resume and the summary."""

    batch_size: int  # images per chunk of the walk
    k: int

    # Read-only to the run loop, so an engine that always knows them (``name: str``) is one too.
    @property
    def name(self) -> str | None: ...

    @property
    def classes(self) -> list[str] | None:  # None: the remote service did not say
        ...

    def rows(self, chunks: Iterator[list[Entry]]) -> Iterator[list[Row]]:
        """The rows of every chunk, one list per chunk (or per batch: ``ray_engine`` regroups them)."""
        ...

    def close(self) -> None: ...


class ChunkBackend(Backend, Protocol):
    """An engine that ``pipeline`` drives chunk by chunk (local.LocalBackend, remote.RemoteBackend)."""

    inflight: int  # chunks submitted ahead of the oldest one not yet taken

    def submit(self, chunk: list[Entry]) -> Any: ...

    def finish(self, chunk: list[Entry], handle: Any) -> list[Row]: ...


def chunks(entries: Iterator[Entry], size: int, done: set[str]) -> Iterator[list[Entry]]:
    """The walk's entries in chunks of ``size``, less those ``done`` names (the rows a resumed output holds).
    Each of those leaves ``done`` as the walk passes it, so that once the walk has ended ``done`` holds the rows
    whose files are no longer there (the summary tells of them), without a second set as large."""
    chunk: list[Entry] = []
    for entry in entries:
        if entry.rel in done:
            done.discard(entry.rel)
            continue
        chunk.append(entry)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pipeline(chunks: Iterator[list[Entry]], backend: ChunkBackend) -> Iterator[list[Row]]:
    """Rows per chunk, in order, with up to ``backend.inflight`` chunks being prepared ahead and up to
    ``backend.streams`` of them being finished (inferred) at once, each on its own thread.

    Every chunk is queued for finishing as soon as it is submitted, so a stream that is done takes the next
    one at once rather than waiting, idle, until the oldest chunk is done."""
    streams = getattr(backend, "streams", 1)
    pool = ThreadPoolExecutor(streams, thread_name_prefix="score-infer") if streams > 1 else None
    pending: deque = deque()  # (chunk, handle, future of finish or None), oldest first

    def take_oldest() -> list[Row]:
        chunk, handle, future = pending.popleft()
        return future.result() if future is not None else backend.finish(chunk, handle)

    ended = False
    try:
        for chunk in chunks:
            handle = backend.submit(chunk)
            pending.append((chunk, handle, pool.submit(backend.finish, chunk, handle) if pool else None))
            if len(pending) > backend.inflight:
                yield take_oldest()
        while pending:
            yield take_oldest()
        ended = True
    finally:
        if pool is not None:
            # Each stream ends the batch it holds. A second Ctrl-C that cut this wait short would leave a stream
            # inferring as the process exits, which ONNX Runtime ends with an abort (status -6, not 130).
            with contextlib.nullcontext() if ended else stops_dropped():
                pool.shutdown(wait=True, cancel_futures=True)
