"""An ablation's rows: each variant's figures, and its paired comparison with another row on the same images (McNemar's
test, the interval of the top-1 difference), so a difference is read with its noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..models import count_parameters
from .metrics import mcnemar, paired_difference_interval

CONFIDENCE = 0.95


def _row(
    label: str,
    combo: list[str],
    run_dir: Path,
    index: int,
    status: str,
    metrics: dict,
    summary: dict,
    history: list[dict],
    wall: float,
    source: Any,
    fingerprint: str,
    logits: np.ndarray,
    labels: np.ndarray,
    tta: str,
    target_top1: float | None,
) -> dict[str, Any]:
    return {
        "variant": label,
        "settings": dict(s.split("=", 1) for s in combo),
        "run": str(run_dir),
        "tta": tta,
        "baseline": index == 0 and tta == "none",
        "status": status,
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "loss": metrics["loss"],
        "mean_per_class_accuracy": metrics["mean_per_class_accuracy"],
        "per_class_accuracy": {c["class"]: c["accuracy"] for c in metrics["per_class"]},
        "epochs": summary.get("epochs_run"),
        "best_epoch": summary.get("best", {}).get("epoch"),
        # per-epoch figures are without TTA, so a TTA row has none of its own
        "epochs_to_target": epochs_to_reach(history, target_top1) if tta == "none" else None,
        "train_time_s": summary.get("train_time_s", sum(h.get("train_time_s", 0) for h in history)),
        "wall_time_this_call_s": wall,
        "parameters": count_parameters(source.model),
        "fingerprint": fingerprint,
        "num_samples": int(len(labels)),
        "_correct": logits.argmax(1) == labels,
    }


def _class_deltas(base: dict[str, Any], row: dict[str, Any]) -> dict[str, float]:
    """Each class's accuracy change from the baseline, for the classes both rows measured."""
    ours, theirs = row["per_class_accuracy"], base["per_class_accuracy"]
    return {c: ours[c] - theirs[c] for c in ours if ours[c] is not None and theirs.get(c) is not None}


def largest_class_changes(deltas: dict[str, float]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The class that gained most and the one that lost most; None for a side no class is on (a +0.0 is no gain)."""
    gain = max(deltas, key=deltas.__getitem__, default=None)
    loss = min(deltas, key=deltas.__getitem__, default=None)
    return (
        {"class": gain, "points": 100 * deltas[gain]} if gain is not None and deltas[gain] > 0 else None,
        {"class": loss, "points": 100 * deltas[loss]} if loss is not None and deltas[loss] < 0 else None,
    )


def common_sample_count(rows: list[dict[str, Any]]) -> int | None:
    """The number of images every row was evaluated on; None where variants differ in data (each row has its own)."""
    counts = {row["num_samples"] for row in rows}
    return counts.pop() if len(counts) == 1 else None


def _paired(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, float] | None]:
    """McNemar's test and the 95% interval of B's accuracy minus A's (points), where both rows were
    evaluated on the same samples; (None, None) for a row against itself or on other samples."""
    if a is b or a["fingerprint"] != b["fingerprint"]:
        return None, None
    low, high = paired_difference_interval(a["_correct"], b["_correct"], CONFIDENCE)
    return mcnemar(a["_correct"], b["_correct"]), {"confidence": CONFIDENCE, "low": 100 * low, "high": 100 * high}


def epochs_to_reach(history: list[dict], target_top1: float | None) -> int | None:
    """The first epoch whose validation top-1 (the training run's own, without TTA) reached the target."""
    if target_top1 is None:
        return None
    # The target comes as a percentage divided by 100 (89.34 -> 0.8934000000000001): an accuracy equal to it counts.
    reached = target_top1 - 1e-9
    return next((h["epoch"] for h in history if h.get("val_top1") is not None and h["val_top1"] >= reached), None)
