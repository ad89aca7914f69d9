"""Batch scoring: ``python -m service score DIR [--out preds.csv|preds.jsonl] ...``.

Streams a folder of any size through a model: the walk is lazy (one
directory's names at a time), at most a few chunks are in flight, decoding
runs in worker processes while the main process runs ONNX Runtime, and each
chunk's rows are written as whole lines and flushed before the next, so an
interrupted run leaves a valid file that ``--resume`` continues.
With ``--url`` the images go to a running service instead of a local model.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Iterator


from .confidence import parse_min_confidence
from .settings import default_streams, threads_per_stream
from .sinks import (FORMATS, ENCODING, OutputError, Prediction, Row, confident, format_from_path, make_format,
                    resume_output)
from .walk import (Decoded, Entry, WalkStats, count_images, decode_chunk, decode_into, image_bytes, read_error,
                   read_file, rows_view, walk, worker_init)

# Images per inference call. CPU, 2 x 1-thread streams: the raw engine ran the INT8 model at 3,120-3,240 images/s
# with 64 or 128 and 2,940-3,100 with 256 (smaller activations stay in cache), FP32 at 1,010-1,070 with 128 and
# 980-1,065 with 256; and smaller chunks shorten the start and the end of a run, where a stream waits for work.
# GPU: larger batches (unmeasured here).
DEFAULT_BATCH_SIZE = 128
DEFAULT_GPU_BATCH_SIZE = 256
DEFAULT_URL_BATCH = 32  # images per request: the service takes at most 64 by default, and batches across requests
DEFAULT_URL_WORKERS = 4
# CPU inference: decode workers run at a lower priority, filling the gaps ONNX Runtime leaves instead of
# preempting its threads (measured on 2 cores, fp32: 1530-1680 images/s at equal priority, 1650-1770 niced).
WORKER_NICE = 10
SHM_BUDGET_BYTES = 48 << 20  # decoded chunks in flight (3 MiB per 256 CIFAR images)


class UserError(Exception):
    """A problem with the command line or its inputs: reported as ``error: ...``, exit code 2."""


class RemoteError(RuntimeError):
    """The service failed in a way retrying did not fix: the run stops (exit 1) and can be resumed."""


def default_workers(cores: int, on_gpu: bool) -> int:
    """Decode processes. On CPU they run niced (WORKER_NICE) and so take only what inference leaves:
    one per core, measured on 2 cores 1-5 points of the raw engine ahead of one worker and of decoding
    between inference calls (bench/bench_score.py). With a GPU decoding is the bottleneck: every core
    but the one feeding the GPU, at normal priority."""
    if on_gpu:
        return max(1, cores - 1)
    return max(1, min(cores, 8))


def add_score_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score", help="score every image under a folder; write CSV or JSON Lines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Walk DIR recursively (sorted, following directory links once each), classify every file with an "
            "image extension, and stream one row per file to --out: its path relative to DIR, the top-k labels "
            "and confidences, and an error message for files that could not be read (those never stop the run). "
            "Files without an image extension are skipped and counted. A progress bar and, at the end, a summary "
            "(scored, failed, skipped, time, images/s) go to stderr."),
        epilog=(
            "output formats (chosen by the --out extension, or --format):\n"
            "  csv    path,label_1,confidence_1,...,label_k,confidence_k,error\n"
            '  jsonl  {"path": ..., "top_k": [{"label", "index", "confidence"}, ...], "error": null}\n'
            "  with --min-confidence P: a confident column before error (true/false), or a \"confident\" key\n\n"
            "examples:\n"
            "  python -m service score photos/ --out preds.csv\n"
            "  python -m service score photos/ --out preds.jsonl --resume          # continue an interrupted run\n"
            "  python -m service score val/ --out val.csv --labels-from-folders   # class-per-folder: accuracy\n"
            "  python -m service score photos/ --url http://localhost:3000 --out preds.csv\n\n"
            "exit status: 0 done (even if some files failed), 1 with --fail-on-error and a failed file, or when\n"
            "the service stops answering, 2 usage errors, 130/143 interrupted by Ctrl-C/SIGTERM (the output\n"
            "stays valid for --resume)."))
    p.add_argument("dir", metavar="DIR", help="folder to score (searched recursively)")
    p.add_argument("--out", "-o", default="-", metavar="FILE",
                   help="output file, .csv or .jsonl (default: CSV on stdout)")
    p.add_argument("--format", choices=FORMATS, help="output format when --out has another extension or is stdout")
    p.add_argument("--model", help="model name from the manifest (default: the manifest's default model)")
    p.add_argument("--models-dir", default="models",
                   help="folder with manifest.json and the .onnx files (default: models)")
    p.add_argument("--k", type=int, default=5, help="how many labels per image, most likely first (default: 5; "
                   "capped at the number of classes)")
    p.add_argument("--min-confidence", type=_threshold, metavar="P", help=(
        "mark each image whose top-1 confidence is below P (0 to 1): a confident column (true/false) in the output, "
        "and a count in the summary; no image is left out (default: no threshold and no such column)"))
    p.add_argument("--batch-size", type=int, help=(
        f"images per inference call (default: {DEFAULT_BATCH_SIZE}, {DEFAULT_GPU_BATCH_SIZE} with a GPU); with --url, "
        f"images per request (default: "
        f"{DEFAULT_URL_BATCH}, halved when the service answers that a request held too many)"))
    p.add_argument("--workers", type=int, metavar="N", help=(
        "decode processes running beside inference; 0 decodes in the main process between inference calls "
        "(default: one per usable core, up to 8, at a lower priority than inference; with a GPU, all cores but one; "
        "with --url, concurrent requests, default "
        f"{DEFAULT_URL_WORKERS})"))
    p.add_argument("--streams", type=int, metavar="N", help=(
        "inference batches run at once, each on its own thread (default: one per usable core on CPU, 2 with a GPU)"))
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads per stream (default: the usable cores "
                   "divided among the streams)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model runs: auto picks CUDA when a GPU is visible (default: auto)")
    p.add_argument("--url", help="score through a running service (POST URL/classify) instead of a local model")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request with --url (default: 120)")
    p.add_argument("--resume", action="store_true", help=(
        "keep the rows already in --out and score only the files not in it (a trailing half-written line "
        "is dropped); error rows count as done: rerun without --resume to retry them"))
    p.add_argument("--labels-from-folders", action="store_true", help=(
        "DIR is class-per-folder: take each image's parent folder name as its true label and report accuracy, "
        "per-class accuracy and the most frequent confusions at the end"))
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 when any file could not be scored")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (it is off anyway when stderr is not a terminal)")
    p.set_defaults(fn=run)
    return p


def _threshold(text: str) -> float:
    try:
        return parse_min_confidence(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---------------------------------------------------------------------------------------------- backends


def _shm_free() -> int:
    try:
        st = os.statvfs("/dev/shm")
        return st.f_bavail * st.f_frsize
    except OSError:  # no /dev/shm (not Linux): the platform's own shared memory
        return SHM_BUDGET_BYTES


class LocalBackend:
    """ONNX Runtime in this process; decoding in ``workers`` processes (0: in this process).

    Workers write each decoded chunk into a slot of one shared-memory block and reply with the
    positions that decoded (and an error per file that did not); inference reads the slot in place.
    """

    def __init__(self, path, device: str, threads: int | None, workers: int | None, batch_size: int | None = None,
                 streams: int | None = None) -> None:
        from inference.runtime import OnnxClassifier, default_threads, wants_cuda

        cores = default_threads()
        on_gpu = wants_cuda(device)  # type: ignore[arg-type]
        self.streams = default_streams(cores, on_gpu) if streams is None else streams
        self._pool_lock = threading.Lock()  # the decode pool is replaced from whichever stream finds it broken
        self.pool: ProcessPoolExecutor | None = None
        self.shm = None
        self._generation = 0
        self._alive = None
        self._decoding(cores, on_gpu, workers)
        if self.workers:
            self._new_pool(before_inference=True)
        # Threads that sleep between batches leave the cores to the decode workers (spinning ones cost
        # 10-20% of throughput on 2 cores, bench/bench_score.py).
        self.clf = OnnxClassifier(path, device=device, threads=threads or threads_per_stream(cores, self.streams),
                                  spin=False)
        if on_gpu and not self.clf.on_gpu:  # CUDA asked for but not there
            on_gpu = False
            self._decoding(cores, on_gpu, workers)
            self._close_pool()
        self.k = 5
        self.card = self.clf.card
        self.name = self.card.name
        self.classes = list(self.card.classes)
        self.size = self.card.input.size
        if batch_size is None:
            batch_size = DEFAULT_GPU_BATCH_SIZE if on_gpu else DEFAULT_BATCH_SIZE
        self.batch_size = batch_size
        self.slot_bytes = batch_size * image_bytes(self.size)
        # One slot per chunk in flight, plus the one _pipeline holds before handing it on; within what
        # /dev/shm can hold (64 MiB in a default Docker container), since writing past it is a SIGBUS.
        slots = min(2 * self.workers + self.streams, max(3, SHM_BUDGET_BYTES // self.slot_bytes),
                    _shm_free() // self.slot_bytes)
        if self.workers and slots < 3:
            print(f"warning: not enough shared memory for batches of {batch_size}: decoding in this process",
                  file=sys.stderr)
            self.workers = 0
            self._close_pool()
        self.inflight = max(2, slots - 1) if self.workers else 2 * self.streams
        if self.workers:
            from multiprocessing.shared_memory import SharedMemory

            self.shm = SharedMemory(create=True, size=slots * self.slot_bytes)
            self._free = list(range(slots))
            if self.pool is None:
                self._new_pool()

    def _decoding(self, cores: int, on_gpu: bool, workers: int | None) -> None:
        self.workers = default_workers(cores, on_gpu) if workers is None else workers
        self.worker_nice = 0 if on_gpu else WORKER_NICE

    def _new_pool(self, before_inference: bool = False) -> None:
        """Start the decode pool, replacing a broken one. Callers hold ``_pool_lock`` (or are ``__init__``).

        The first pool forks from this process while it is still single-threaded (before ONNX Runtime or
        any thread of ours has started) and has its workers started at once: they inherit the imported
        decoder, where a forkserver and its workers import it again (measured on 2 cores: 0.26 s less CPU
        and ready 0.16 s sooner, about 3% of scoring 10,000 CIFAR JPEGs). A pool that replaces a broken
        one starts from a forkserver instead, since by then this process runs threads that a fork would copy
        mid-lock.
        """
        self._close_pool()
        if self._alive is None:
            # (read end for the workers, write end kept here until exit: the workers exit at its EOF)
            self._alive = multiprocessing.Pipe(duplex=False)
        if before_inference and threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods():
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()  # shared with the workers, not one each that unlinks our memory
            sys.stdout.flush()  # a fork copies unwritten buffers, which each worker would write again at exit
            sys.stderr.flush()
            ctx = multiprocessing.get_context("fork")
        else:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["service.walk"])
        self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=worker_init,
                                        initargs=(self._alive[0], self.worker_nice, self._alive[1]))
        self.start_method = ctx.get_start_method()
        if self.start_method == "fork":
            self.pool.submit(int).result()  # forks every worker now, before this process starts a thread
        self._generation += 1

    def _close_pool(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # a broken pool's workers are gone after this
            self.pool = None

    @staticmethod
    def _paths(chunk: list[Entry]) -> list[str | None]:
        return [None if e.error else e.path for e in chunk]

    def submit(self, chunk: list[Entry]):
        if self.pool is None:
            return None
        slot = self._free.pop()
        task = (decode_into, self.shm.name, slot * self.slot_bytes, self._paths(chunk), self.size)
        with self._pool_lock:  # not while a stream is replacing the pool
            try:
                future = self.pool.submit(*task)
            except BrokenProcessPool:  # a worker died since the last chunk; the chunks it took are redone in finish
                self._new_pool()
                future = self.pool.submit(*task)
            return self._generation, slot, future

    def finish(self, chunk: list[Entry], handle) -> list[Row]:
        paths = self._paths(chunk)
        if handle is None:
            return self._rows(chunk, decode_chunk(paths, self.size))
        generation, slot, future = handle
        try:
            try:
                ok, errors = future.result()
            except BrokenProcessPool:
                ok, errors = self._recover(paths, slot * self.slot_bytes, generation)
            return self._rows(chunk, Decoded(rows_view(self.shm.buf, slot * self.slot_bytes, len(ok), self.size),
                                             ok, errors))
        finally:
            self._free.append(slot)

    def _recover(self, paths: list[str | None], offset: int, generation: int) -> tuple[list[int], dict[int, str]]:
        """A worker died (a decoder crash, or killed for memory): retry in a fresh pool, then file by file."""
        with self._pool_lock:  # one stream replaces the pool; the others and submit wait for it
            if generation == self._generation:
                self._new_pool()
            try:
                return self.pool.submit(decode_into, self.shm.name, offset, paths, self.size).result()
            except BrokenProcessPool:
                self._new_pool()
            ok, errors = [], {}
            for i, path in enumerate(paths):
                if path is None:
                    continue
                row = offset + len(ok) * image_bytes(self.size)
                try:
                    one_ok, one_errors = self.pool.submit(decode_into, self.shm.name, row, [path], self.size).result()
                except BrokenProcessPool:
                    self._new_pool()
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
        return rows

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


class RemoteBackend:
    """A running service: ``workers`` threads each reading a chunk's files and POSTing them to ``URL/classify``."""

    RETRIES = 5  # for connection errors, 5xx (503: the service sheds load), 408 and 429; waits double from RETRY_DELAY
    RETRY_DELAY = 0.5
    # 4xx reasons about the request rather than one of its images: retrying image by image cannot help.
    REQUEST_ERRORS = frozenset({"bad_k", "unknown_model", "unsupported_media_type", "no_images"})
    # 4xx reasons meaning "fewer images per request": split the request in two.
    TOO_BIG = frozenset({"too_many_images", "body_too_large"})

    def __init__(self, url: str, model: str | None, workers: int | None, timeout: float, per_request: int) -> None:
        import httpx

        self.httpx = httpx
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        self.workers = max(1, DEFAULT_URL_WORKERS if workers is None else workers)
        self.inflight = self.workers
        self.per_request = per_request  # lowered when the service says a request held too many images
        self.batch_size = per_request  # images per chunk of the walk
        self.k = 5
        self.name, self.classes = self._model_info(model)
        self.model = model
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="score-post")

    def _model_info(self, model: str | None) -> tuple[str | None, list[str] | None]:
        """(model name, classes) from GET /models; (model, None) when the service does not list its models."""
        httpx = self.httpx
        try:
            ready = self.client.get("/readyz")
            if ready.status_code != 200:
                raise UserError(f"the service at {self.url} is not ready: GET /readyz answered {ready.status_code} "
                                f"{ready.text[:200]}")
            listing = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the service at {self.url}: {exc}") from None
        try:
            body = listing.json()
            models = {m["name"]: list(m["classes"]) for m in body["models"]}
            default = body["default"]
        except (ValueError, KeyError, TypeError):
            return model, None
        name = model or default
        if name not in models:
            raise UserError(f"unknown model {name!r}; the service at {self.url} has: {', '.join(models)}")
        return name, models[name]

    def submit(self, chunk: list[Entry]) -> Future:
        return self.pool.submit(self._score_chunk, chunk)

    def finish(self, chunk: list[Entry], handle: Future) -> list[Row]:
        return handle.result()

    def _score_chunk(self, chunk: list[Entry]) -> list[Row]:
        rows: list[Row | None] = [None] * len(chunk)
        items = []
        for i, e in enumerate(chunk):
            if e.error:
                rows[i] = Row(e.rel, error=e.error)
                continue
            try:
                items.append((i, read_file(e.path)))
            except OSError as exc:
                rows[i] = Row(e.rel, error=read_error(exc))
        while items:
            size = self.per_request
            self._send(chunk, items[:size], rows)
            items = items[size:]
        return rows

    def _send(self, chunk: list[Entry], items: list[tuple[int, bytes]], rows: list[Row | None]) -> None:
        result = self._post(chunk, items)
        if isinstance(result, list):
            for (i, _), row in zip(items, result):
                rows[i] = row
            return
        status, reason, message = result
        if reason in self.REQUEST_ERRORS:
            raise RemoteError(f"the service at {self.url} rejected the request ({status}): {message}")
        if len(items) == 1:
            rows[items[0][0]] = Row(chunk[items[0][0]].rel, error=message)
        elif reason in self.TOO_BIG or status == 413:
            half = (len(items) + 1) // 2
            self.per_request = min(self.per_request, half)
            self._send(chunk, items[:half], rows)
            self._send(chunk, items[half:], rows)
        else:
            # One unreadable image fails the whole request: resend one by one so only that file is an error row.
            for item in items:
                self._send(chunk, [item], rows)

    def _post(self, chunk: list[Entry], items: list[tuple[int, bytes]]) -> list[Row] | tuple[int, str, str]:
        """The rows, or (status, reason, message) when the service rejects the request (4xx)."""
        httpx = self.httpx
        files = [("images", (os.path.basename(chunk[i].rel), data, "application/octet-stream")) for i, data in items]
        form = {"k": str(self.k)}
        if self.model:
            form["model"] = self.model
        delay = self.RETRY_DELAY
        for attempt in range(self.RETRIES + 1):
            try:
                response = self.client.post("/classify", files=files, data=form)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return self._parse(chunk, items, response)
                reason, message = _error_message(response)
                if response.status_code < 500 and response.status_code not in (408, 429):
                    return response.status_code, reason, message
                problem = f"HTTP {response.status_code}: {message}"
            if attempt < self.RETRIES:
                time.sleep(delay)
                delay *= 2
        raise RemoteError(f"the service at {self.url} failed {self.RETRIES + 1} times: {problem}")

    def _parse(self, chunk, items, response) -> list[Row]:
        try:
            body = response.json()
            predictions = body["predictions"]
            if len(predictions) != len(items):
                raise ValueError(f"{len(predictions)} predictions for {len(items)} images")
            self.name = self.name or body.get("model")
            rows = []
            for (i, _), pred in zip(items, predictions):
                if pred.get("error"):
                    rows.append(Row(chunk[i].rel, error=str(pred["error"])))
                else:
                    rows.append(Row(chunk[i].rel, [Prediction(t["label"], int(t["index"]), float(t["confidence"]))
                                                   for t in pred["top_k"]]))
            return rows
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RemoteError(f"unexpected answer from {self.url}/classify ({type(exc).__name__}: {exc}): "
                              f"{response.text[:300]}") from None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()


