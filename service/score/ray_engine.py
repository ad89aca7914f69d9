"""The Ray engine (``--engine ray``): reading, decoding and inference as Ray Data stages, on a local Ray instance
or a cluster.

The walk, resume, the output and the summary stay in this process (run.py), as with the other engines. Each
window of the walk's pending files becomes one dataset: its files' bytes are read and decoded with the
project's decoder by tasks (two stages, which Ray runs fused in one task per block), a pool of actors, each
holding one ONNX Runtime session (on CUDA when the actor holds a GPU), infers, and the rows come back here to
be written, in the walk's order. A file that cannot be read or decoded is an error row with the local engine's
wording (decode.failure_message); an exception no file explains fails the job, as it stops the local engine.

Every use of Ray is in this module, and Ray is imported only when the engine is opened: ``service`` runs
without it. Nodes read the files themselves: on a cluster, DIR must be at the same absolute path on every
node (a shared file system). The model travels with the job (the actors get its bytes) and so does this
project's code (``py_modules``); the nodes need Ray and the project's base dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import socket
import sys
import tempfile
import threading
import time
from typing import Generator, Iterator

from inference.devices import Device
from inference.interrupts import stops_dropped
from inference.preprocess import DEFAULT_MAX_PIXELS, decode_pixels, pixels_to_model_input
from inference.runtime import default_threads, read_card

from .decode import FILE_ERRORS, decoder_failure, failure_message, read_file
from .errors import DecoderFailure, RemoteError, UserError
from .local import DEFAULT_BATCH_SIZE, DEFAULT_GPU_BATCH_SIZE
from .sinks import ENCODING, Prediction, Row
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
# Ray's own commands read the cluster's address from this variable (`ray job submit` sets it for its entrypoint).
ADDRESS_VARIABLE = "RAY_ADDRESS"
# How long the cluster's address may take to accept a connection. ray.init itself retries an address where
# nothing answers for about ten minutes, printing a warning every half minute.
CONNECT_TIMEOUT_S = 5.0
AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra: ray[data] brings pyarrow with it)
    except ImportError:
        raise UserError(MISSING) from None
    return ray


def _text(value: bytes) -> str:
    return value.decode(**ENCODING)


def _raw(text: str | None) -> bytes | None:
    """Paths and messages travel as bytes: a file name that is not UTF-8 (surrogate-escaped) is no Arrow string."""
    return None if text is None else text.encode(**ENCODING)


# ------------------------------------------------------------------------------------------------ the stages
# Each stage takes and returns an Arrow table with the columns ``rel`` and ``error`` (binary; error null for a
# file still going), and adds what it made. They run in Ray's worker processes, which import this module.


def read_files(batch, root: bytes):
    """Stage 1: the bytes of each file (``data``, null where reading failed or the walk had found an error)."""
    import pyarrow as pa

    data, errors = [], []
    for rel, error in zip(batch.column("rel").to_pylist(), batch.column("error").to_pylist()):
        content = None
        if error is None:
            try:
                content = read_file(os.path.join(root, rel))
            except OSError as exc:
                error = _raw(failure_message(exc))
        data.append(content)
        errors.append(error)
    return pa.table(
        {
            "rel": batch.column("rel"),
            "error": pa.array(errors, pa.binary()),
            "data": pa.array(data, pa.large_binary()),  # a block may hold more than 2 GiB of files
        }
    )


def decode_files(batch, size: tuple[int, int], fit: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Stage 2: the project's decoder, ``data`` -> ``pixels`` (H x W x 3 uint8 bytes, null where it failed)."""
    import pyarrow as pa

    pixels, errors = [], []
    columns = (batch.column(name).to_pylist() for name in ("rel", "data", "error"))
    for rel, data, error in zip(*columns):
        decoded = None
        if error is None:
            try:
                decoded = decode_pixels(data, size, max_pixels, fit=fit)
            except FILE_ERRORS as exc:
                error = _raw(failure_message(exc))
            except Exception as exc:  # the task fails, and with it the job: RemoteError, as decode_chunk stops
                raise decoder_failure(_text(rel), exc) from exc
        pixels.append(decoded)
        errors.append(error)
    return pa.table(
        {"rel": batch.column("rel"), "error": pa.array(errors, pa.binary()), "pixels": pa.array(pixels, pa.binary())}
    )


