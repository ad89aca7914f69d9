"""A service under load, as the service benchmarks run it: ``python -m service serve`` started on a free port
in a session of its own (or one already running, given by URL), waited for until ready, loaded one level at a
time with the CPU time and memory of its processes measured, and stopped with its workers.

A free port is one nobody held a moment ago: another program can take it before the server binds it (in serve's
check, or seconds later in BentoML's bind), and the server then exits saying so. Such a start is made again on
another port, up to ``START_TRIES`` times, before the benchmark's block begins: its host and port are then the
ones the server listens on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlparse

from http_load import load, summary
from process_tree import MemoryPeak, tree_cpu_seconds

from inference.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]

# The log of each server start_server started, by pid: a server that exits before it is ready says why there.
LOGS: dict[int, Path] = {}

# How long a service given by --url may take to listen: one started just before the benchmark checks its models
# first.
URL_GRACE_S = 15.0

START_TRIES = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_server(port: int, models_dir: str | Path, *args: str, log: IO, env: dict | None = None) -> subprocess.Popen:
    """``python -m service serve`` on 127.0.0.1:``port`` with ``args``, its output to ``log``, in a session of its
    own: stopping that process group stops its workers too."""
    command = [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--models-dir", str(models_dir), *args]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_server(args, port: int) -> subprocess.Popen:
    serve_args = ["--max-batch-size", str(args.max_batch_size), *args.serve_arg]
    for flag in ("streams", "threads"):
        if getattr(args, flag):
            serve_args += [f"--{flag}", str(getattr(args, flag))]
    # To a file, not a pipe nobody reads (with --serve-arg=--access-log=on a run writes megabytes); its path printed.
    fd, log_path = tempfile.mkstemp(prefix="bench_service_", suffix=".log")
    print(f"server log: {log_path} (removed with the server unless the run fails)", file=sys.stderr, flush=True)
    with os.fdopen(fd, "w") as log:
        server = spawn_server(port, args.models_dir, *serve_args, log=log)
    LOGS[server.pid] = Path(log_path)
    return server


def open_server(args) -> tuple[str, int, subprocess.Popen | None]:
    """(host, port, the server process) of ``args.url`` (process None), or of a server started here and ready."""
    if args.url:
        # they would be recorded with the figures as the server's settings, which they never reached
        ignored = [flag for flag in ("streams", "threads", "serve_arg") if getattr(args, flag)]
        if ignored:
            flags = ", ".join("--" + flag.replace("_", "-") for flag in ignored)
            them = "them" if len(ignored) > 1 else "it"
            raise UsageError(
                f"{flags}: only for a server started here, not the one at --url; leave {them} or --url out"
            )
        parsed = urlparse(args.url)
        return parsed.hostname, parsed.port or 80, None
    return start_ready(args)


def start_ready(args) -> tuple[str, int, subprocess.Popen]:
    """(host, port, process) of a server started here and ready, on another free port where another program took
    the one chosen before the server bound it. A server that fails otherwise is stopped and the failure raised, its
    log kept (stopped with Ctrl-C: removed)."""
    host = "127.0.0.1"  # where spawn_server has it listen
    lost: list[int] = []
    while True:
        port = free_port()
        server = start_server(args, port)
        try:
            wait_ready(host, port, server)
            return host, port, server
        except UsageError:
            stop_server(server)
            if not lost_its_port(server, host, port):
                raise
            lost.append(port)
            if len(lost) == START_TRIES:
                raise UsageError(
                    f"another program took the port the service was started on before it could bind it, "
                    f"{START_TRIES} times (ports {', '.join(map(str, lost))}; the last log: {LOGS[server.pid]}): "
                    "run the benchmark again, or start the service yourself and give its --url"
                ) from None
            _forget_log(server)
            print(
                f"port {port} was taken by another program before the server bound it: starting it on another "
                f"({len(lost) + 1} of {START_TRIES})",
                file=sys.stderr,
                flush=True,
            )
        except KeyboardInterrupt:
            stop_server(server)
            _forget_log(server)
            raise
        except BaseException:
            stop_server(server)
            raise


def lost_its_port(server: subprocess.Popen, host: str, port: int) -> bool:
    """Whether ``server``, ended, ended because another program held ``port``: serve's check and its own report of
    BentoML's bind say so in one line (status 2), BentoML's process manager alone in its log (status 1)."""
    log = LOGS.get(server.pid)
    try:
        text = log.read_text(errors="replace") if log is not None else ""
    except OSError:
        return False
    return (server.returncode == 2 and f"error: cannot listen on {host}:{port}: Address already in use" in text) or (
        server.returncode == 1 and f"Could not bind {host}:{port}" in text
    )


def _forget_log(server: subprocess.Popen) -> None:
    log = LOGS.pop(server.pid, None)
    if log is not None:
        log.unlink(missing_ok=True)


@contextlib.contextmanager
def serving(args) -> Iterator[tuple[str, int, subprocess.Popen | None]]:
    """:func:`open_server`'s (host, port, process) for the block, a server started here ready when it begins and
    stopped with its workers however it ends. Its log is removed when the block ends or is stopped (Ctrl-C,
    SIGTERM), and kept when it fails: a server that would not start, or died under load, says why there."""
    host, port, server = open_server(args)
    failed = False
    try:
        yield host, port, server
    except KeyboardInterrupt:
        raise
    except BaseException:
        failed = True
        raise
    finally:
        stop_server(server)
        log = LOGS.pop(server.pid, None) if server is not None else None
        if log is not None and not failed:
            log.unlink(missing_ok=True)


def stop_server(server: subprocess.Popen | None) -> None:
    """Stop a server started by :func:`open_server` and its workers; nothing for a server given by URL."""
    if server is None:
        return
    # ProcessLookupError: the server and its workers have all ended already (a refused start)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


def wait_ready(host: str, port: int, server: subprocess.Popen | None, timeout: float = 120.0) -> None:
    """Until /readyz answers 200 (at once for a server :func:`open_server` started: it returns it ready). A server
    started here that exits first, or a URL where nothing listens for ``URL_GRACE_S``, is the user's to fix (a
    --serve-arg the service refuses, a wrong --url): said in one line, at once rather than after ``timeout``."""
    import httpx

    url = f"http://{host}:{port}"
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server is not None and server.poll() is not None:
            raise UsageError(f"the service exited with status {server.returncode} before it was ready: {_why(server)}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError as exc:
            if server is None and time.monotonic() - start > URL_GRACE_S:
                raise UsageError(
                    f"nothing answers at {url} ({exc}): start the service there, or leave --url out"
                ) from None
        time.sleep(0.3)
    where = "the service started here" if server is not None else url
    raise UsageError(f"{where} did not answer /readyz with 200 within {timeout:.0f} s")


def _why(server: subprocess.Popen) -> str:
    """The last line of the server's log (serve says why it refuses to start in one line), and where the log is."""
    log = LOGS.get(server.pid)
    if log is None:
        return "see its output"
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    return f"{lines[-1].strip() if lines else 'it wrote nothing'} (its log: {log})"