def _error_message(response) -> tuple[str | None, str]:
    """(reason, message) of an error answer: the service's {"error": ..., "reason": ...}, or its text."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text.strip()[:500] or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        for key in ("error", "detail", "message"):
            if body.get(key):
                value = body[key]
                return reason, value if isinstance(value, str) else str(value)[:500]
    return None, str(body)[:500]


# ---------------------------------------------------------------------------------------------- accuracy


class FolderAccuracy:
    """Accuracy against the parent folder names, accumulated row by row (memory: classes squared)."""

    def __init__(self, classes: list[str] | None, root_name: str, model: str) -> None:
        self.classes = classes
        self.model = model
        self.root_name = root_name
        self.lookup = {c.casefold(): c for c in classes} if classes else None
        if classes:
            self.lookup.update({c: c for c in classes})
        self.images = Counter()
        self.top1 = Counter()
        self.topk = Counter()
        self.confusions = Counter()
        self.unknown = Counter()
        self.k = 0

    def label_of(self, path: str) -> str | None:
        parent = PurePosixPath(path).parent.name or self.root_name
        if self.lookup is None:
            return parent
        return self.lookup.get(parent) or self.lookup.get(parent.casefold())

    def add(self, row: Row) -> None:
        if row.error is not None or not row.top_k:
            return
        truth = self.label_of(row.path)
        if truth is None:
            self.unknown[PurePosixPath(row.path).parent.name or self.root_name] += 1
            return
        self.k = max(self.k, len(row.top_k))
        self.images[truth] += 1
        predicted = row.top_k[0].label
        if predicted == truth:
            self.top1[truth] += 1
        else:
            self.confusions[truth, predicted] += 1
        if any(p.label == truth for p in row.top_k):
            self.topk[truth] += 1

    def report(self, max_confusions: int = 10) -> str:
        lines = []
        n = sum(self.images.values())
        if n:
            top1, topk = sum(self.top1.values()), sum(self.topk.values())
            head = f"accuracy against folder names ({n} images): top-1 {100 * top1 / n:.2f}% ({top1}/{n})"
            if self.k > 1:
                head += f", top-{self.k} {100 * topk / n:.2f}%"
            lines.append(head)
            order = self.classes or sorted(self.images)
            width = max(len(c) for c in order if self.images[c]) if any(self.images[c] for c in order) else 5
            lines.append(f"  {'class':<{width}}  {'images':>7}  {'top-1':>7}")
            for c in order:
                if self.images[c]:
                    lines.append(f"  {c:<{width}}  {self.images[c]:>7}  {100 * self.top1[c] / self.images[c]:>6.2f}%")
            if self.confusions:
                lines.append("most frequent confusions (true -> predicted: images, share of the true class):")
                for (truth, pred), count in self.confusions.most_common(max_confusions):
                    lines.append(f"  {truth} -> {pred}: {count} ({100 * count / self.images[truth]:.1f}%)")
        else:
            lines.append("accuracy against folder names: no scored image is in a folder named after a class")
        if self.unknown:
            names = ", ".join(f"{name!r} ({count})" for name, count in sorted(self.unknown.items()))
            lines.append(f"folder names that are not classes of model {self.model!r} (their "
                         f"{sum(self.unknown.values())} images are left out of the accuracy): {names}")
            if self.classes:
                lines.append(f"  the classes are: {', '.join(self.classes)}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- run


@dataclass
class Summary:
    scored: int = 0
    unconfident: int = 0  # scored, with a top-1 confidence below --min-confidence
    failed: int = 0
    resumed: int = 0
    elapsed: float = 0.0
    walk: WalkStats = field(default_factory=WalkStats)
    failures: list[str] = field(default_factory=list)  # the first few, for the summary

    def text(self, out: str, interrupted: bool, min_confidence: float | None = None) -> str:
        done = self.scored + self.failed
        rate = done / self.elapsed if self.elapsed > 0 else 0.0
        scored = f"scored {self.scored}"
        if min_confidence is not None:
            scored += f" ({self.unconfident} below --min-confidence {min_confidence:g})"
        parts = [scored, f"failed {self.failed}", f"skipped {self.walk.skipped} (not images)"]
        if self.resumed:
            parts.append(f"{self.resumed} already in {out} (resumed)")
        lines = [("interrupted: " if interrupted else "") + ", ".join(parts)
                 + f"; {self.elapsed:.1f} s, {rate:.0f} images/s"]
        for rel in self.walk.linked_dirs_skipped[:5]:
            lines.append(f"not entered {rel}/: a link to a folder already scored (a symlink loop?)")
        if len(self.walk.linked_dirs_skipped) > 5:
            lines.append(f"... and {len(self.walk.linked_dirs_skipped) - 5} more such links")
        if self.failures:
            lines.append("failed files (first few): " + "; ".join(self.failures))
        if interrupted and out != "-":
            lines.append(f"the rows so far are in {out}: rerun with --resume to continue")
        return "\n".join(lines)


def _chunks(entries: Iterator[Entry], size: int, done: set[str]) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for entry in entries:
        if entry.rel in done:
            continue
        chunk.append(entry)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pipeline(chunks: Iterator[list[Entry]], backend) -> Iterator[list[Row]]:
    """Rows per chunk, in order, with up to ``backend.inflight`` chunks being prepared ahead and up to
    ``backend.streams`` of them being finished (inferred) at once, each on its own thread.

    Every chunk is queued for finishing as soon as it is submitted, so a stream that is done takes the next
    one at once; handing out only the oldest ``streams`` chunks left a stream that finished first idle
    until the oldest one was done."""
    streams = getattr(backend, "streams", 1)
    pool = ThreadPoolExecutor(streams, thread_name_prefix="score-infer") if streams > 1 else None
    pending: deque = deque()  # (chunk, handle, future of finish or None), oldest first

    def take_oldest() -> list[Row]:
        chunk, handle, future = pending.popleft()
        return future.result() if future is not None else backend.finish(chunk, handle)

    try:
        for chunk in chunks:
            handle = backend.submit(chunk)
            pending.append((chunk, handle, pool.submit(backend.finish, chunk, handle) if pool else None))
            if len(pending) > backend.inflight:
                yield take_oldest()
        while pending:
            yield take_oldest()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _validate(args) -> str:
    """The output format; UserError for bad arguments."""
    if not os.path.isdir(args.dir):
        raise UserError(f"{args.dir} is not a folder" if os.path.exists(args.dir) else f"{args.dir} does not exist")
    if args.k < 1:
        raise UserError(f"--k must be at least 1, not {args.k}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, not {args.workers}")
    for flag in ("threads", "streams"):
        value = getattr(args, flag, None)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be at least 1, not {value}")
    fmt = args.format or ("csv" if args.out == "-" else format_from_path(args.out))
    if fmt is None:
        raise UserError(f"cannot tell the output format from {args.out!r}: name it .csv or .jsonl, or pass --format")
    if args.out == "-":
        if args.resume:
            raise UserError("--resume needs --out FILE")
    else:
        parent = os.path.dirname(os.path.abspath(args.out))
        if os.path.isdir(args.out):
            raise UserError(f"--out {args.out} is a folder")
        if not os.path.isdir(parent):
            raise UserError(f"cannot write {args.out}: folder {parent} does not exist")
        if not os.access(parent if not os.path.exists(args.out) else args.out, os.W_OK):
            raise UserError(f"cannot write {args.out}: permission denied")
    return fmt


def _open_backend(args):
    if args.url:
        return RemoteBackend(args.url, args.model, args.workers, args.timeout, args.batch_size or DEFAULT_URL_BATCH)
    from inference.manifest import ManifestError, load_manifest

    try:
        manifest = load_manifest(args.models_dir)
        entry = manifest.get(args.model)
    except ManifestError as exc:
        raise UserError(str(exc)) from None
    except KeyError as exc:
        raise UserError(exc.args[0]) from None
    return LocalBackend(os.path.join(args.models_dir, entry.file), args.device, args.threads, args.workers,
                        args.batch_size, args.streams)


class _Terminated(KeyboardInterrupt):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


def run(args: argparse.Namespace) -> int:
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    backend = None
    try:
        fmt_name = _validate(args)
        backend = _open_backend(args)
        return _run(args, fmt_name, backend)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RemoteError as exc:
        print(f"error: {exc}\nthe rows so far are kept: rerun with --resume to continue", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # before scoring started (loading the model, reading back --resume)
        print("interrupted", file=sys.stderr)
        return _interrupted_status(exc)
    finally:
        if backend is not None:
            backend.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupted_status(exc: KeyboardInterrupt) -> int:
    return 128 + (signal.SIGTERM if isinstance(exc, _Terminated) else signal.SIGINT)


def _count(root: str, stop: threading.Event, total: list) -> None:
    try:
        total.append(count_images(root, stop))
    except OSError:
        total.append(None)


def _run(args, fmt_name: str, backend) -> int:
    from tqdm import tqdm

    k = min(args.k, len(backend.classes)) if backend.classes else args.k
    backend.k = k
    fmt = make_format(fmt_name, k, exact_k=backend.classes is not None, min_confidence=args.min_confidence)
    summary = Summary()
    accuracy = None
    if args.labels_from_folders:
        accuracy = FolderAccuracy(backend.classes, os.path.basename(os.path.abspath(args.dir)),
                                  backend.name or "(the service's default)")

    try:
        entries = walk(args.dir, summary.walk)
    except OSError as exc:
        raise UserError(f"cannot read {args.dir}: {exc.strerror or exc}") from None
    done: set[str] = set()
    if args.out == "-":
        out = open(sys.stdout.fileno(), "w", closefd=False, newline="", **ENCODING)
    else:
        if args.resume and os.path.exists(args.out):
            def keep(row: Row) -> None:
                done.add(row.path)
                if accuracy is not None:
                    accuracy.add(row)
            try:
                summary.resumed = resume_output(args.out, fmt, keep)
            except OutputError as exc:
                raise UserError(f"cannot resume {args.out}: {exc}") from None
            except OSError as exc:
                raise UserError(f"cannot resume {args.out}: {exc.strerror or exc}") from None
        try:
            out = open(args.out, "a" if args.resume else "w", newline="", **ENCODING)
        except OSError as exc:
            raise UserError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.out == "-" or out.tell() == 0:
        out.write(fmt.header())
        out.flush()

    stop = threading.Event()
    total: list[int | None] = []
    bar = tqdm(total=None, initial=summary.resumed, unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=True if args.no_progress else None, smoothing=0.05, desc="scoring")
    if not bar.disable:  # the total is for the bar's ETA; walking the tree twice costs ~4 us an image
        threading.Thread(target=_count, args=(args.dir, stop, total), daemon=True, name="score-count").start()
    interrupted: KeyboardInterrupt | None = None
    start = time.perf_counter()
    try:
        for rows in _pipeline(_chunks(entries, backend.batch_size, done), backend):
            out.write(fmt.format(rows))
            out.flush()
            for row in rows:
                if row.error is None:
                    summary.scored += 1
                    if args.min_confidence is not None and not confident(row, args.min_confidence):
                        summary.unconfident += 1
                else:
                    summary.failed += 1
                    if len(summary.failures) < 3:
                        summary.failures.append(f"{row.path}: {row.error}")
                if accuracy is not None:
                    accuracy.add(row)
            if bar.total is None and total and total[0] is not None:
                bar.total = total[0]
            bar.update(len(rows))
            if summary.failed:
                bar.set_postfix(failed=summary.failed, refresh=False)
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        summary.elapsed = time.perf_counter() - start
        stop.set()
        bar.close()
        if args.out != "-":
            out.close()
        else:
            out.flush()
    print(summary.text(args.out, interrupted is not None, args.min_confidence), file=sys.stderr)
    if accuracy is not None:
        print(accuracy.report(), file=sys.stderr)
    if interrupted:
        return _interrupted_status(interrupted)
    return 1 if args.fail_on_error and summary.failed else 0


def get_args_parser() -> argparse.ArgumentParser:
    """The ``score`` command on its own (tests and ``python -m service.score``)."""
    parser = argparse.ArgumentParser(prog="python -m service")
    add_score_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(["score", *argv])
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
