"""Two models served at once: what a slow model's traffic does to a fast model's latency and refusals.

    python bench/bench_mixed_models.py --slow NAME [--fast NAME] [--models-dir models] [--url URL]
                                       [--concurrency 8] [--slow-concurrency 8] [--duration 20]
                                       [--images-per-request 1] [--out FILE.json]

Starts ``python -m service serve`` (or uses --url), then runs three phases of --duration seconds each,
every client a keep-alive connection POSTing /classify back to back with real CIFAR-10 JPEGs:

1. the fast model alone (--concurrency clients);
2. the slow model alone (--slow-concurrency clients);
3. both at once, the same clients as in 1 and 2 together.

For each phase and model it reports images/s and latency percentiles over the requests answered 200, and
the refusals (status 503: the batching dispatcher shed the request as over its latency budget; 429) and
other failures apart. Run it against two builds of the service (one with --url) to compare how they batch
mixed traffic. Prints a markdown table; writes JSON (by default to .cache/bench-results/mixed_models.json,
ignored by git).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import termination  # noqa: E402
from arguments import add_out_argument, add_server_arguments, positive_float  # noqa: E402
from http_load import authority, build_requests, load, read_jpegs, summary  # noqa: E402
from report_io import write_json  # noqa: E402
from service_runs import serving, wait_ready  # noqa: E402

from inference.errors import UsageError  # noqa: E402
from inference.manifest import load_manifest  # noqa: E402
from training.cli_types import positive_int  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(p, warmup_s=3.0, pool=256)
    p.add_argument("--fast", help="the fast model (default: the manifest's default)")
    p.add_argument("--slow", required=True, help="the slow model served beside it")
    p.add_argument("--concurrency", type=positive_int, default=8, help="clients of the fast model")
    p.add_argument("--slow-concurrency", type=positive_int, default=8, help="clients of the slow model")
    p.add_argument("--images-per-request", type=positive_int, default=1, help="JPEGs in each request")
    p.add_argument("--duration", type=positive_float, default=20.0, help="seconds of load per phase")
    p.add_argument("--label", default="", help="a name for the build under test, kept in the JSON")
    add_out_argument(p, "mixed_models")
    return p


async def _phase(host: str, port: int, clients: dict[str, tuple[list[bytes], int]], duration: float) -> dict:
    """Every model's clients at once for ``duration`` seconds; each model's own load result."""
    names = list(clients)
    results = await asyncio.gather(
        *(load(host, port, requests, n, duration, 10**9) for requests, n in clients.values())
    )
    return dict(zip(names, results))


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    with termination.user_input():
        manifest = load_manifest(args.models_dir)
        fast, slow = manifest.get(args.fast), manifest.get(args.slow)
    if fast.name == slow.name:  # one model's clients would replace the other's in the phase of both
        raise UsageError(f"--fast and --slow both name {fast.name}: the slow model is another one")
    jpegs = read_jpegs(Path(args.archive), args.pool)
    report_phases = {}
    with serving(args) as (host, port, server):  # whatever stops the run, it stops the server
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
            report_phases[phase] = {name: summary(r, args.images_per_request, 1) for name, r in results.items()}
            print(
                f"{phase}: "
                + ", ".join(f"{n} {s['images_per_s']:.0f} images/s" for n, s in report_phases[phase].items()),
                file=sys.stderr,
                flush=True,
            )

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
        "note": "the load generator runs on the same cores as the server",
    }
    write_json(args.out, report)
    print(
        f"\n{args.label or 'this build'}: fast `{fast.name}` x{args.concurrency}, "
        f"slow `{slow.name}` x{args.slow_concurrency}, "
        f"{args.images_per_request} JPEG(s) per request, {args.duration:.0f} s per phase.\n"
    )
    print("| phase | model | images/s | p50 ms | p95 ms | p99 ms | refused (503, 429) | failed |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for phase, models in report_phases.items():
        for name, s in models.items():
            lat = s["latency_ms"]
            print(
                f"| {phase} | {name} | {s['images_per_s']:,.0f} | {lat['p50']} | {lat['p95']} | {lat['p99']} "
                f"| {s['refused']} | {s['failed']} |"
            )
    return 0


if __name__ == "__main__":
    termination.run(main)
