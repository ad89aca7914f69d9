"""The local engine: ONNX Runtime in this process, decoding in a pool of worker processes.

Workers write each decoded chunk into a slot of one shared-memory block; inference reads it in place.
A worker that dies (a decoder crash, or killed for memory) costs no rows: its chunks are decoded again
in a fresh pool, then file by file.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Iterator, TypeVar

from inference.devices import Device
from inference.errors import UsageError
from inference.image_limits import DEFAULT_MAX_PIXELS
from inference.interrupts import stops_dropped

from ..settings import default_streams, threads_per_stream
from .decode import Decoded, decode_chunk, decode_into, image_bytes, rows_view, worker_init
from .errors import UserError
from .pipeline import pipeline
from .sinks import Prediction, Row, whole
from .walk import Entry

if TYPE_CHECKING:
    from multiprocessing.shared_memory import SharedMemory

T = TypeVar("T")
# A chunk in the workers' hands: (the pool's generation, its slot of the shared memory, the workers' reply)
_Handle = tuple[int, int, Future[tuple[list[int], dict[int, str]]]]

# Images per inference call. On CPU the engine is as fast or faster at 128 than at 256 (smaller activations
# stay in cache), and smaller chunks shorten the start and the end of a run, where a stream waits for work
# (docs/measurements.md, "Batch scorer"). On a GPU larger batches (not measured: no GPU here).
DEFAULT_BATCH_SIZE = 128
DEFAULT_GPU_BATCH_SIZE = 256
# CPU inference: decode workers run at a lower priority, filling the gaps ONNX Runtime leaves instead of
# preempting its threads (docs/measurements.md, "Batch scorer").
WORKER_NICE = 10
SHM_BUDGET_BYTES = 48 << 20  # decoded chunks in flight (3 MiB per 256 CIFAR images)


def default_workers(cores: int, on_gpu: bool) -> int:
    """Decode processes. On CPU they run niced (WORKER_NICE) and so take only what inference leaves:
    one per core, ahead of one worker and of decoding between inference calls (docs/measurements.md,
    "Batch scorer"). With a GPU decoding is the bottleneck: every core but the one feeding the GPU, at
    normal priority."""
    if on_gpu:
        return max(1, cores - 1)
    return max(1, min(cores, 8))


def _opened(part: T | None) -> T:
    """The decode pool or the shared memory of a backend whose workers decode: it has both until ``close``."""
    if part is None:
        raise RuntimeError("the scoring engine is closed")
    return part


def _shm_free() -> int:
    try:
        st = os.statvfs("/dev/shm")
        return st.f_bavail * st.f_frsize
    except OSError:  # no /dev/shm (not Linux): the platform's own shared memory
        return SHM_BUDGET_BYTES


def _kill_what_a_broken_pool_left(pool: ProcessPoolExecutor) -> None:
    """Kill the workers a broken pool still has, so that shutting it down cannot wait forever.

    When a worker dies, the pool's manager thread sends SIGTERM to the workers it knows of, one stop message
    each, and then joins every worker; ``shutdown(wait=True)`` joins that thread. A worker that gets neither
    (one that a ``submit`` started while the manager thread was at it, as the pool starts workers on demand)
    holds both forever, and with them the stream replacing the pool, while the others wait for its lock.
    SIGKILL cannot be ignored or held off.
    Nothing starts a worker meanwhile: submits and replacements hold ``_pool_lock``, as callers of this do.
    The pool's workers and broken state are private to ProcessPoolExecutor (CPython 3.14 adds
    ``kill_workers``); this is the one place that reads them.
    """
    if not getattr(pool, "_broken", False):
        return
    for process in tuple((getattr(pool, "_processes", None) or {}).values()):
        try:
            process.kill()
        except (OSError, ValueError):  # gone already, or closed by the pool
            pass


class LocalBackend:
    """ONNX Runtime in this process; decoding in ``workers`` processes (0: in this process).

    Workers write each decoded chunk into a slot of one shared-memory block and reply with the
    positions that decoded (and an error per file that did not); inference reads the slot in place.
    """

    def __init__(
        self,
        path,
        device: Device,
        threads: int | None,
        workers: int | None,
        batch_size: int | None = None,
        streams: int | None = None,
        fit: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        from inference.runtime import CudaPlacementError, OnnxClassifier, SessionSettings, default_threads, wants_cuda

        cores = default_threads()
        on_gpu = wants_cuda(device)
        self.streams = default_streams(cores, on_gpu) if streams is None else streams
        self._pool_lock = threading.Lock()  # the decode pool is replaced from whichever stream finds it broken
        self.pool: ProcessPoolExecutor | None = None  # None: decoding in this process, or closed
        self.shm: SharedMemory | None = None  # there whenever the pool is
        self._generation = 0
        self._alive = None
        try:
            self._decoding(cores, on_gpu, workers)
            if self.workers:
                self._new_pool(before_inference=True)
            # Threads that sleep between batches leave the cores to the decode workers (docs/measurements.md,
            # "Batch scorer").
            try:
                session = SessionSettings(threads=threads or threads_per_stream(cores, self.streams), spin=False)
                self.clf = OnnxClassifier(path, device=device, settings=session)
            except (CudaPlacementError, UsageError) as exc:  # --device cuda and the model cannot run wholly on CUDA;
                # a file ONNX Runtime cannot load, or one without a card this version reads
                raise UserError(str(exc)) from None
            if on_gpu and not self.clf.on_gpu:  # --device auto: CUDA asked for, the model runs on the CPU
                on_gpu = False
                self._decoding(cores, on_gpu, workers)
                self._close_pool()
            self.k = 5
            self.card = self.clf.card
            self.name = self.card.name
            self.classes = list(self.card.classes)
            self.size = self.card.input.size
            self.fit = fit or self.card.input.fit  # how the workers fit each image to ``size``
            self.max_pixels = max_pixels
            if batch_size is None:
                batch_size = DEFAULT_GPU_BATCH_SIZE if on_gpu else DEFAULT_BATCH_SIZE
            self.batch_size = batch_size
            self.slot_bytes = batch_size * image_bytes(self.size)
            # One slot per chunk in flight, plus the one the pipeline holds before handing it on; within what
            # /dev/shm can hold (64 MiB in a default Docker container), since writing past it is a SIGBUS.
            slots = min(
                2 * self.workers + self.streams,
                max(3, SHM_BUDGET_BYTES // self.slot_bytes),
                _shm_free() // self.slot_bytes,
            )
            if self.workers and slots < 3:
                self._decode_here(f"not enough shared memory for batches of {batch_size}")
            if self.workers:
                from multiprocessing.shared_memory import SharedMemory

                try:
                    self.shm = SharedMemory(create=True, size=slots * self.slot_bytes)
                except OSError as exc:  # /dev/shm missing or read-only, a file-size limit
                    self._decode_here(f"no shared memory for the decode workers ({exc.strerror or exc})")
            self.inflight = max(2, slots - 1) if self.workers else 2 * self.streams
            if self.workers:
                self._free = list(range(slots))
                if self.pool is None:
                    self._new_pool()
        except BaseException:
            # Ctrl-C while the model loads included: the decode workers and their shared memory are closed now,
            # whole (a second Ctrl-C meanwhile is dropped), not left to the process's exit.
            with stops_dropped():
                self.close()
            raise

    def _decode_here(self, why: str) -> None:
        print(f"warning: {why}: decoding in this process", file=sys.stderr)
        self.workers = 0
        self._close_pool()

    def _decoding(self, cores: int, on_gpu: bool, workers: int | None) -> None:
        self.workers = default_workers(cores, on_gpu) if workers is None else workers
        self.worker_nice = 0 if on_gpu else WORKER_NICE

    def _new_pool(self, before_inference: bool = False) -> ProcessPoolExecutor:
        """Start the decode pool, replacing a broken one. Callers hold ``_pool_lock`` (or are ``__init__``).

        The first pool forks from this process while it is still single-threaded (before ONNX Runtime or
        any thread of ours has started) and has its workers started at once: they inherit the imported
        decoder, where a forkserver and its workers import it again (less CPU and ready sooner:
        docs/measurements.md, "Batch scorer"). A pool that replaces a broken one starts from a forkserver
        instead, since by then this process runs threads that a fork would copy mid-lock.
        """
        self._close_pool()
        if self._alive is None:
            # (read end for the workers, write end kept here until exit: the workers exit at its EOF)
            self._alive = multiprocessing.Pipe(duplex=False)
        if before_inference and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()  # shared with the workers, not one each that unlinks our memory
            for stream in (sys.stdout, sys.stderr):  # None where closed (>&-)
                if stream is not None:
                    stream.flush()  # a fork copies unwritten buffers, which each worker would write again at exit
            ctx: BaseContext = multiprocessing.get_context("fork")
        else:
            forkserver = multiprocessing.get_context("forkserver")
            forkserver.set_forkserver_preload(["service.score.decode"])
            ctx = forkserver
        pool = self.pool = ProcessPoolExecutor(
            self.workers,
            mp_context=ctx,
            initializer=worker_init,
            initargs=(self._alive[0], self.worker_nice, self._alive[1]),
        )
        self.start_method = ctx.get_start_method()
        if self.start_method == "fork":
            pool.submit(int).result()  # forks every worker now, before this process starts a thread
        self._generation += 1
        return pool

    def _close_pool(self) -> None:
        if self.pool is not None:
            _kill_what_a_broken_pool_left(self.pool)
            self.pool.shutdown(wait=True, cancel_futures=True)  # a broken pool's workers are gone after this
            self.pool = None

    @staticmethod
    def _paths(chunk: list[Entry]) -> list[str | None]:
        return [None if e.error else e.path for e in chunk]

    def rows(self, chunks: Iterator[list[Entry]]) -> Iterator[list[Row]]:
        return pipeline(chunks, self)

    def submit(self, chunk: list[Entry]) -> _Handle | None:
        """The chunk handed to the decode workers, or None where it is decoded in this process (in ``finish``)."""
        if self.pool is None or self.shm is None:
            return None
        slot = self._free.pop()
        task = (self.shm.name, slot * self.slot_bytes, self._paths(chunk), self.size, self.max_pixels)
        with self._pool_lock:  # not while a stream is replacing the pool
            try:
                future = self.pool.submit(decode_into, *task, fit=self.fit)
            except BrokenProcessPool:  # a worker died since the last chunk; the chunks it took are redone in finish
                future = self._new_pool().submit(decode_into, *task, fit=self.fit)
            return self._generation, slot, future

    def finish(self, chunk: list[Entry], handle: _Handle | None) -> list[Row]:
        paths = self._paths(chunk)
        if handle is None:
            return self._rows(chunk, decode_chunk(paths, self.size, self.max_pixels, fit=self.fit))
        generation, slot, future = handle
        try:
            shm = _opened(self.shm)
            try:
                ok, errors = future.result()
            except BrokenProcessPool:
                ok, errors = self._recover(shm, paths, slot * self.slot_bytes, generation)
            return self._rows(
                chunk, Decoded(rows_view(shm.buf, slot * self.slot_bytes, len(ok), self.size), ok, errors)
            )
        finally:
            self._free.append(slot)

    def _recover(
        self, shm: SharedMemory, paths: list[str | None], offset: int, generation: int
    ) -> tuple[list[int], dict[int, str]]:
        """A worker died (a decoder crash, or killed for memory): retry in a fresh pool, then file by file."""
        with self._pool_lock:  # one stream replaces the pool; the others and submit wait for it
            pool = self._new_pool() if generation == self._generation else _opened(self.pool)
            try:
                redone = pool.submit(decode_into, shm.name, offset, paths, self.size, self.max_pixels, fit=self.fit)
                return redone.result()
            except BrokenProcessPool:
                pool = self._new_pool()
            ok: list[int] = []
            errors: dict[int, str] = {}
            for i, path in enumerate(paths):
                if path is None:
                    continue
                row = offset + len(ok) * image_bytes(self.size)
                try:
                    one_ok, one_errors = pool.submit(
                        decode_into, shm.name, row, [path], self.size, self.max_pixels, fit=self.fit
                    ).result()
                except BrokenProcessPool:
                    pool = self._new_pool()
                    errors[i] = "the image decoder crashed on this file"
                    continue
                if one_ok:
                    ok.append(i)
                else:
                    errors[i] = one_errors[0]
            return ok, errors

    def _rows(self, chunk: list[Entry], decoded: Decoded) -> list[Row]:
        from inference.runtime import top_k

        rows: list[Row | None] = [None] * len(chunk)
        for i, e in enumerate(chunk):
            if e.error:
                rows[i] = Row(e.rel, error=e.error)
            elif i in decoded.errors:
                rows[i] = Row(e.rel, error=decoded.errors[i])
        if decoded.ok:
            probs = self.clf.probabilities(decoded.batch)
            idx, conf = top_k(probs, self.k)
            classes = self.classes
            for i, cs, ps in zip(decoded.ok, idx.tolist(), conf.tolist()):
                rows[i] = Row(chunk[i].rel, [Prediction(classes[c], c, p) for c, p in zip(cs, ps)])
        return whole(rows)

    def close(self) -> None:
        self._close_pool()
        if self._alive is not None:
            for end in self._alive:
                end.close()
            self._alive = None
        if self.shm is not None:
            try:
                self.shm.close()
            except BufferError:  # a view is still alive (an exception mid-chunk): the unlink below still frees it
                pass
            self.shm.unlink()
            self.shm = None
