"""Load-test the HTTP service on loopback against the raw ONNX Runtime engine of the same model.

    python bench/bench_service.py [--models-dir models] [--model NAME] [--images-per-request 1,16]
                                  [--concurrency 1,8,32,64] [--routes classify,v2] [--duration 10]
                                  [--out FILE.json]

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
and at the peak of each level, to size a container's memory limit by. The load generator (http_load.py) is a minimal
asyncio HTTP/1.1 client sending prebuilt bodies, so that it takes as little as possible of the CPU it
shares with the server. Latency percentiles and images/s are over the requests answered 200; the refusals
(429, 503: shed over the service's latency budget) and the other failures are counted apart.
Prints a markdown table and writes JSON (by default to .cache/bench-results/service.json, ignored by git).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import raw_engine  # noqa: E402
import termination  # noqa: E402
from arguments import add_out_argument, add_server_arguments, positive_float, positive_ints  # noqa: E402
from http_load import authority, build_requests, read_jpegs  # noqa: E402
from process_tree import tree_memory_mib  # noqa: E402
from report_io import write_json  # noqa: E402
from service_runs import run_level, serving, wait_ready  # noqa: E402

from inference.errors import UsageError  # noqa: E402
from inference.manifest import InputSpec, load_manifest  # noqa: E402
from inference.preprocess import decode_image, to_model_input  # noqa: E402
from service.settings import CPU_RUN_IMAGES  # noqa: E402
from training.cli_types import positive_int  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_server_arguments(p, warmup_s=2.0, pool=512)
    p.add_argument("--model", help="model name (default: the manifest's default)")
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
    p.add_argument("--duration", type=positive_float, default=10.0, help="seconds of load per level")
    p.add_argument("--max-requests", type=positive_int, default=20_000, help="at most this many requests per level")
    add_out_argument(p, "service")
    return p


def route_list(text: str) -> list[str]:
    names = [r.strip() for r in text.split(",") if r.strip()]
    if not names or set(names) - {"classify", "v2"}:
        raise argparse.ArgumentTypeError(f"classify and/or v2, got {text!r}")
    return names


def answer_check(route: str, model: str, per_request: int, k: int):
    """Checks the first answer of a level: the right model, one prediction per image."""

    def check(body: bytes) -> None:
        answer = json.loads(body)
        if route == "v2":
            assert answer["model_name"] == model and answer["outputs"][0]["shape"] == [per_request, k], answer
        else:
            assert answer["model"] == model and len(answer["predictions"]) == per_request, answer

    return check


def served_models(host: str, port: int, model: str) -> list[str]:
    """The models the server at host:port serves (its GET /models), which the results record: a server given by
    --url may serve another set than this checkout's manifest. A ``model`` it does not serve is refused before
    any load, as every request for it would be."""
    import httpx

    url = f"http://{host}:{port}"
    try:
        answer = httpx.get(f"{url}/models", timeout=30)
        names = [m["name"] for m in answer.json()["models"]] if answer.status_code == 200 else None
    except httpx.HTTPError as exc:
        raise UsageError(f"GET {url}/models failed ({exc}): start the service there, or leave --url out") from None
    except (ValueError, KeyError, TypeError):  # not JSON, or not the service's list
        names = None
    if answer.status_code == 401:
        raise UsageError(
            f"{url} asks for an API key, which the benchmark does not send: benchmark a server started without keys"
        )
    if names is None:
        raise UsageError(
            f"GET {url}/models answered {answer.status_code} without the service's list of models: "
            "is --url this project's service?"
        )
    if model not in names:
        raise UsageError(f"{url} does not serve {model} (it serves {', '.join(names)}): name one of them with --model")
    return names


def raw_rates(path: Path, batch_sizes: list[int], jpegs, spec: InputSpec) -> dict[str, raw_engine.EngineRate]:
    """The raw engine on the JPEGs decoded as the service decodes them for this model: its size and fit."""
    pixels = to_model_input([decode_image(data, spec.size, fit=spec.fit) for _, data in jpegs])
    return {r.label: r for r in raw_engine.ceiling(path, pixels, batch_sizes)}


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    with termination.user_input():
        manifest = load_manifest(args.models_dir)
        entry = manifest.get(args.model)
    jpegs = read_jpegs(Path(args.archive), args.pool)

    sizes, routes = args.images_per_request, args.routes
    with serving(args) as (host, port, server):
        wait_ready(host, port, server)
        served = served_models(host, port, entry.name)
        memory_ready = tree_memory_mib(server.pid if server else None)
        model_path = Path(args.models_dir) / entry.file
        # CPU_RUN_IMAGES: the pieces the service runs a large batch in on the CPU (service/settings.py)
        batch_sizes = sorted({*sizes, args.max_batch_size, CPU_RUN_IMAGES})
        raw = raw_rates(model_path, batch_sizes, jpegs, entry.input)
        runs = []
        for per_request in sizes:
            by_route = {
                route: build_requests(jpegs, per_request, args.k, entry.name, authority(host, port), route=route)
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
        again = raw_rates(model_path, batch_sizes, jpegs, entry.input)
        raw = {label: max(raw[label], again[label], key=lambda r: r.images_per_s) for label in raw}

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
        "models_loaded": len(served),
        "served_models": served,
        "server_memory_mib": {"ready": memory_ready, "peak_under_load": _peak(runs)},
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
        "| route | JPEGs/request | concurrency | requests | images/s | % of raw | p50 ms | p95 ms | p99 ms | refused "
        "| failed | server CPU ms/image |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        for lv in run["levels"]:
            lat = lv["latency_ms"]
            cpu = lv["server_cpu_ms_per_image"]
            print(
                f"| {run['route']} | {run['images_per_request']} | {lv['concurrency']} | {lv['requests']} | "
                f"{lv['images_per_s']:,.0f} | {lv['fraction_of_raw']:.0%} | {lat['p50']} | {lat['p95']} | "
                f"{lat['p99']} | {lv['refused']} | {lv['failed']} | "
                f"{'-' if cpu is None else f'{cpu:.2f}'} |"
            )
    if memory_ready:
        peak = report["server_memory_mib"]["peak_under_load"]
        print(
            f"\nServer memory, {len(served)} models loaded (PSS of all its processes): "
            f"{memory_ready['pss']:,.0f} MiB ready, {peak['pss']:,.0f} MiB at the peak of the load "
            f"(RSS summed over the processes: {memory_ready['rss']:,.0f} / {peak['rss']:,.0f})"
        )
    for row in comparison:
        print(
            f"\nv2 / classify, {row['images_per_request']} per request, concurrency {row['concurrency']}: "
            f"{row['v2_images_per_s']:,.0f} / {row['classify_images_per_s']:,.0f} images/s = {row['ratio']:.2f}"
        )
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
    termination.run(main)
