"""Two models served at once: what a slow model's traffic does to a fast model's latency and refusals.

    python bench/bench_mixed_models.py --slow NAME [--fast NAME] [--models-dir models] [--url URL]
                                       [--concurrency 8] [--slow-concurrency 8] [--duration 20]
                                       [--images-per-request 1] [--out bench/results/mixed_models.json]

Starts ``python -m service serve`` (or uses --url), then runs three phases of --duration seconds each,
every client a keep-alive connection POSTing /classify back to back with real CIFAR-10 JPEGs:

1. the fast model alone (--concurrency clients);
2. the slow model alone (--slow-concurrency clients);
3. both at once, the same clients as in 1 and 2 together.

For each phase and model it reports images/s, latency percentiles and the refusals (status 503: the
batching dispatcher shed the request as over its latency budget). Run it against two builds of the
service (one with --url) to compare how they batch mixed traffic. Prints a markdown table; writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import termination  # noqa: E402
from arguments import ARCHIVE, http_url, max_batch_size, non_negative_float, positive_float  # noqa: E402
from http_load import authority, build_requests, load, percentile, read_jpegs  # noqa: E402
from report_io import host_record, write_json  # noqa: E402
from service_runs import open_server, stop_server, wait_ready  # noqa: E402

from inference.errors import UsageError  # noqa: E402
from inference.manifest import load_manifest  # noqa: E402
from training.cli_types import non_negative_int, positive_int  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", default=str(ROOT / "models"), help="models folder with manifest.json")
    p.add_argument("--fast", help="the fast model (default: the manifest's default)")
    p.add_argument("--slow", required=True, help="the slow model served beside it")
    p.add_argument(
        "--url", type=http_url, help="benchmark a server already running at this URL instead of starting one"
    )
    p.add_argument("--concurrency", type=positive_int, default=8, help="clients of the fast model")
    p.add_argument("--slow-concurrency", type=positive_int, default=8, help="clients of the slow model")
    p.add_argument("--images-per-request", type=positive_int, default=1, help="JPEGs in each request")
    p.add_argument("--duration", type=positive_float, default=20.0, help="seconds of load per phase")
    p.add_argument(
        "--warmup", type=non_negative_float, default=3.0, help="seconds of unmeasured load before each phase"
    )
    p.add_argument("--k", type=positive_int, default=5, help="top-k asked for")
    p.add_argument("--pool", type=positive_int, default=256, help="distinct JPEGs taken from the archive")
    p.add_argument(
        "--streams", type=non_negative_int, default=0, help="the service's concurrent batches (0: its default)"
    )
    p.add_argument(
        "--threads", type=non_negative_int, default=0, help="ONNX Runtime threads per batch (0: the default)"
    )
    p.add_argument("--max-batch-size", type=max_batch_size, default=256, help="the service's adaptive batching limit")
    p.add_argument("--serve-arg", action="append", default=[], help="extra argument for `python -m service serve`")
    p.add_argument("--archive", default=str(ARCHIVE), help="the CIFAR-10 JPEG archive")
    p.add_argument("--label", default="", help="a name for the build under test, kept in the JSON")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "mixed_models.json"), help="JSON results")
    return p


async def _phase(host: str, port: int, clients: dict[str, tuple[list[bytes], int]], duration: float) -> dict:
    """Every model's clients at once for ``duration`` seconds; each model's own load result."""
    names = list(clients)
    results = await asyncio.gather(
        *(load(host, port, requests, n, duration, 10**9) for requests, n in clients.values())
    )
    return dict(zip(names, results))


def summary(result: dict, per_request: int) -> dict:
    ok = result["requests"] - len(result["errors"])
    shed = sum(1 for e in result["errors"] if e.startswith("503"))
    lat = result["latencies"]
    return {
        "requests": result["requests"],
        "images_per_s": round(ok * per_request / result["elapsed_s"], 1),
        "latency_ms": {q: round(percentile(lat, float(q[1:])) * 1000, 1) for q in ("p50", "p95", "p99")},
        "shed_503": shed,
        "other_errors": len(result["errors"]) - shed,
        "error_samples": result["errors"][:3],
    }


def main(args: argparse.Namespace) -> int:
    with termination.user_input():
        manifest = load_manifest(args.models_dir)
        fast, slow = manifest.get(args.fast), manifest.get(args.slow)
    if fast.name == slow.name:  # one model's clients would replace the other's in the phase of both
        raise UsageError(f"--fast and --slow both name {fast.name}: the slow model is another one")
    jpegs = read_jpegs(Path(args.archive), args.pool)
    report_phases = {}
    host, port, server = open_server(args)
    try:  # from the server's start on: whatever stops the run, it stops the server
        requests = {
            entry.name: build_requests(jpegs, args.images_per_request, args.k, entry.name, authority(host, port))
            for entry in (fast, slow)
        }
        phases = {
            "fast alone": {fast.name: (requests[fast.name], args.concurrency)},
            "slow alone": {slow.name: (requests[slow.name], args.slow_concurrency)},
            "both": {
                fast.name: (requests[fast.name], args.concurrency),
                slow.name: (requests[slow.name], args.slow_concurrency),
            },
        }
        wait_ready(host, port, server)
        for phase, clients in phases.items():
            asyncio.run(_phase(host, port, clients, args.warmup))
            results = asyncio.run(_phase(host, port, clients, args.duration))
            report_phases[phase] = {name: summary(r, args.images_per_request) for name, r in results.items()}
            print(
                f"{phase}: "
                + ", ".join(f"{n} {s['images_per_s']:.0f} images/s" for n, s in report_phases[phase].items()),
                file=sys.stderr,
                flush=True,
            )
    finally:
        stop_server(server)

    report = {
        "label": args.label,
        "fast": fast.name,
        "slow": slow.name,
        "concurrency": {"fast": args.concurrency, "slow": args.slow_concurrency},
        "images_per_request": args.images_per_request,
        "duration_s": args.duration,
        "streams": args.streams or "default",
        "threads": args.threads or "default",
        "max_batch_size": args.max_batch_size,
        "phases": report_phases,
        "host": host_record(),
        "note": "the load generator runs on the same cores as the server",
    }
    write_json(args.out, report)
    print(
        f"\n{args.label or 'this build'}: fast `{fast.name}` x{args.concurrency}, "
        f"slow `{slow.name}` x{args.slow_concurrency}, "
        f"{args.images_per_request} JPEG(s) per request, {args.duration:.0f} s per phase.\n"
    )
    print("| phase | model | images/s | p50 ms | p95 ms | p99 ms | shed (503) | other errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for phase, models in report_phases.items():
        for name, s in models.items():
            lat = s["latency_ms"]
            print(
                f"| {phase} | {name} | {s['images_per_s']:,.0f} | {lat['p50']} | {lat['p95']} | {lat['p99']} "
                f"| {s['shed_503']} | {s['other_errors']} |"
            )
    print(f"\nJSON: {args.out}")
    return 0


if __name__ == "__main__":
    termination.run(lambda: main(get_args_parser().parse_args()))
