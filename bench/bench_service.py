"""Load-test the HTTP service on loopback against the raw ONNX Runtime engine of the same model.

    python bench/bench_service.py [--models-dir models] [--model NAME] [--images-per-request 1,16]
                                  [--concurrency 1,8,32,64] [--routes classify,v2] [--duration 10]
                                  [--out bench/results/service.json]

Starts ``python -m service serve`` on a free port (or uses --url), waits for /readyz, then:

1. raw engine (raw_engine.py): ``OnnxClassifier.logits`` in this process on float32 batches decoded
   beforehand, one stream on every core and one single-threaded stream per core, at the per-request
   size and at the service's max batch size, while the server is idle, before and again after the load
   (the better kept: the machine may be shared); the best of all is the ceiling the service is compared
   with;
2. for each concurrency: that many keep-alive connections each POSTing to a route back to back for
   --duration seconds (at most --max-requests requests), every request carrying --images-per-request
   real CIFAR-10 JPEGs from the shared archive, after a short warm-up at that concurrency; once per
   request size and route. Routes (--routes): ``classify`` (POST /classify, multipart) and ``v2`` (the
   Open Inference Protocol: POST /v2/models/NAME/infer, the JPEGs as a BYTES tensor in base64 JSON, top-k
   through the classification extension). The routes take turns at each level, so that they are compared
   under the same conditions; the report gives v2's images/s as a fraction of /classify's.

Besides throughput and latency, each level reports the CPU time the server's processes spent per
image (from /proc), to compare with the raw engine's: unlike throughput, it does not depend on what
else the machine is running; and the memory they held (PSS and RSS, sampled every 0.25 s), once ready
and at the peak of each level, to size a container's memory limit by. The load generator is a minimal
asyncio HTTP/1.1 client sending prebuilt bodies, so that it takes as little as possible of the CPU it
shares with the server.
Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import raw_engine  # noqa: E402
import termination  # noqa: E402
from arguments import positive_ints  # noqa: E402
from report_io import host_record, write_json  # noqa: E402

from inference.manifest import load_manifest  # noqa: E402
from inference.preprocess import decode_image, to_model_input  # noqa: E402
from service.settings import CPU_RUN_IMAGES  # noqa: E402

ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", default=str(ROOT / "models"), help="models folder with manifest.json")
    p.add_argument("--model", help="model name (default: the manifest's default)")
    p.add_argument("--url", help="benchmark a server already running at this URL instead of starting one")
    p.add_argument(
        "--images-per-request",
        type=positive_ints,
        default="1,16",
        help="JPEGs in each POST /classify; comma-separated for several runs (default: 1,16)",
    )
    p.add_argument("--concurrency", type=positive_ints, default="1,8,32,64", help="comma-separated concurrency levels")
    p.add_argument(
        "--routes",
        type=route_list,
        default="classify",
        help="comma-separated: classify (multipart /classify), v2 (Open Inference Protocol, BYTES images)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per level")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each level")
    p.add_argument("--max-requests", type=int, default=20_000, help="at most this many requests per level")
    p.add_argument("--k", type=int, default=5, help="top-k asked for")
    p.add_argument("--pool", type=int, default=512, help="distinct JPEGs taken from the archive")
    p.add_argument("--streams", type=int, default=0, help="the service's concurrent batches (0: its default)")
    p.add_argument(
        "--threads", type=int, default=0, help="the service's ONNX Runtime threads per batch (0: its default)"
    )
    p.add_argument("--max-batch-size", type=int, default=256, help="the service's adaptive batching limit")
    p.add_argument("--serve-arg", action="append", default=[], help="extra argument for `python -m service serve`")
    p.add_argument("--archive", default=str(ARCHIVE), help="the CIFAR-10 JPEG archive")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "service.json"), help="JSON results")
    return p


def route_list(text: str) -> list[str]:
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names or set(names) - {"classify", "v2"}:
        raise argparse.ArgumentTypeError(f"classify and/or v2, got {text!r}")
    return names


def read_jpegs(archive: Path, count: int) -> list[tuple[str, bytes]]:
    """``count`` JPEGs spread over the classes, read straight from the archive (nothing written to disk)."""
    per_class = max(1, count // 10)
    pattern = re.compile(r"^cifar10/train/([a-z]+)/(\d+)\.jpg$")
    out = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            hit = pattern.match(member.name)
            if member.isfile() and hit and int(hit[2]) < per_class:
                out.append((f"{hit[1]}_{hit[2]}.jpg", tar.extractfile(member).read()))
    return out[:count]


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for name, value in fields.items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def v2_infer(files: list[tuple[str, bytes]], k: int) -> bytes:
    """An Open Inference Protocol request: the files as a BYTES tensor (base64), the top k as strings."""
    request = {
        "inputs": [
            {
                "name": "images",
                "shape": [len(files)],
                "datatype": "BYTES",
                "data": [base64.b64encode(data).decode() for _, data in files],
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"classification": k}}],
    }
    return json.dumps(request).encode()


def build_requests(
    jpegs, per_request: int, k: int, model: str, host: str, count: int = 32, route: str = "classify"
) -> list[bytes]:
    requests = []
    for r in range(count):
        files = [jpegs[(r * per_request + i) % len(jpegs)] for i in range(per_request)]
        if route == "v2":
            path, body, content_type = f"/v2/models/{model}/infer", v2_infer(files, k), "application/json"
        else:
            body, content_type = multipart(files, {"k": str(k), "model": model})
            path = "/classify"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        requests.append(head + body)
    return requests


def answer_check(route: str, model: str, per_request: int, k: int):
    """Checks the first answer of a level: the right model, one prediction per image."""

    def check(body: bytes) -> None:
        answer = json.loads(body)
        if route == "v2":
            assert answer["model_name"] == model and answer["outputs"][0]["shape"] == [per_request, k], answer
        else:
            assert answer["model"] == model and len(answer["predictions"]) == per_request, answer

    return check


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, body
            body += chunk[:-2]
    return status, await reader.readexactly(length or 0)


async def _connection(host, port, requests, offset, deadline, max_requests, counter, latencies, errors, check):
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < deadline and counter[0] < max_requests:
            counter[0] += 1
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            status, body = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(f"{status}: {body[:200]!r}")
            elif check:
                check(body)
                check = None
            i += 1
    finally:
        writer.close()


async def load(host, port, requests, concurrency, duration, max_requests, check=None) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    counter = [0]
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(
            _connection(
                host,
                port,
                requests,
                c * 7,
                deadline,
                max_requests,
                counter,
                latencies,
                errors,
                check if c == 0 else None,
            )
            for c in range(concurrency)
        )
    )
    elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "elapsed_s": elapsed, "latencies": latencies, "errors": errors}


def raw_rates(path: Path, batch_sizes: list[int], jpegs, size) -> dict[str, raw_engine.EngineRate]:
    pixels = to_model_input([decode_image(data, size) for _, data in jpegs])
    return {r.label: r for r in raw_engine.ceiling(path, pixels, batch_sizes)}


def _process_tree(root: int) -> dict[int, list[str]]:
    """/proc/PID/stat fields (after the command) of a process and all its descendants (the server's workers)."""
    parent, fields = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            after_command = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, ...
        except OSError:
            continue
        pid = int(stat.parent.name)
        parent[pid], fields[pid] = int(after_command[1]), after_command
    tree = {}
    for pid in fields:
        p = pid
        while p and p != root:
            p = parent.get(p, 0)
        if p == root:
            tree[pid] = fields[pid]
    return tree


def tree_cpu_seconds(root: int | None) -> float | None:
    """CPU time (user + system) of a process and all its descendants, from /proc."""
    if root is None or not Path("/proc").is_dir():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    return sum((int(f[11]) + int(f[12])) / ticks for f in _process_tree(root).values())


def tree_memory_mib(root: int | None) -> dict[str, float] | None:
    """Resident memory of a process and all its descendants, from /proc/PID/smaps_rollup: the sum of their
    RSS (pages shared between the workers counted in each) and of their PSS (each shared page split among
    its sharers: what they hold together, near what a container's memory limit counts)."""
    if root is None or not Path("/proc").is_dir():
        return None
    total = {"rss": 0.0, "pss": 0.0}
    read = False
    for pid in _process_tree(root):
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:  # gone since the tree was read, or not ours to read
            continue
        read = True
        for line in rollup.splitlines():
            key, _, value = line.partition(":")
            if key in ("Rss", "Pss"):
                total[key.lower()] += int(value.split()[0]) / 1024
    return {k: round(v, 1) for k, v in total.items()} if read else None


class MemoryPeak:
    """The largest PSS total of a process tree, sampled every ``interval`` seconds while the block runs."""

    def __init__(self, root: int | None, interval: float = 0.25) -> None:
        self.root, self.interval, self.peak = root, interval, None
        self._stop = threading.Event()

    def _sample(self) -> None:
        memory = tree_memory_mib(self.root)
        if memory and (self.peak is None or memory["pss"] > self.peak["pss"]):
            self.peak = memory

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> MemoryPeak:
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "service",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models-dir",
        args.models_dir,
        "--max-batch-size",
        str(args.max_batch_size),
        *args.serve_arg,
    ]
    for flag in ("streams", "threads"):
        if getattr(args, flag):
            command += [f"--{flag}", str(getattr(args, flag))]
    # The access log of a run is megabytes: kept in the temporary directory, its path printed.
    fd, log_path = tempfile.mkstemp(prefix="bench_service_", suffix=".log")
    print(f"server log: {log_path}", file=sys.stderr, flush=True)
    with os.fdopen(fd, "w") as log:
        return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def open_server(args) -> tuple[str, int, subprocess.Popen | None]:
    """(host, port, the server process) of ``args.url``, or of a server started here (process None for a URL)."""
    if args.url:
        parsed = urlparse(args.url)
        return parsed.hostname, parsed.port or 80, None
    port = free_port()
    return "127.0.0.1", port, start_server(args, port)