def run_level(args, host, port, server, requests, per_request, concurrency, check) -> dict:
    """One level of load: ``args.warmup`` seconds unmeasured, then ``args.duration`` seconds (at most
    ``args.max_requests`` requests) measured, with the server's CPU time and peak memory where it was started
    here (None for a server given by URL: its processes are not known)."""
    asyncio.run(load(host, port, requests, concurrency, args.warmup, args.max_requests))
    server_cpu = tree_cpu_seconds(server.pid if server else None)
    client_cpu = time.process_time()
    with MemoryPeak(server.pid if server else None) as memory:
        result = asyncio.run(load(host, port, requests, concurrency, args.duration, args.max_requests, check))
    client_cpu = time.process_time() - client_cpu
    if server_cpu is not None:
        server_cpu = tree_cpu_seconds(server.pid) - server_cpu
    figures = summary(result, per_request)
    if not figures["answered"]:  # a rate of 0 would be written as the figure
        samples = figures["error_samples"]
        raise UsageError(
            f"every request at concurrency {concurrency} failed ({len(result['errors'])}), e.g. {samples[0]}"
            if samples
            else f"no request was answered at concurrency {concurrency} within --duration {args.duration:g} s"
        )
    images = figures["answered"] * per_request
    return {
        "concurrency": concurrency,
        **figures,
        "elapsed_s": round(result["elapsed_s"], 3),
        "server_cpu_ms_per_image": None if server_cpu is None else round(server_cpu * 1000 / images, 3),
        "server_cores_used": None if server_cpu is None else round(server_cpu / result["elapsed_s"], 2),
        "client_cpu_ms_per_image": round(client_cpu * 1000 / images, 3),
        "server_memory_peak_mib": memory.peak,
    }
