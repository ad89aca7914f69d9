"""Benchmark `python -m service score --engine ray` (Ray Data, a local Ray instance) against the local engine.

    python bench/bench_score_ray.py [--images 10000] [--repeats 2] [--out FILE.json]

Images: the first N/10 JPEGs of each class of ../shared/data/cifar10-train-jpg.tar.gz, extracted once into
--work-dir (score_runs.py's extract). Each run is the real CLI in a fresh process, local and ray in
interleaved rounds so that a slow spell of the shared machine hits both alike; medians are reported. Two
figures per run: the scorer's own images/s (its summary: from the first chunk to the last row, so for Ray
the actor pool's start is in it, the Ray instance's start is not) and the wall time of the whole command
(interpreter, Ray's start, model load). Both outputs are checked to hold the same rows. The JSON goes to --out
(by default .cache/bench-results/score-ray.json, ignored by git).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import termination  # noqa: E402
from arguments import (  # noqa: E402
    add_archive_argument,
    add_models_dir_argument,
    add_out_argument,
    add_work_dir_argument,
    at_least_ten,
    non_negative_float,
)
from report_io import cpu_model, write_json  # noqa: E402
from score_runs import extract, run_scorer, wait_until_quiet  # noqa: E402

from inference.manifest import load_manifest  # noqa: E402
from inference.runtime import default_threads  # noqa: E402
from training.cli_types import positive_int  # noqa: E402

ENGINES = {
    "local": [],
    "ray": ["--engine", "ray"],
}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_models_dir_argument(p)
    p.add_argument("--model", help="model name (default: the manifest's default)")
    p.add_argument("--images", type=at_least_ten, default=10_000, help="JPEGs to score, split evenly over the classes")
    p.add_argument("--repeats", type=positive_int, default=2, help="rounds of (local, ray); medians are reported")
    p.add_argument(
        "--ray-flags", default="", help="more flags for the ray runs, e.g. '--actors 1' (default: the CLI's defaults)"
    )
    p.add_argument(
        "--quiet-below",
        type=non_negative_float,
        default=0.0,
        help=(
            "before each run wait (up to 3 min) until other processes use fewer cores than this; 0: do not wait, "
            "only record their load (default: 0, as both engines are measured in the same rounds)"
        ),
    )
    add_archive_argument(p)
    add_work_dir_argument(p)
    add_out_argument(p, "score-ray")
    return p


def sorted_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        header, *rows = list(csv.reader(f))
    return [header, *sorted(rows)]


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with termination.user_input():
        model = load_manifest(args.models_dir).get(args.model).name
    folder = extract(Path(args.archive), work, args.images)
    engines = {"local": ENGINES["local"], "ray": ENGINES["ray"] + args.ray_flags.split()}
    print(f"model {model}, {args.images} JPEGs in {folder}, {default_threads()} usable cores", file=sys.stderr)
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for round_ in range(args.repeats):
        for name, flags in engines.items():
            load = wait_until_quiet(args.quiet_below)
            r = run_scorer(folder, Path(args.models_dir), model, None, flags, work / f"{name}.csv")
            assert r["scored"] + r["failed"] == args.images, r
            r["load_before"] = load
            runs[name].append(r)
        assert sorted_rows(work / "ray.csv") == sorted_rows(work / "local.csv"), "the engines' rows differ"
        print(
            f"  round {round_ + 1}: "
            + ", ".join(
                f"{n} {rs[-1]['images_per_s']:.0f}/s ({rs[-1]['wall_s']:.1f} s wall)" for n, rs in runs.items()
            ),
            file=sys.stderr,
        )
    results = {
        name: {
            "flags": engines[name],
            "images_per_s": statistics.median(r["images_per_s"] for r in rs),
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "images_per_s_wall": statistics.median(r["images_per_s_wall"] for r in rs),
            "runs": rs,
        }
        for name, rs in runs.items()
    }
    local = results["local"]
    lines = [
        f"score: local engine vs Ray Data (a local Ray instance), {model}, {args.images} CIFAR-10 JPEGs, "
        f"{default_threads()} cores ({cpu_model()}), median of {args.repeats} interleaved rounds",
        "",
        "| engine | flags | images/s (scoring) | vs local | wall s (whole command) | images/s (wall) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {' '.join(r['flags']) or '(defaults)'} | {r['images_per_s']:.0f} | "
            f"{r['images_per_s'] / local['images_per_s']:.2f}x | {r['wall_s']:.1f} | {r['images_per_s_wall']:.0f} |"
        )
    print("\n".join(lines))
    write_json(
        args.out,
        {
            "model": model,
            "images": args.images,
            "cores": default_threads(),
            "engines": results,
            "ray_vs_local_scoring": results["ray"]["images_per_s"] / local["images_per_s"],
            "ray_vs_local_wall": local["wall_s"] / results["ray"]["wall_s"],
            "rows_identical": True,
        },
    )
    return 0


if __name__ == "__main__":
    termination.run(main)
