"""The service benchmarks' load generator: prebuilt HTTP/1.1 requests carrying real CIFAR-10 JPEGs (multipart
POST /classify, or an Open Inference Protocol infer with the JPEGs as a BYTES tensor), sent back to back over
keep-alive asyncio connections. Minimal, so that it takes as little as possible of the CPU it shares with the
server."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from pathlib import Path

import numpy as np
from arguments import no_cifar_images, open_archive


def read_jpegs(archive: Path, count: int) -> list[tuple[str, bytes]]:
    """``count`` JPEGs spread over the classes, read straight from the archive (nothing written to disk)."""
    per_class = max(1, count // 10)
    pattern = re.compile(r"^cifar10/train/([a-z]+)/(\d+)\.jpg$")
    out = []
    with open_archive(archive) as tar:
        for member in tar:
            hit = pattern.match(member.name)
            if member.isfile() and hit and int(hit[2]) < per_class:
                out.append((f"{hit[1]}_{hit[2]}.jpg", tar.extractfile(member).read()))
    if not out:
        raise no_cifar_images(archive)
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


def authority(host: str, port: int) -> str:
    """The Host header's value: an IPv6 address goes in brackets (RFC 9110), or its colons read as the port's."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


# What the service answers a request it will not serve now (shed over its latency budget, or asked to come back):
# counted as refused, apart from the failures.
REFUSALS = (429, 503)


async def _connection(host, port, requests, offset, deadline, max_requests, counter, latencies, errors, check):
    """Requests back to back on one connection. Only an answered request's time is a latency: a refusal answered
    at once would make the percentiles look better the more the service refuses."""
    reader, writer = await asyncio.open_connection(host, port)
    i = offset
    try:
        while time.perf_counter() < deadline and counter[0] < max_requests:
            counter[0] += 1
            t0 = time.perf_counter()
            writer.write(requests[i % len(requests)])
            try:
                status, body = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:  # the server closed it: a failure
                errors.append((0, f"connection closed: {exc!r}"[:200]))
                return
            if status != 200:
                errors.append((status, f"{status}: {body[:200]!r}"))
            else:
                latencies.append(time.perf_counter() - t0)
                if check:
                    check(body)
                    check = None
            i += 1
    finally:
        writer.close()


async def load(host, port, requests, concurrency, duration, max_requests, check=None) -> dict:
    """``concurrency`` connections for ``duration`` seconds: the requests sent, the latencies of those answered
    200, and the (status, text) of the others."""
    latencies: list[float] = []
    errors: list[tuple[int, str]] = []
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
    return {"requests": len(latencies) + len(errors), "elapsed_s": elapsed, "latencies": latencies, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


QUANTILES = ("p50", "p95", "p99")


def summary(result: dict, per_request: int, digits: int = 2) -> dict:
    """A load's figures: throughput and latency percentiles over the requests answered 200, the refusals (429,
    503) and the other failures counted apart, a few of them quoted. Percentiles are None where none was
    answered (JSON has no NaN)."""
    ok = len(result["latencies"])
    refused = [text for status, text in result["errors"] if status in REFUSALS]
    failed = [text for status, text in result["errors"] if status not in REFUSALS]
    latency = {q: round(percentile(result["latencies"], float(q[1:])) * 1000, digits) for q in QUANTILES}
    return {
        "requests": result["requests"],
        "answered": ok,
        "refused": len(refused),
        "failed": len(failed),
        "error_samples": (failed + refused)[:3],
        "images_per_s": round(ok * per_request / result["elapsed_s"], 1),
        "requests_per_s": round(ok / result["elapsed_s"], 1),
        "latency_ms": latency if ok else dict.fromkeys(QUANTILES),
    }
