"""Subcommands ``evaluate``, ``compare`` and ``ablate`` of ``python -m training``.

Each handler returns an exit code; what the user gave wrong raises a UsageError (or another typed refusal, or
an OSError), which ``training.__main__.main`` turns into a one-line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inference.errors import UsageError
from inference.interrupts import say_stopped
from inference.messages import counted

from ..cli_types import add_set_option, non_negative_int, path_text, percent, positive_int, significance
from ..data import DATASETS, SPLITS
from .figures import MAX_CLASSES

SPLIT_HELP = f"which samples: {', '.join(SPLITS)} (val = the run's own held-out split)"


def _add_data_args(p: argparse.ArgumentParser, split_default: str | None) -> None:
    g = p.add_argument_group("data (default: the model's own, from its checkpoint, ONNX metadata or report)")
    g.add_argument("--dataset", choices=DATASETS.names(), help="the dataset's kind")
    g.add_argument("--data", dest="root", type=path_text, metavar="ROOT", help="dataset folder or archive")
    g.add_argument(
        "--split",
        default=split_default,
        help=SPLIT_HELP
        + (f" (default: {split_default})" if split_default else " (default: a report's own split, else val)"),
    )
    g.add_argument(
        "--val-size", type=non_negative_int, help="held-out size that defines train/val (default: the run's)"
    )
    g.add_argument("--split-seed", type=non_negative_int, help="seed of the train/val split (default: the run's)")
    g.add_argument(
        "--cache-dir", help='where decoded folder datasets are cached (default: the run\'s; "" for no cache)'
    )


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tta",
        default="none",
        help="test-time augmentation: none, flip (average with the mirror "
        "image) or multicrop (mirror and one-pixel translations, 6 views)",
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="evaluation batch size (default: 256)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")


def _data_kwargs(args: argparse.Namespace) -> dict:
    return {
        "dataset": args.dataset,
        "root": args.root,
        "split": args.split,
        "val_size": args.val_size,
        "split_seed": args.split_seed,
        "cache_dir": args.cache_dir,
    }


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .predictions import graph_temperature

    if args.checkpoint is None and args.onnx is None:
        raise UsageError("give --checkpoint RUN/best.pt or --onnx MODEL.onnx")
    metrics = evaluate(
        checkpoint=args.checkpoint,
        onnx=args.onnx,
        out=args.out,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        max_classes=args.max_classes,
        sample_figures=not args.no_sample_figures,
        **_data_kwargs(args),
    )
    # a calibrated graph's answers are divided by its T: its checkpoint's line shows a loss and ECE before it
    t = graph_temperature(metrics["source"])
    divided = f" (its graph divides by T = {t:.4f})" if t is not None else ""
    print(
        f"top-1 {100 * metrics['top1']:.2f}%  "
        + (f"top-5 {100 * metrics['top5']:.2f}%  " if metrics["top5"] is not None else "")
        + f"loss {metrics['loss']:.4f}  "
        f"ECE {metrics['ece']:.4f}{divided}  ({counted(metrics['num_samples'], 'image')}, "
        f"{metrics['images_per_s'] or 0:.0f} images/s)"
    )
    if metrics.get("calibration"):
        cal = metrics["calibration"]
        print(
            f"calibration: ECE {cal['before']['ece']:.4f} -> {cal['after']['ece']:.4f}, "
            f"NLL {cal['before']['nll']:.4f} -> {cal['after']['nll']:.4f} with temperature {cal['temperature']:.4f} "
            f"({cal['temperature_origin']})"
        )
    print(f"report: {metrics['out_dir']}/report.md")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import check_comparison_out, classify, compare, format_comparison, write_comparison
    from .report_folder import check_writable

    flags = {"root": "--data"}
    given = [flags.get(k, f"--{k.replace('_', '-')}") for k, v in _data_kwargs(args).items() if v is not None]
    given += ["--tta"] if args.tta != "none" else []
    if given and classify(args.a) == classify(args.b) == "report":
        raise UsageError(
            f"{' and '.join(given)} would change how a model is evaluated, and both sides are reports of "
            "evaluations already made: evaluate again with those settings, or compare the models themselves"
        )
    if args.out:  # an --out that can never hold the comparison is said now, not after both models were evaluated
        path = Path(args.out)
        check_writable(path, f"--out {args.out}")
        check_comparison_out(path)
    result = compare(
        args.a,
        args.b,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        alpha=args.alpha,
        **_data_kwargs(args),
    )
    if args.out:
        write_comparison(result, args.out)
    print(json.dumps(result, indent=2) if args.json else format_comparison(result))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..device import resolve_device
    from .ablate import ablate
    from .ablate_table import format_table
    from .ablate_variants import run_kind

    resolve_device(args.device)  # a device this machine lacks is named now, not after the first variant trains
    try:
        result = ablate(
            args.recipe,
            args.vary,
            args.set,
            args.out,
            split=args.split,
            batch_size=args.batch_size,
            device=args.device,
            steps=args.step,
            tta=args.tta,
            target_top1=None if args.target_top1 is None else args.target_top1 / 100,
        )
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as Terminated
        finished = f"finished {run_kind(bool(args.step))}s"  # as the run's progress named them
        return say_stopped(exc, f"interrupted: run the same command again to resume; {finished} are not retrained")
    print(format_table(result))
    print(f"table: {result['out_dir']}/ablation.md and ablation.json")
    return 0


def add_report_commands(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="write an evaluation report for a checkpoint or ONNX model",
        description=(
            "Evaluate a checkpoint (or an exported ONNX model) and write a report folder: "
            "metrics.json (loss, top-1/3/5, "
            "per-class precision/recall/F1, confusion matrix and pairs, ECE, calibration before/after temperature "
            "scaling, throughput), predictions.npz, confusion_matrix.png, per_class_accuracy.png, misclassified.png, "
            "reliability.png, gradcam.png (checkpoints only), "
            "training_curves.png and report.md. By default the model's own validation split is used, so "
            "`python -m training evaluate --checkpoint runs/X/best.pt` is enough."
        ),
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=path_text, help="checkpoint file, or a run folder (uses its best.pt)")
    src.add_argument("--onnx", type=path_text, help="exported ONNX model (class names from its metadata; no Grad-CAM)")
    p.add_argument(
        "--out",
        type=path_text,
        help="report folder (default: RUN/report-<checkpoint>-<split> or reports/<onnx>-<split>, with "
        "-tta-<tta> after it where --tta is not none)",
    )
    p.add_argument(
        "--max-classes",
        type=positive_int,
        default=MAX_CLASSES,
        help=f"above this many classes the plots show only the worst ones (default: {MAX_CLASSES})",
    )
    p.add_argument(
        "--no-sample-figures",
        action="store_true",
        help="leave out misclassified.png and gradcam.png, the figures made of the dataset's own images (as the "
        "reports under models/reports do: the repository holds no copies of the data)",
    )
    _add_data_args(p, "val")
    _add_runtime_args(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser(
        "compare",
        help="compare two models on the same samples (McNemar's test)",
        description=(
            "Accuracy of A and B on the same samples, the difference, and McNemar's test on the paired predictions "
            "(exact binomial below 25 discordant samples, chi-square with continuity correction otherwise). "
            "A and B may each be a checkpoint, a run folder, an ONNX file or an `evaluate` report folder; "
            "reports of different sample sets are refused."
        ),
    )
    p.add_argument("a", type=path_text, help="model or report A (the reference)")
    p.add_argument("b", type=path_text, help="model or report B (the difference is B - A)")
    p.add_argument("--alpha", type=significance, default=0.05, help="significance level (default: 0.05)")
    p.add_argument("--out", type=path_text, help="also write compare.json and compare.md to this folder")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_data_args(p, None)
    _add_runtime_args(p)
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser(
        "ablate",
        help="train and tabulate variants of a recipe (resumable)",
        description=(
            "Train every combination of the --vary values (sequentially; the first combination is the baseline), "
            "evaluate each best.pt, and write ablation.md / ablation.json: top-1, loss, per-class mean difference "
            "vs the baseline, McNemar p-value, time. Re-running skips finished variants and resumes "
            "an interrupted one. "
            "Example: `python -m training ablate --recipe se_resnet18 --vary use_se=true,false --vary dropout=0.5,0 "
            "--vary augment=full,basic`."
        ),
    )
    p.add_argument("--recipe", required=True, type=path_text, help="recipe name or YAML file")
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a setting and its values (repeatable); keys as in `train --set`",
    )
    p.add_argument(
        "--step",
        action="append",
        nargs="+",
        metavar="LABEL KEY=VALUE",
        help="instead of --vary: a label and the settings this step adds (repeatable); each step keeps "
        "the settings of the steps before it, the first is the baseline",
    )
    p.add_argument(
        "--tta",
        default="none",
        help="also evaluate the last variant with this test-time augmentation (flip or multicrop), as a last row",
    )
    p.add_argument(
        "--target-top1",
        type=percent,
        metavar="PERCENT",
        help="also tabulate the epochs each variant took to reach this validation top-1, e.g. 92",
    )
    add_set_option(p, "overrides shared by every variant (repeatable)")
    p.add_argument(
        "--out",
        type=path_text,
        help="ablation folder (default: runs/ablate-<recipe>); one holding another ablation's table is refused",
    )
    p.add_argument("--split", default="val", help=SPLIT_HELP + " (default: val)")
    p.add_argument("--batch-size", type=positive_int, default=256, help="evaluation batch size (default: 256)")
    p.add_argument("--device", default="auto", help="evaluation device: auto, cpu, cuda or cuda:N (default: auto)")
    p.set_defaults(fn=cmd_ablate)