# How a stage's DecoderFailure ends the remote traceback Ray Data puts in its UserCodeException's text, which is
# all that reaches this process of it.
_DECODER_FAILURE_LINE = re.compile(rf"^\S*\b{DecoderFailure.__name__}: (.+)$", re.MULTILINE)


def _decoder_failure(exc: BaseException) -> DecoderFailure | None:
    """The ``DecoderFailure`` a stage raised, from the exceptions Ray wraps it in (whose text is a remote
    traceback, over a thousand characters): its one line, as the local engine says it."""
    found, seen = None, set()
    step: BaseException | None = exc
    while step is not None and id(step) not in seen:
        seen.add(id(step))
        if isinstance(step, DecoderFailure) and step.args and isinstance(step.args[0], str):
            found = step.args[0]
        elif (line := _DECODER_FAILURE_LINE.search(str(step))) is not None:
            found = found or line[1]
        cause = getattr(step, "cause", None)  # a RayTaskError's: the stage's own exception
        step = cause if isinstance(cause, BaseException) else step.__cause__ or step.__context__
    return None if found is None else DecoderFailure(found)


# Ray's text of a remote failure: the stage's traceback (its own chain included), then Ray's wrappers' own, each
# joined to the one before by Python's chaining line; colour codes around the task's name.
_CHAINED = re.compile(
    r"\n\n(?:The above exception was the direct cause of the following exception"
    r"|During handling of the above exception, another exception occurred):\n\n"
)
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'^\s+File "(?P<file>[^"]*)", line \d+, in (?P<function>\S+)', re.MULTILINE)
_TASK = re.compile(r"^ray::(?P<task>\S+?)(?:\(\))? ", re.MULTILINE)
# This module's functions in a stage's traceback, and the stage each runs.
_STAGE_FUNCTIONS = {
    "read_files": "read_files",
    "decode_files": "decode_files",
    "__init__": "Classify",
    "__call__": "Classify",
}


def job_failure(exc: BaseException) -> str:
    """One line for a failed Ray job: the stage that failed and its exception (Ray's text of it is a remote
    traceback of a thousand characters or more, on many lines)."""
    text = _COLOUR.sub("", str(exc)).strip()
    # the last exception raised in the stage itself, before Ray's wrappers (ray.exceptions.UserCodeException)
    raised = [line for line in map(_raised, _CHAINED.split(text)) if line and not line.startswith("ray.")]
    said = raised[-1] if raised else f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    stage = _stage(text)
    return f"the Ray job failed{f' in stage {stage}' if stage else ''}: {said[:300]}"


def _raised(block: str) -> str:
    """The exception line of one traceback in Ray's text: the first line after its frames (after its first line,
    Ray's name of the task, where it has none) that no space starts; '' where there is none."""
    lines = block.splitlines()
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    if not frames and not (lines and lines[0].startswith("ray::")):
        return ""
    after = frames[-1] + 1 if frames else 1
    return next((line for line in lines[after:] if line and not line[0].isspace()), "")


def _stage(text: str) -> str | None:
    """The stage the traceback ran in: the last of this module's stage functions among its frames, else Ray's name
    of the task (a fused one names every stage it runs); None for a failure that names no task (an actor lost)."""
    ours = [
        _STAGE_FUNCTIONS[found["function"]]
        for found in _FRAME.finditer(text)
        if os.path.basename(found["file"]) == os.path.basename(__file__) and found["function"] in _STAGE_FUNCTIONS
    ]
    if ours:
        return ours[-1]
    task = _TASK.search(text)
    return task["task"][:200] if task else None


