"""The Ray engine (``--engine ray``): reading, decoding and inference as Ray Data stages, on a local Ray instance
or a cluster.

The walk, resume, the output and the summary stay in this process (loop.py and its kin), as with the other
engines. Each window of the walk's pending files becomes one dataset: its files' bytes are read and decoded with the
project's decoder by tasks (two stages, which Ray runs fused in one task per block), a pool of actors, each
holding one ONNX Runtime session (on CUDA when the actor holds a GPU), infers, and the rows come back here to
be written, in the walk's order. A file that cannot be read or decoded is an error row with the local engine's
wording (decode.failure_message); an exception no file explains fails the job, as it stops the local engine.

Every use of Ray is in this module and its ray_* siblings (ray_stages: the stages; ray_connect: starting or
joining Ray; ray_failures: a failed job in one line), and Ray is imported only when the engine is opened:
``service`` runs without it. Nodes read the files themselves: on a cluster, DIR must be at the same absolute
path on every node (a shared file system). The model travels with the job (the actors get its bytes) and so
does this project's code (``py_modules``); the nodes need Ray and the project's base dependencies.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Generator, Iterator

from inference.devices import Device
from inference.image_limits import DEFAULT_MAX_PIXELS
from inference.interrupts import stops_dropped
from inference.runtime import read_card

from .errors import RemoteError, UserError
from .local import DEFAULT_BATCH_SIZE, DEFAULT_GPU_BATCH_SIZE
from .ray_connect import _connect, _set_up_ray_data, check_not_http, resolve_address
from .ray_failures import _decoder_failure, _kept, job_failure
from .ray_stages import Classify, _raw, _text, decode_files, read_files
from .sinks import Prediction, Row
from .walk import Entry

MISSING = "--engine ray needs Ray Data, an optional extra: pip install -e '.[ray]'"
# Files per dataset. One dataset for a whole folder would hold every pending path in this process and in the
# object store at once; a window bounds both, at the cost of one actor pool start per window.
WINDOW_FILES = 1_000_000
CHUNKS_PER_BLOCK = 8  # chunks of the walk (--batch-size files each) per block: one read-and-decode task
# Ray Data pulls a dataset's batches in threads of its own, which end shortly after the iterator is closed. One
# still inside a Ray call when ray.shutdown() runs reaches Ray's shut-down core worker, which then ends the whole
# process with status 1: a Ctrl-C would answer 1 instead of 130 on a busy machine. Shutdown waits
# for them, this long.
PIPELINE_THREAD = "iter_threaded"
PIPELINE_GRACE_S = 10.0


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra: ray[data] brings pyarrow with it)
    except ImportError:
        raise UserError(MISSING) from None
    return ray


def default_actors(cpus: float, gpus: float, gpus_per_actor: float | None, cpus_per_actor: int) -> int:
    """One actor per GPU share; on CPUs, one per ``cpus_per_actor`` of the cluster's CPUs (Ray runs the read and
    decode stages inside CPU actors: see ``check_resources``)."""
    if gpus_per_actor:
        return max(1, int(gpus / gpus_per_actor + 1e-9))
    return max(1, int(cpus) // cpus_per_actor)


def check_resources(
    actors: int, cpus_per_actor: int, gpus_per_actor: float | None, cpus: float, gpus: float, chosen: bool = False
) -> None:
    """UserError when the pool cannot run. Ray Data fuses the task stages (read, decode) into the actor stage
    when both ask for the same resources and nothing else of Ray (retry limits included), as the CPU actors
    and their stages do: each actor then reads, decodes and infers its batches, no pixels go through the
    object store, and the actors may hold every CPU. GPU actors ask for a GPU, so the stages stay tasks, which
    need a CPU beside the actors. ``chosen``: the number of actors is the command's default, not an --actors
    the user gave, and is said so."""
    pool = f"--actors {actors}"
    if chosen:
        pool = "one actor (the default)" if actors == 1 else f"{actors} actors (the default)"
    if gpus_per_actor:
        if not gpus:  # whatever --actors says (its default is 1 then)
            raise UserError(f"--gpus-per-actor {gpus_per_actor:g}: the Ray cluster has no GPU")
        if actors * gpus_per_actor > gpus + 1e-9:
            raise UserError(
                f"{pool} x --gpus-per-actor {gpus_per_actor:g} need more than the {gpus:g} GPUs of the Ray cluster"
            )
        if actors * cpus_per_actor >= cpus:
            advice = "use fewer actors or threads"
            if actors == 1:  # none fewer: only --threads is the user's to change, and only where a CPU is left
                advice = "use fewer --threads" if cpus > 1 else "the Ray cluster needs more than 1 CPU"
            raise UserError(
                f"{pool} x --threads {cpus_per_actor} take all {cpus:g} CPUs of the Ray cluster: none "
                f"is left to read and decode the images ({advice})"
            )
    elif actors * cpus_per_actor > cpus:
        raise UserError(f"{pool} x --threads {cpus_per_actor} need more than the {cpus:g} CPUs of the Ray cluster")


class RayBackend:
    """A Ray instance started here (``address`` None) or a cluster; see the module's docstring."""

    def __init__(
        self,
        model_path: str,
        root: str,
        address: str | None = None,
        actors: int | None = None,
        gpus_per_actor: float | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        device: Device = "auto",
        fit: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if device == "cuda" and not gpus_per_actor:
            raise UserError("--device cuda with --engine ray needs --gpus-per-actor (the GPUs Ray gives each actor)")
        if device == "cpu" and gpus_per_actor:
            # An actor holding a GPU runs its session on CUDA: the two flags ask for opposite things.
            raise UserError(
                f"--device cpu with --gpus-per-actor {gpus_per_actor:g}: an actor given a GPU runs its model on "
                "CUDA (leave out --gpus-per-actor to score on CPU actors)"
            )
        self.ray = ray = _import_ray()
        card = read_card(model_path)
        self.name = card.name
        self.classes = list(card.classes)
        self.size = tuple(card.input.size)
        self.fit = fit or card.input.fit  # how each image is fitted to ``size``: the request's, or the model's
        self.max_pixels = max_pixels
        self.k = 5
        self.root = os.fsencode(os.path.abspath(root))
        self.threads = threads or 1
        self.gpus_per_actor = gpus_per_actor
        self.batch_size = batch_size or (DEFAULT_GPU_BATCH_SIZE if gpus_per_actor else DEFAULT_BATCH_SIZE)
        self._stream: Generator[list[Row], None, None] | None = None
        address, source = resolve_address(address)
        check_not_http(address, source)
        self._address = address
        self._owns_connection = _connect(ray, address)
        _set_up_ray_data(ray)
        try:
            with open(model_path, "rb") as f:
                # Stored once for every actor of every window's pool; inside a tuple, the reference reaches the
                # actors as it is and each fetches the bytes itself.
                self._model = (ray.put(f.read()),)
            resources = ray.cluster_resources()
            cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
            self.actors = actors or default_actors(cpus, gpus, gpus_per_actor, self.threads)
            check_resources(self.actors, self.threads, gpus_per_actor, cpus, gpus, chosen=actors is None)
            if not self._owns_connection:
                where = "the Ray instance this process is connected to"
            else:
                where = "a local Ray instance" if address is None else f"the Ray cluster at {address}{source}"
            print(
                f"ray: {where}, with {cpus:g} CPUs and {gpus:g} GPUs; {self.actors} model actors of {self.threads} "
                f"CPU(s)" + (f" and {gpus_per_actor:g} GPU" if gpus_per_actor else ""),
                file=sys.stderr,
            )
        except BaseException:
            self.close()
            raise

    def rows(self, chunks: Iterator[list[Entry]]) -> Iterator[list[Row]]:
        self._stream = self._rows(chunks)
        return self._stream

    def _rows(self, chunks: Iterator[list[Entry]]) -> Generator[list[Row], None, None]:
        window: list[list[Entry]] = []
        files = 0
        for chunk in chunks:
            window.append(chunk)
            files += len(chunk)
            if files >= WINDOW_FILES:
                yield from self._score(window)
                window, files = [], 0
        if window:
            yield from self._score(window)

    def _dataset(self, window: list[list[Entry]]):
        import pyarrow as pa

        ray = self.ray
        blocks = []
        per_block = max(1, min(CHUNKS_PER_BLOCK, len(window) // (2 * self.actors)))  # small folders: work for all
        for start in range(0, len(window), per_block):
            entries = [e for chunk in window[start : start + per_block] for e in chunk]
            blocks.append(
                pa.table(
                    {
                        "rel": pa.array([_raw(e.rel) for e in entries], pa.binary()),
                        "error": pa.array([_raw(e.error) for e in entries], pa.binary()),
                    }
                )
            )
        # The same CPUs as a CPU actor, so that Ray fuses the two stages into the actors (check_resources).
        task_cpus = self.threads if not self.gpus_per_actor else 1
        return (
            ray.data.from_arrow(blocks)
            .map_batches(
                read_files, fn_kwargs={"root": self.root}, batch_format="pyarrow", batch_size=None, num_cpus=task_cpus
            )
            .map_batches(
                decode_files,
                fn_kwargs={"size": self.size, "fit": self.fit, "max_pixels": self.max_pixels},
                batch_format="pyarrow",
                batch_size=None,
                num_cpus=task_cpus,
            )
            .map_batches(
                Classify,
                fn_constructor_kwargs={
                    "model": self._model,
                    "size": self.size,
                    "k": self.k,
                    "threads": self.threads,
                    "device": "cuda" if self.gpus_per_actor else "cpu",
                },
                compute=ray.data.ActorPoolStrategy(size=self.actors),
                batch_format="pyarrow",
                batch_size=self.batch_size,
                num_cpus=self.threads,
                num_gpus=self.gpus_per_actor,
            )
        )

    def _score(self, window: list[list[Entry]]) -> Iterator[list[Row]]:
        batches = iter(self._dataset(window).iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            for table in batches:
                yield self._table_rows(table)
        except self.ray.exceptions.RayError as exc:
            if (failure := _decoder_failure(exc)) is not None:
                raise failure from None
            raise RemoteError(f"{job_failure(exc)}{_kept(exc)}") from None
        finally:
            batches.close()  # stops the dataset's executor when the run ends early

    def _table_rows(self, table) -> list[Row]:
        classes = self.classes
        rows = []
        for rel, error, index, confidence in zip(
            table.column("rel").to_pylist(),
            table.column("error").to_pylist(),
            table.column("index").to_pylist(),
            table.column("confidence").to_pylist(),
        ):
            if error is not None:
                rows.append(Row(_text(rel), error=_text(error)))
            else:
                rows.append(Row(_text(rel), [Prediction(classes[c], c, p) for c, p in zip(index, confidence)]))
        return rows

    def close(self) -> None:
        # The run is ending already: a second Ctrl-C (or a SIGTERM) now would stop Ray's shutdown halfway, which
        # would leave Ray's dashboard and runtime-env agents running and end the command with status 1, not 130.
        with stops_dropped():
            if self._stream is not None:
                self._stream.close()  # the dataset's executor stops before Ray does
                self._stream = None
            if self._owns_connection:
                self._owns_connection = False
                _join_pipeline_threads(PIPELINE_GRACE_S)
                if self._address is None:
                    self.ray.shutdown()  # the instance is this process's own: its Ray processes stop with it
                # A cluster's connection is left to the process's end (service/process_end.py), which the cluster
                # sees as the job's end. Shutting it down here would race Ray's threads as above, even with none
                # left.


def _join_pipeline_threads(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == PIPELINE_THREAD and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def open_ray(args: argparse.Namespace, model_path: str) -> RayBackend:
    return RayBackend(
        model_path,
        args.dir,
        address=args.address,
        actors=args.actors,
        gpus_per_actor=args.gpus_per_actor,
        threads=args.threads,
        batch_size=args.batch_size,
        device=args.device,
        fit=args.fit,
        max_pixels=args.max_pixels,
    )
