"""How optimistic an in-sample "after temperature" ECE is: for each report of a calibrated model, fit T on one
half of its validation images and measure ECE on the other half, against T fitted on that half itself.

Reads only a report folder's predictions.npz and metrics.json (no model, no data), so it runs anywhere:

    python bench/calibration_crossfit.py models/reports/resnet9-airbench94-cifar10-int8 ... [--out FILE.json]

The JSON goes to --out (by default .cache/bench-results/calibration-crossfit.json, ignored by git).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import termination  # noqa: E402
from arguments import add_out_argument  # noqa: E402
from report_io import write_json  # noqa: E402

from training.cli_types import non_negative_int, path_text, positive_int  # noqa: E402
from training.reports.calibration import fit_temperature  # noqa: E402
from training.reports.metrics import expected_calibration_error, softmax  # noqa: E402
from training.reports.predictions import load_predictions, logits_before_temperature  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", type=path_text, help="report folders (python -m training evaluate --out ...)")
    p.add_argument("--splits", type=positive_int, default=4, help="random halvings, each measured both ways")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first halving")
    add_out_argument(p, "calibration-crossfit")
    return p


def raw_logits(report: Path) -> tuple[np.ndarray, np.ndarray]:
    """The report's logits before any temperature (a calibrated graph's outputs are already divided by it)."""
    loaded = load_predictions(report)
    return logits_before_temperature(loaded).astype(np.float64), loaded["labels"]


def ece(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return expected_calibration_error(softmax(logits / t), labels)


def crossfit(logits: np.ndarray, labels: np.ndarray, splits: int, seed: int) -> dict:
    """Held-out minus in-sample ECE on each half: T fitted on the other half against T fitted on this one."""
    gaps = []
    for s in range(splits):
        first = np.random.default_rng(seed + s).permutation(len(labels)) < len(labels) // 2
        for measured, fitted in ((first, ~first), (~first, first)):
            own = fit_temperature(logits[measured], labels[measured])
            other = fit_temperature(logits[fitted], labels[fitted])
            gaps.append(ece(logits[measured], labels[measured], other) - ece(logits[measured], labels[measured], own))
    return {
        "images": int(len(labels)),
        "gaps": [round(g, 5) for g in gaps],
        "largest_gap": round(max(gaps), 5),
        "mean_gap": round(float(np.mean(gaps)), 5),
        "in_sample_ece": round(ece(logits, labels, fit_temperature(logits, labels)), 5),
    }


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    results = {}
    for folder in args.reports:
        with termination.user_input():  # a folder that holds no report
            logits, labels = raw_logits(Path(folder))
        results[Path(folder).name] = found = crossfit(logits, labels, args.splits, args.seed)
        print(
            f"{Path(folder).name}: in-sample ECE {found['in_sample_ece']:.4f}; held-out minus in-sample on "
            f"{found['images'] // 2}-image halves: mean {found['mean_gap']:+.4f}, largest {found['largest_gap']:+.4f}"
        )
    write_json(
        args.out,
        {"method": __doc__.split("\n\n")[0], "splits": args.splits, "reports": results},
    )
    return 0


if __name__ == "__main__":
    termination.run(main)