class Classify:
    """Stage 3, in each actor of the pool: one ONNX Runtime session; ``pixels`` -> top-k ``index`` and
    ``confidence`` (empty lists on error rows)."""

    def __init__(self, model: tuple, size: tuple[int, int], k: int, threads: int, device: Device) -> None:
        import ray

        from inference.runtime import OnnxClassifier, SessionSettings

        # The model's bytes come through the object store (``model`` holds their reference), so that no node
        # needs the models folder; the session reads its file once.
        with tempfile.TemporaryDirectory(prefix="score-model-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            with open(path, "wb") as f:
                f.write(ray.get(model[0]))
            self.clf = OnnxClassifier(path, device=device, settings=SessionSettings(threads=threads, spin=False))
        self.size = size
        self.k = k

    def __call__(self, batch):
        import pyarrow as pa

        from inference.runtime import top_k

        errors = batch.column("error").to_pylist()
        pixels = batch.column("pixels").to_pylist()
        ok = [i for i, error in enumerate(errors) if error is None]
        index: list[list[int]] = [[] for _ in errors]
        confidence: list[list[float]] = [[] for _ in errors]
        if ok:
            model_input = pixels_to_model_input(b"".join(pixels[i] for i in ok), len(ok), self.size)
            idx, conf = top_k(self.clf.probabilities(model_input), self.k)
            for i, cs, ps in zip(ok, idx.tolist(), conf.tolist()):
                index[i], confidence[i] = cs, ps
        return pa.table(
            {
                "rel": batch.column("rel"),
                "error": batch.column("error"),
                "index": pa.array(index, pa.list_(pa.int32())),
                "confidence": pa.array(confidence, pa.list_(pa.float64())),
            }
        )


# ------------------------------------------------------------------------------------------------ the engine


def default_actors(cpus: float, gpus: float, gpus_per_actor: float | None, cpus_per_actor: int) -> int:
    """One actor per GPU share; on CPUs, one per ``cpus_per_actor`` of the cluster's CPUs (Ray runs the read and
    decode stages inside CPU actors: see ``check_resources``)."""
    if gpus_per_actor:
        return max(1, int(gpus / gpus_per_actor + 1e-9))
    return max(1, int(cpus) // cpus_per_actor)


def check_resources(actors: int, cpus_per_actor: int, gpus_per_actor: float | None, cpus: float, gpus: float) -> None:
    """UserError when the pool cannot run. Ray Data fuses the task stages (read, decode) into the actor stage
    when both ask for the same resources and nothing else of Ray (retry limits included), as the CPU actors
    and their stages do: each actor then reads, decodes and infers its batches, no pixels go through the
    object store, and the actors may hold every CPU. GPU actors ask for a GPU, so the stages stay tasks, which
    need a CPU beside the actors."""
    if gpus_per_actor:
        if not gpus:  # whatever --actors says (its default is 1 then)
            raise UserError(f"--gpus-per-actor {gpus_per_actor:g}: the Ray cluster has no GPU")
        if actors * gpus_per_actor > gpus + 1e-9:
            raise UserError(
                f"--actors {actors} x --gpus-per-actor {gpus_per_actor:g} need more than the {gpus:g} GPUs "
                "of the Ray cluster"
            )
        if actors * cpus_per_actor >= cpus:
            raise UserError(
                f"--actors {actors} x --threads {cpus_per_actor} take all {cpus:g} CPUs of the Ray cluster: none "
                "is left to read and decode the images (use fewer actors or threads)"
            )
    elif actors * cpus_per_actor > cpus:
        raise UserError(
            f"--actors {actors} x --threads {cpus_per_actor} need more than the {cpus:g} CPUs of the Ray cluster"
        )


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
            check_resources(self.actors, self.threads, gpus_per_actor, cpus, gpus)
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


def _kept(exc: BaseException) -> str:
    """Ray's whole text of a failure, written to a file of its own: where it is, for the one line that names it."""
    try:
        fd, path = tempfile.mkstemp(prefix="score-ray-failure-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(_COLOUR.sub("", str(exc)))
    except OSError:
        return ""
    return f" (Ray's traceback: {path})"


def _join_pipeline_threads(timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name == PIPELINE_THREAD and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))


def resolve_address(address: str | None) -> tuple[str | None, str]:
    """The cluster to join (None: start a local instance) and, for the summary line, where its address came
    from: ``--address``, else the RAY_ADDRESS variable, as Ray's own commands take it."""
    if address is not None and address != "auto":
        return address, ""
    from_variable = os.environ.get(ADDRESS_VARIABLE) or None
    if from_variable is not None:
        return from_variable, f" ({ADDRESS_VARIABLE})"
    return address, ""


def check_not_http(address: str | None, source: str) -> None:
    """UserError for an HTTP address, the dashboard's and Jobs API's (``ray job submit --address``), which a
    driver cannot join: Ray's own refusal spans three lines and blames RAY_ADDRESS even for --address."""
    if address is None or not address.lower().startswith(("http://", "https://")):
        return
    given, mend = (f"{ADDRESS_VARIABLE}={address}", "set it to") if source else (f"--address {address}", "give")
    raise UserError(
        f"{given} is an HTTP address (a Ray dashboard's or its Jobs API's), which a driver cannot join: {mend} the "
        "cluster's HEAD:6379, or ray://HEAD:10001 for Ray Client" + (", or unset it" if source else "")
    )


def _endpoint(address: str) -> tuple[str, int] | None:
    """The host and port an address names (HOST:PORT, ray://HOST:PORT); None for one Ray resolves itself."""
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        return None
    host, sep, port = (rest if sep else address).rstrip("/").rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """UserError, within ``timeout``, when nothing accepts a connection at the address; ray.init would retry
    for minutes."""
    endpoint = _endpoint(address)
    if endpoint is None:
        return
    host, port = endpoint
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except socket.gaierror:
        raise UserError(f"cannot reach Ray at {address}: unknown host {host!r}") from None
    except (TimeoutError, socket.timeout):
        raise UserError(f"cannot reach Ray at {address}: no answer from {host} within {timeout:g} s") from None
    except OSError as exc:
        reason = (
            "nothing listens there (is the cluster's head running?)"
            if isinstance(exc, ConnectionRefusedError)
            else (exc.strerror or str(exc))
        )
        raise UserError(f"cannot reach Ray at {address}: {reason}") from None


def _connect(ray, address: str | None) -> bool:
    """Start or join Ray; False when this process was connected already (a program embedding the scorer)."""
    if ray.is_initialized():
        return False
    if address is not None:
        if address.startswith("ray://"):
            _check_client(ray, address)
        check_reachable(address)
    _errors_to_stderr(ray)
    common = dict(logging_level=logging.ERROR, log_to_driver=False)
    try:
        if address is None:
            # "local": a new instance even where a cluster runs on this machine (that takes --address auto).
            ray.init(address="local", num_cpus=default_threads(), include_dashboard=False, **common)
        else:
            import inference
            import service

            # The cluster's workers get this checkout's code, whatever version the nodes have installed.
            ray.init(address=address, runtime_env={"py_modules": [inference, service]}, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ""
        # A ValueError is an address Ray cannot parse ("Invalid address format"), which no token would mend.
        if address not in (None, "auto") and AUTH_MODE_VARIABLE not in os.environ and not isinstance(exc, ValueError):
            # Ray sends a cluster's token only to a cluster it found itself (auto): its log lines above said
            # InvalidAuthToken, its exception does not.
            hint = f" (a cluster with token authentication also needs {AUTH_MODE_VARIABLE}=token)"
        raise UserError(f"cannot start or reach Ray at {address or 'a local instance'}: {exc}{hint}") from None
    except ray.exceptions.AuthenticationError as exc:  # RAY_AUTH_MODE=token without the cluster's token
        raise UserError(f"cannot start or reach Ray at {address or 'a local instance'}: {exc}") from None
    return True


def _check_client(ray, address: str) -> None:
    """UserError when Ray Client cannot run here: ray.init would fail inside Ray's own import of grpcio, which
    ray[data] alone does not install. Imported, not looked up: a grpcio that is there but does not import (built
    for another Python) fails Ray as a missing one does."""
    try:
        importlib.import_module("grpc")  # by name: mypy refuses an import of a package that may be absent
    except ImportError as exc:
        raise UserError(
            f"{address} is a Ray Client address, which needs Ray's client extra (import grpc: {exc}): "
            f"pip install -e '.[ray]' brings it, or pip install 'ray[client]=={ray.__version__}'"
        ) from None


def _errors_to_stderr(ray) -> None:
    """Ray's driver prints the errors its nodes publish (a task retried, a worker lost) to standard output,
    where the rows go without --out: they go to standard error instead. Ray's private API, pinned with the
    extra's version (tests/test_score_ray.py checks it is still there)."""
    worker = ray._private.worker
    if getattr(worker.print_to_stdstream, "to_stderr", False):
        return
    print_to_stdstream = worker.print_to_stdstream

    def to_stderr(data, ignore_prefix):
        print_to_stdstream({**data, "is_err": True}, ignore_prefix)

    to_stderr.to_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


def _set_up_ray_data(ray) -> None:
    """Rows in the walk's order, as the local engine writes them (the first failed files of the summary, and
    the rows --resume scores again to compare, depend on it). Ray Data's own progress bars and per-dataset log
    lines would interleave with the scorer's bar."""
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    for handler in logging.getLogger("ray.data").handlers:
        if getattr(handler, "stream", None) in (sys.stderr, sys.stdout):
            # A failed stage's ERROR lines too: the failure reaches this process as its exception, said in one line
            # (_score); Ray's log files keep them.
            handler.setLevel(logging.CRITICAL)


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
