"""Benchmark `python -m service score` against the raw ONNX Runtime engine on the same model.

    python bench/bench_score.py [--models-dir models] [--model NAME] [--images 10000] [--out FILE.json]
    python bench/bench_score.py --checkpoint runs/NAME/best.pt   # a checkpoint, exported into the work dir first

Images: the first N/10 JPEGs of each class of ../shared/data/cifar10-train-jpg.tar.gz, extracted once into
--work-dir (ignored by git). Raw engine: OnnxClassifier.logits on float32 batches decoded beforehand, one
stream on every core or one single-threaded stream per core, at each of --engine-batch-sizes; whichever
measures fastest at the start (raw_engine.py) is the ceiling the scorer could reach, whatever batch size
the scorer uses. Scorer: the real CLI in a fresh process per run, timed by its own summary (walk + read +
decode + inference + writing; interpreter start and model load are in the wall time). The machine is
shared and virtual (its speed moves between runs a minute apart: docs/measurements.md), so the engine is
measured before the first round and after every round, each setting's ratio is taken against the engine just
before and just after it, and medians over rounds are reported.
Prints a markdown table and writes the figures as JSON to --out (by default .cache/bench-results/score.json,
ignored by git; the committed figures in bench/results/ are written there by naming them).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import raw_engine  # noqa: E402
import termination  # noqa: E402
from arguments import (  # noqa: E402
    add_archive_argument,
    add_models_dir_argument,
    add_out_argument,
    add_work_dir_argument,
    at_least_ten,
    non_negative_float,
    positive_ints,
)
from report_io import cpu_model, write_json  # noqa: E402
from score_runs import extract, run_scorer, wait_until_quiet  # noqa: E402

from inference.errors import UsageError  # noqa: E402
from inference.manifest import ManifestError, ModelEntry, load_manifest  # noqa: E402
from inference.preprocess import decode_image, to_model_input  # noqa: E402
from inference.runtime import default_threads  # noqa: E402
from training.cli_types import path_text, positive_int  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_models_dir_argument(p)
    p.add_argument("--model", help="model name (default: the manifest's default)")
    p.add_argument(
        "--checkpoint",
        type=path_text,
        help="benchmark this checkpoint instead of a model of --models-dir: exported (fp32) into WORK_DIR once, "
        "named --model (default: bench); needs the train extras",
    )
    p.add_argument("--images", type=at_least_ten, default=10_000, help="JPEGs to score, split evenly over the classes")
    p.add_argument(
        "--batch-size", type=positive_int, help="the scorer's --batch-size (default: the scorer's own default)"
    )
    p.add_argument(
        "--engine-batch-sizes",
        type=positive_ints,
        default="64,128,256",
        help=("batch sizes the raw engine is measured at; the fastest (with the fastest shape) is the ceiling"),
    )
    p.add_argument(
        "--configs",
        default="default,w0,w2",
        help=(
            "scorer settings to time, comma-separated: default (the CLI's defaults), wN (--workers N), "
            "wN-tT-sS-bB (--workers N --threads T --streams S --batch-size B; -tT, -sS and -bB optional)"
        ),
    )
    p.add_argument(
        "--repeats", type=positive_int, default=3, help="rounds (every setting, then the engine); medians are reported"
    )
    p.add_argument(
        "--quiet-below",
        type=non_negative_float,
        default=0.15,
        help=(
            "before each measurement wait (up to 3 min) until other processes use fewer cores than this; 0: do not "
            "wait, only record their load"
        ),
    )
    add_archive_argument(p)
    add_work_dir_argument(p)
    add_out_argument(p, "score")
    return p


def resolve_model(args, work: Path) -> tuple[Path, ModelEntry]:
    """(models_dir, the model's manifest entry): --checkpoint's export when it is given, which a models folder
    with a manifest (the default one) does not override."""
    if args.checkpoint:
        # one models folder per checkpoint path: two checkpoints exported under one name would replace each other
        digest = hashlib.sha256(str(Path(args.checkpoint).resolve()).encode()).hexdigest()[:12]
        return _exported(args.checkpoint, args.model or "bench", work / f"models-{digest}")
    try:
        manifest = load_manifest(args.models_dir)
    except ManifestError as exc:
        raise UsageError(f"{exc}; or pass --checkpoint RUN/best.pt") from None
    with termination.user_input():
        entry = manifest.get(args.model)
    return Path(args.models_dir), entry


def _exported(checkpoint: str, name: str, models: Path) -> tuple[Path, ModelEntry]:
    """The checkpoint exported (fp32) into ``models``, once: exported again when the one there under ``name`` came
    from another checkpoint, or from this one before it was last written."""
    from export.pipeline import export_checkpoint

    entry = None
    if (models / "manifest.json").exists():
        entry = next((m for m in load_manifest(models, False).models if m.name == name), None)
    if entry is None or not _exported_from(entry, Path(checkpoint), models):
        with termination.user_input():  # a --checkpoint that is no training checkpoint
            export_checkpoint(checkpoint, name, "fp32", models, max_val_images=1000, replace=entry is not None)
    return models, load_manifest(models).get(name)


def _exported_from(entry: ModelEntry, checkpoint: Path, models: Path) -> bool:
    source = Path(entry.source.get("checkpoint") or "")
    try:
        return source.resolve() == checkpoint.resolve() and (
            (models / entry.file).stat().st_mtime >= checkpoint.stat().st_mtime
        )
    except OSError:  # the checkpoint or the exported file is gone: export it (again), which says what is missing
        return False


class RawEngine:
    """ONNX Runtime on the same images decoded beforehand, batched like the scorer. Every shape of the cores
    is tried once (raw_engine.py) and the best is the ceiling; rounds then measure that shape alone."""

    def __init__(self, onnx_path: str, entry: ModelEntry, folder: Path, batch_sizes: list[int]) -> None:
        files = sorted(folder.rglob("*.jpg"))
        start = time.perf_counter()
        # as the scorer decodes for this model: its input size and fit
        pixels = np.stack([decode_image(f.read_bytes(), entry.input.size, fit=entry.input.fit) for f in files])
        self.decode_per_s = len(files) / (time.perf_counter() - start)
        self.images = len(files)
        self.onnx_path = onnx_path
        self.pixels = to_model_input(pixels)
        self.shapes = raw_engine.ceiling(self.onnx_path, self.pixels, batch_sizes)
        self.best = self.shapes[0]

    def run(self) -> raw_engine.EngineRate:
        best = self.best
        return raw_engine.measure(self.onnx_path, self.pixels, best.batch_size, best.streams, best.threads)


def score_flags(config: str) -> list[str]:
    """default, or wN[-tT][-sS][-bB]: --workers N [--threads T] [--streams S] [--batch-size B]."""
    if config == "default":
        return []
    hit = re.fullmatch(r"w(\d+)(?:-t(\d+))?(?:-s(\d+))?(?:-b(\d+))?", config)
    if not hit:
        raise UsageError(f"bad config {config!r}: use default or wN[-tT][-sS][-bB]")
    flags = ["--workers", hit[1]]
    for flag, value in (("--threads", hit[2]), ("--streams", hit[3]), ("--batch-size", hit[4])):
        if value:
            flags += [flag, value]
    return flags


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    configs = args.configs.split(",")
    for config in configs:
        score_flags(config)  # a bad one is refused before the images are extracted
    models_dir, entry = resolve_model(args, work)
    model, onnx_path = entry.name, str(models_dir / entry.file)
    folder = extract(Path(args.archive), work, args.images)
    scorer_batch = args.batch_size or "the scorer's default"
    print(
        f"model {model} ({onnx_path}), {args.images} JPEGs in {folder}, scorer batch {scorer_batch}, "
        f"{default_threads()} usable cores",
        file=sys.stderr,
    )
    raw = RawEngine(onnx_path, entry, folder, args.engine_batch_sizes)
    raw_rates: list[float] = []
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    # Rounds interleave the engine and every setting, so a slow spell of the (shared, virtual) machine
    # hits them alike: the engine is measured before the first round and after every round, and each
    # round's ratio is taken against the mean of the engine just before and just after it.
    wait_until_quiet(args.quiet_below)
    raw_rates.append(raw.run().images_per_s)
    for round_ in range(args.repeats):
        round_runs = {}
        for config in configs:
            other_load = wait_until_quiet(args.quiet_below)
            r = run_scorer(folder, models_dir, model, args.batch_size, score_flags(config), work / "preds.csv")
            assert r["rows"] == raw.images and r["failed"] == 0, r
            r["load_before"] = other_load
            round_runs[config] = r
        wait_until_quiet(args.quiet_below)
        raw_rates.append(raw.run().images_per_s)
        bracket = (raw_rates[-2] + raw_rates[-1]) / 2
        for config, r in round_runs.items():
            r.update(raw_engine_images_per_s=bracket, fraction_of_raw=r["images_per_s"] / bracket)
            runs[config].append(r)
        print(
            f"  round {round_ + 1}: raw {raw_rates[-2]:.0f} -> {raw_rates[-1]:.0f}, "
            + ", ".join(
                f"{c} {r['images_per_s']:.0f} ({100 * r['fraction_of_raw']:.0f}%)" for c, r in round_runs.items()
            ),
            file=sys.stderr,
        )

    raw_rate = statistics.median(raw_rates)
    results = {}
    for config, rs in runs.items():
        results[config] = {
            "flags": score_flags(config),
            "images_per_s": statistics.median(r["images_per_s"] for r in rs),
            "fraction_of_raw": statistics.median(r["fraction_of_raw"] for r in rs),
            "wall_s": statistics.median(r["wall_s"] for r in rs),
            "runs": rs,
        }
    lines = [
        f"Batch scoring vs raw ONNX Runtime: {model}, {raw.images} CIFAR-10 JPEGs, scorer batch "
        f"{scorer_batch}, {default_threads()} cores ({cpu_model()}), "
        f"median of {args.repeats} interleaved rounds",
        "",
        "| setting | flags | images/s | % of raw engine | wall s (incl. start-up) |",
        "|---|---|---:|---:|---:|",
        f"| raw engine (pre-decoded float32) | {raw.best.label} (best of {len(raw.shapes)} shapes and "
        f"batch sizes) | {raw_rate:.0f} | 100% | |",
    ]
    for config, r in results.items():
        lines.append(
            f"| score {config} | {' '.join(r['flags']) or '(defaults)'} | {r['images_per_s']:.0f} | "
            f"{100 * r['fraction_of_raw']:.1f}% | {r['wall_s']:.2f} |"
        )
    lines += ["", f"Decoding alone (decode_image, one core, this process): {raw.decode_per_s:.0f} images/s."]
    print("\n".join(lines))
    report = {
        "model": model,
        "onnx": onnx_path,
        "images": raw.images,
        "batch_size": args.batch_size,
        "raw_engine": {
            "images_per_s": raw_rate,
            "measurements": raw_rates,
            "best_shape": raw.best.label,
            "shapes": {r.label: r.images_per_s for r in raw.shapes},
        },
        "decode_images_per_s_one_core": raw.decode_per_s,
        "scorer": results,
        "goal": "scorer defaults >= 90% of the raw engine",
        # None where --configs left the defaults out: not measured is not missed
        "goal_met": results["default"]["fraction_of_raw"] >= 0.9 if "default" in results else None,
    }
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    termination.run(main)
