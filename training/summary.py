"""What a run folder says of where its run stands: history.json and the training curves, summary.json, and whether
the run has finished (its epochs trained, or stopped early)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from inference.files import write_text_atomic

from .checkpoint import SUMMARY_FILE
from .config import Config
from .plots import CurveInfo, plot_training_curves

log = logging.getLogger("training")


def patience_exhausted(config: Config, bad_epochs: int) -> bool:
    """Whether early stopping has ended the run: as many epochs without a better one as its patience."""
    patience = config.train.early_stop_patience
    return bool(patience and bad_epochs >= patience)


def write_progress(out_dir: Path, history: list[dict[str, Any]], config: dict[str, Any]) -> None:
    """history.json and the curves of a run that has trained ``history`` (``config``: its configuration, as its
    checkpoint keeps it)."""
    write_text_atomic(out_dir / "history.json", json.dumps(history, indent=2))
    plot_training_curves(
        history,
        out_dir / "training_curves.png",
        CurveInfo.from_config(config),
        f"{config['model']['name']} · run {out_dir.name}",
    )


def run_summary(out_dir: Path, standing: dict[str, Any], stopped_early: bool, validated: bool) -> dict[str, Any]:
    """What summary.json says of a run standing where ``standing`` (a checkpoint, or its keys) says. Without a
    validation split the epochs are ranked by training accuracy; the checkpoint keeps that score under
    ``val_top1`` for the code that ranks, but a summary must not call it a validation figure."""
    best = standing["best"]
    return {
        "run": str(out_dir),
        "epochs_run": standing["epoch"],
        "best": best if validated else {"train_acc": best["val_top1"], "epoch": best["epoch"]},
        "stopped_early": stopped_early,
        "train_time_s": sum(h["train_time_s"] for h in standing["history"]),
    }


def left_to_train(config: Config, standing: dict[str, Any]) -> bool:
    """Whether a run at ``standing`` (a checkpoint) has epochs left to train under ``config``: neither all its
    epochs trained nor stopped early."""
    return standing["epoch"] < config.train.epochs and not patience_exhausted(config, standing.get("bad_epochs", 0))


def no_better_epoch(config: Config) -> str:
    """Why early stopping ended a run, as its settings count: with a min_delta, epochs better by less than it
    count as none better (best.pt may be the last epoch), so "no better epoch" would be untrue."""
    delta = config.train.early_stop_min_delta
    return f"no epoch better by early_stop_min_delta {delta:g}" if delta else "no better epoch"


def finished_summary(
    out_dir: Path, config: Config, standing: dict[str, Any], validated: bool, main: bool
) -> dict[str, Any] | None:
    """The summary of a run with nothing left to train (its epochs trained, or stopped early), said as such; None
    where epochs are left. A run that stopped early has finished: resuming it must not train on, nor rewrite its
    files."""
    if left_to_train(config, standing):
        return None
    stop = patience_exhausted(config, standing.get("bad_epochs", 0))
    epochs = config.train.epochs
    if stop:
        log.info("%s stopped early (%s for its patience): nothing left to train", out_dir, no_better_epoch(config))
    else:
        trained = f"{epochs} epoch{'s' if epochs != 1 else ''}"
        log.info("%s has trained its %s: nothing left to train (more: resume --epochs)", out_dir, trained)
    summary = run_summary(out_dir, standing, stop, validated)
    if main and not (out_dir / SUMMARY_FILE).is_file():
        # stopped between its last checkpoint and its summary: what ablate and ensembles read is written
        write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary
