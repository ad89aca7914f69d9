"""Camera-sized photos: decode + fit time per image before and after reduced-size JPEG decoding, and
/classify throughput with single 12-megapixel photos.

    python bench/bench_photos.py [--sizes 12,3,0.3] [--repeats 15] [--concurrency 8] [--duration 20]
                                 [--no-service] [--out FILE.json]

1. decode: for each size (megapixels, 4:3) one generated photo-like JPEG (gradients, hard-edged shapes,
   sensor-like noise; quality 90), decoded to the model's 32x32 input in this process, one core:
   "before" is the full decode and a straight resize (``fit="squash", reduce=False``: no fit
   and no reduced decoding), "after" the default (``fit="center_crop"``,
   reduced-size decode); "after, squash" isolates the reduced decode. The three alternate, repeat by
   repeat, so that a busy machine slows all of them alike; the median is reported.
2. service: ``python -m service serve`` on a free port with the manifest's default model; --concurrency
   connections POST /classify back to back for --duration seconds, one 12 MP photo per request
   (http_load.py's load generator, service_runs.py's CPU accounting).

Prints a markdown table and writes JSON (by default to .cache/bench-results/photos.json, ignored by git).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import termination  # noqa: E402
from arguments import (  # noqa: E402
    add_models_dir_argument,
    add_out_argument,
    non_negative_float,
    positive_float,
    positive_floats,
)
from http_load import authority, build_requests  # noqa: E402
from report_io import write_json  # noqa: E402
from service_runs import run_level, serving, wait_ready  # noqa: E402

from inference.manifest import load_manifest  # noqa: E402
from inference.preprocess import dct_reduction, decode_image  # noqa: E402
from training.cli_types import positive_int  # noqa: E402

VARIANTS = {  # label -> decode_image keyword arguments
    "before": {"fit": "squash", "reduce": False},
    "after": {"fit": "center_crop", "reduce": True},
    "after, squash": {"fit": "squash", "reduce": True},
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", type=positive_floats, default="12,3,0.3", help="photo sizes in megapixels, 4:3, comma-separated"
    )
    p.add_argument("--repeats", type=positive_int, default=15, help="decodes of each photo per variant")
    add_models_dir_argument(p)
    p.add_argument("--concurrency", type=positive_int, default=8, help="connections POSTing 12 MP photos")
    p.add_argument("--duration", type=positive_float, default=20.0, help="seconds of measured load")
    p.add_argument("--warmup", type=non_negative_float, default=3.0, help="seconds of unmeasured load before it")
    p.add_argument("--no-service", action="store_true", help="decode timings only")
    add_out_argument(p, "photos")
    return p


def photo_jpeg(megapixels: float, seed: int = 0) -> tuple[bytes, tuple[int, int]]:
    """A 4:3 photo-like JPEG of about ``megapixels``: smooth gradients, a few shapes, noise; quality 90."""
    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5 / 8)) * 8
    height = width * 3 // 4
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 120 + 60], axis=-1)
    for _ in range(8):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.2) * height
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 5, pixels.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue(), (width, height)


def time_decodes(data: bytes, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    for kwargs in VARIANTS.values():  # one unmeasured decode each: first-call allocations
        decode_image(data, **kwargs)
    for _ in range(repeats):
        for label, kwargs in VARIANTS.items():
            t0 = time.perf_counter()
            decode_image(data, **kwargs)
            times[label].append(time.perf_counter() - t0)
    return times


def decode_results(sizes: list[float], repeats: int) -> list[dict]:
    from tqdm import tqdm

    rows = []
    for megapixels in tqdm(sizes, desc="decoding", unit="size"):
        data, (width, height) = photo_jpeg(megapixels)
        full = decode_image(data, **VARIANTS["before"]).astype(int)
        times = time_decodes(data, repeats)
        rows.append(
            {
                "megapixels": megapixels,
                "width": width,
                "height": height,
                "jpeg_bytes": len(data),
                "dct_reduction": dct_reduction((width, height), (32, 32), "center_crop"),
                "ms_median": {label: round(statistics.median(t) * 1000, 2) for label, t in times.items()},
                "ms_min": {label: round(min(t) * 1000, 2) for label, t in times.items()},
                # the reduced decode against the full one, both squashed: what reduction alone changes
                "reduced_vs_full_mean_abs_diff": round(
                    float(np.abs(decode_image(data, **VARIANTS["after, squash"]).astype(int) - full).mean()), 3
                ),
            }
        )
    return rows


def service_result(args, data: bytes, entry) -> dict:
    server_args = argparse.Namespace(
        url=None, models_dir=args.models_dir, max_batch_size=256, serve_arg=[], streams=0, threads=0
    )
    with serving(server_args) as (host, port, server):
        wait_ready(host, port, server)
        requests = build_requests([("photo.jpg", data)], 1, 5, entry.name, authority(host, port), count=1)

        def check(body: bytes) -> None:
            answer = json.loads(body)
            assert answer["model"] == entry.name and len(answer["predictions"]) == 1, answer

        level_args = argparse.Namespace(warmup=args.warmup, duration=args.duration, max_requests=10**6)
        return run_level(level_args, host, port, server, requests, 1, args.concurrency, check)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    sizes = args.sizes
    entry = None
    if not args.no_service:  # a models folder without a model is refused before the decodes are timed
        with termination.user_input():
            entry = load_manifest(args.models_dir).get()
    decode = decode_results(sizes, args.repeats)
    service = None
    if entry is not None:
        big = max(sizes)
        data, _ = photo_jpeg(big)
        service = {"model": entry.name, "model_fit": entry.input.fit, "megapixels": big, "jpeg_bytes": len(data)}
        service.update(service_result(args, data, entry))
    report = {
        "decode": decode,
        "variants": {label: kwargs for label, kwargs in VARIANTS.items()},
        "classify": service,
        "note": "one process, one core for decoding; the load generator shares the cores with the server",
    }
    write_json(args.out, report)
    print("| photo | JPEG | reduction | before ms | after ms | after, squash ms | MAD reduced vs full |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in decode:
        ms = row["ms_median"]
        print(
            f"| {row['megapixels']:g} MP ({row['width']}x{row['height']}) | {row['jpeg_bytes'] / 1e6:.1f} MB | "
            f"1/{row['dct_reduction']} | {ms['before']} | {ms['after']} | {ms['after, squash']} | "
            f"{row['reduced_vs_full_mean_abs_diff']} |"
        )
    if service:
        print(
            f"\n/classify, one {service['megapixels']:g} MP photo per request, concurrency {args.concurrency}: "
            f"{service['images_per_s']} images/s, p50 {service['latency_ms']['p50']} ms, "
            f"p95 {service['latency_ms']['p95']} ms, refused {service['refused']}, failed {service['failed']}, "
            f"server CPU {service['server_cpu_ms_per_image']} ms/image"
        )
    return 0


if __name__ == "__main__":
    termination.run(main)