def stop_server(server: subprocess.Popen | None) -> None:
    """Stop a server started by :func:`open_server` and its workers; nothing for a server given by URL."""
    if server is None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def wait_ready(host: str, port: int, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"http://{host}:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the service did not become ready within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def run_level(args, host, port, server, requests, per_request, concurrency, check) -> dict:
    asyncio.run(load(host, port, requests, concurrency, args.warmup, args.max_requests))
    server_cpu = tree_cpu_seconds(server.pid if server else None)
    client_cpu = time.process_time()
    with MemoryPeak(server.pid if server else None) as memory:
        result = asyncio.run(load(host, port, requests, concurrency, args.duration, args.max_requests, check))
    client_cpu = time.process_time() - client_cpu
    if server_cpu is not None:
        server_cpu = tree_cpu_seconds(server.pid) - server_cpu
    lat = result["latencies"]
    ok = result["requests"] - len(result["errors"])
    images = max(1, ok * per_request)
    return {
        "concurrency": concurrency,
        "requests": result["requests"],
        "errors": len(result["errors"]),
        "error_samples": result["errors"][:3],
        "elapsed_s": round(result["elapsed_s"], 3),
        "images_per_s": round(ok * per_request / result["elapsed_s"], 1),
        "requests_per_s": round(ok / result["elapsed_s"], 1),
        "latency_ms": {q: round(percentile(lat, float(q[1:])) * 1000, 2) for q in ("p50", "p95", "p99")},
        "server_cpu_ms_per_image": None if server_cpu is None else round(server_cpu * 1000 / images, 3),
        "server_cores_used": None if server_cpu is None else round(server_cpu / result["elapsed_s"], 2),
        "client_cpu_ms_per_image": round(client_cpu * 1000 / images, 3),
        "server_memory_peak_mib": memory.peak,
    }


def main(args: argparse.Namespace) -> int:
    with termination.user_input():
        manifest = load_manifest(args.models_dir)
        entry = manifest.get(args.model)
    jpegs = read_jpegs(Path(args.archive), args.pool)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    sizes, routes = args.images_per_request, args.routes
    host, port, server = open_server(args)
    try:
        wait_ready(host, port)
        memory_ready = tree_memory_mib(server.pid if server else None)
        model_path = Path(args.models_dir) / entry.file
        # CPU_RUN_IMAGES: the pieces the service runs a large batch in on the CPU (service/settings.py)
        batch_sizes = sorted({*sizes, args.max_batch_size, CPU_RUN_IMAGES})
        raw = raw_rates(model_path, batch_sizes, jpegs, entry.input.size)
        runs = []
        for per_request in sizes:
            by_route = {
                route: build_requests(jpegs, per_request, args.k, entry.name, f"{host}:{port}", route=route)
                for route in routes
            }
            levels: dict[str, list[dict]] = {route: [] for route in routes}
            for concurrency in args.concurrency:
                for route in routes:  # in turns, so that both see the same machine
                    check = answer_check(route, entry.name, per_request, args.k)
                    level = run_level(args, host, port, server, by_route[route], per_request, concurrency, check)
                    levels[route].append(level)
                    print(
                        f"{route}: {per_request} per request, concurrency {concurrency}: "
                        f"{level['images_per_s']:.0f} images/s",
                        file=sys.stderr,
                        flush=True,
                    )
            runs += [{"route": route, "images_per_request": per_request, "levels": levels[route]} for route in routes]
        # Measured again after the load, the better of the two kept: on a shared machine the engine's
        # ceiling is the least disturbed measurement.
        again = raw_rates(model_path, batch_sizes, jpegs, entry.input.size)
        raw = {label: max(raw[label], again[label], key=lambda r: r.images_per_s) for label in raw}
    finally:
        stop_server(server)

    best = max(raw.values(), key=lambda r: r.images_per_s)
    ceiling = best.images_per_s
    for run in runs:
        for level in run["levels"]:
            level["fraction_of_raw"] = round(level["images_per_s"] / ceiling, 3)
    comparison = route_comparison(runs)
    report = {
        "model": entry.name,
        "precision": entry.precision,
        "file": entry.file,
        "k": args.k,
        "duration_s": args.duration,
        "streams": args.streams or "default",
        "threads": args.threads or "default",
        "max_batch_size": args.max_batch_size,
        "serve_args": args.serve_arg,
        "raw_engine_images_per_s": {label: round(r.images_per_s, 1) for label, r in raw.items()},
        "raw_engine_cpu_ms_per_image": {label: round(r.cpu_ms_per_image, 3) for label, r in raw.items()},
        "raw_engine_ceiling_images_per_s": round(ceiling, 1),
        "raw_engine_ceiling": best.label,
        "runs": runs,
        "v2_vs_classify": comparison,
        "models_loaded": len(manifest.models),
        "server_memory_mib": {"ready": memory_ready, "peak_under_load": _peak(runs)},
        "host": host_record(),
        "note": "the load generator runs on the same cores as the server",
    }
    write_json(args.out, report)

    raw_text = "; ".join(
        f"{label}: {r.images_per_s:,.0f} ({r.cpu_ms_per_image:.2f} ms CPU/image)" for label, r in raw.items()
    )
    print(
        f"\nModel `{entry.name}` ({entry.precision}), k={args.k}, max batch {args.max_batch_size}, service "
        f"streams/threads {args.streams or 'default'}/{args.threads or 'default'}.\n"
        f"Raw ONNX Runtime (images/s): {raw_text}. Ceiling: {best.label}.\n"
    )
    print(
        "| route | JPEGs/request | concurrency | requests | images/s | % of raw | p50 ms | p95 ms | p99 ms | errors "
        "| server CPU ms/image |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        for lv in run["levels"]:
            lat = lv["latency_ms"]
            cpu = lv["server_cpu_ms_per_image"]
            print(
                f"| {run['route']} | {run['images_per_request']} | {lv['concurrency']} | {lv['requests']} | "
                f"{lv['images_per_s']:,.0f} | {lv['fraction_of_raw']:.0%} | {lat['p50']} | {lat['p95']} | "
                f"{lat['p99']} | {lv['errors']} | "
                f"{'-' if cpu is None else f'{cpu:.2f}'} |"
            )
    if memory_ready:
        peak = report["server_memory_mib"]["peak_under_load"]
        print(
            f"\nServer memory, {len(manifest.models)} models loaded (PSS of all its processes): "
            f"{memory_ready['pss']:,.0f} MiB ready, {peak['pss']:,.0f} MiB at the peak of the load "
            f"(RSS summed over the processes: {memory_ready['rss']:,.0f} / {peak['rss']:,.0f})"
        )
    for row in comparison:
        print(
            f"\nv2 / classify, {row['images_per_request']} per request, concurrency {row['concurrency']}: "
            f"{row['v2_images_per_s']:,.0f} / {row['classify_images_per_s']:,.0f} images/s = {row['ratio']:.2f}"
        )
    print(f"\nJSON: {args.out}")
    return 0


def _peak(runs: list[dict]) -> dict[str, float] | None:
    peaks = [level["server_memory_peak_mib"] for run in runs for level in run["levels"]]
    return max((p for p in peaks if p), key=lambda p: p["pss"], default=None)


def route_comparison(runs: list[dict]) -> list[dict]:
    """v2's images/s against /classify's at each request size and concurrency both were run at."""
    rates = {
        (run["route"], run["images_per_request"], level["concurrency"]): level["images_per_s"]
        for run in runs
        for level in run["levels"]
    }
    out = []
    for (route, per_request, concurrency), v2 in rates.items():
        classify = rates.get(("classify", per_request, concurrency))
        if route == "v2" and classify:
            out.append(
                {
                    "images_per_request": per_request,
                    "concurrency": concurrency,
                    "classify_images_per_s": classify,
                    "v2_images_per_s": v2,
                    "ratio": round(v2 / classify, 3),
                }
            )
    return out


if __name__ == "__main__":
    termination.run(lambda: main(get_args_parser().parse_args()))
