"""`python -m service score` on every shipped file (or those named), with the CLI's defaults: the model
card's throughput table.

    python bench/bench_score_models.py [--models-dir models] [--model NAME ...] [--images 2000]
        [--repeats 3] [--out FILE.json]

Images: the first N/10 JPEGs of each class of ../shared/data/cifar10-train-jpg.tar.gz (score_runs.py's
extract). Each run is the real CLI in a fresh process, timed by its own summary (walk + read + decode +
inference + writing, model load excluded). Rounds go over every model in turn, so a slow spell of the
shared, virtual machine hits them alike; before each run it waits until the other processes are quiet, and
medians over rounds are reported with the spread. The processor is named in the results, since the
figures differ severalfold between the machines this project runs on (docs/deploy.md). The JSON goes to
--out (by default .cache/bench-results/score-models.json, ignored by git).
"""

from __future__ import annotations

import argparse
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

from inference.errors import UsageError  # noqa: E402
from inference.manifest import load_manifest  # noqa: E402
from training.cli_types import positive_int  # noqa: E402

TTA_VIEWS = {None: 1, "none": 1, "flip": 2, "multicrop": 6}


def _views(source: dict) -> int:
    """Network passes per image: the graph's own views, times each ensemble member's summed over members."""
    members = source.get("members") or [{}]
    return TTA_VIEWS.get(source.get("tta"), 1) * sum(TTA_VIEWS.get(m.get("tta"), 1) for m in members)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_models_dir_argument(p)
    p.add_argument("--model", action="append", help="a model name; repeat for several (default: every model)")
    p.add_argument("--images", type=at_least_ten, default=2_000, help="JPEGs to score, split evenly over the classes")
    p.add_argument("--repeats", type=positive_int, default=3, help="rounds over every model; medians are reported")
    p.add_argument(
        "--quiet-below",
        type=non_negative_float,
        default=0.15,
        help=(
            "before each run wait (up to 3 min) until other processes use fewer cores than this; 0: do not "
            "wait, only record their load"
        ),
    )
    add_archive_argument(p)
    add_work_dir_argument(p)
    add_out_argument(p, "score-models")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    with termination.user_input():
        manifest = load_manifest(args.models_dir)
    entries = {m.name: m for m in manifest.models}
    names = list(dict.fromkeys(args.model)) if args.model else list(entries)  # a name given twice is timed once
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise UsageError(f"no model {', '.join(unknown)} in {args.models_dir} (there: {', '.join(entries)})")
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    folder = extract(Path(args.archive), work, args.images)
    cpu = cpu_model()
    print(f"{len(names)} models, {args.images} JPEGs in {folder}, {args.repeats} rounds; {cpu}", file=sys.stderr)

    rates: dict[str, list[float]] = {n: [] for n in names}
    for round_ in range(args.repeats):
        for name in names:
            load = wait_until_quiet(args.quiet_below)
            r = run_scorer(folder, Path(args.models_dir), name, None, [], work / "preds.csv")
            if r["failed"] or r["rows"] != r["scored"]:
                raise SystemExit(f"error: {name} failed on {r['failed']} images")
            rates[name].append(r["images_per_s"])
            print(f"  round {round_ + 1}: {name} {r['images_per_s']:.0f} images/s (load {load:.2f})", file=sys.stderr)

    results = {}
    for name in names:
        entry = entries[name]
        tta = entry.source.get("tta")
        results[name] = {
            "precision": entry.precision,
            "tta": tta or "none",
            "views_per_image": _views(entry.source),
            "images_per_s": statistics.median(rates[name]),
            "runs": rates[name],
        }
    lines = [
        f"`service score` with its defaults, {args.images} CIFAR-10 JPEGs, median of {args.repeats} rounds; {cpu}",
        "",
        "| model | precision | TTA views | images/s | runs |",
        "|---|---|---:|---:|---|",
    ]
    for name, r in results.items():
        runs = ", ".join(f"{x:.0f}" for x in r["runs"])
        lines.append(f"| {name} | {r['precision']} | {r['views_per_image']} | {r['images_per_s']:.0f} | {runs} |")
    print("\n".join(lines))
    write_json(
        args.out,
        {
            "scorer_command": "python -m service score FOLDER --model NAME --out OUT.csv --no-progress",
            "cpu": cpu,
            "images": args.images,
            "repeats": args.repeats,
            "models": results,
        },
    )
    return 0


if __name__ == "__main__":
    termination.run(main)
