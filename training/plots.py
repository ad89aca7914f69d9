"""Figures, rendered headless with matplotlib's Agg backend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_training_curves(history: list[dict], path: Path, label_smoothing: float | None = 0.0) -> None:
    """``label_smoothing``: the run's (None: not known). A smoothed training loss has a floor well above 0 and
    is not the validation loss's quantity, so the legend says which it is."""
    if not history:
        return
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if label_smoothing is None:
        train = "train (label-smoothed if its recipe smooths)"
    elif label_smoothing:
        train = f"train (label-smoothed {label_smoothing:g}: not comparable)"
    else:
        train = "train"
    axes[0].plot(epochs, [h["train_loss"] for h in history], label=train)
    if history[0].get("val_loss") is not None:
        axes[0].plot(epochs, [h["val_loss"] for h in history], label="validation")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [100 * h["train_acc"] for h in history], label="train")
    if history[0].get("val_top1") is not None:
        axes[1].plot(epochs, [100 * h["val_top1"] for h in history], label="validation top-1")
    axes[1].set_title("accuracy (%)")
    axes[2].plot(epochs, [h["lr"] for h in history])
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize="small")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_compared_curves(histories: dict[str, list[dict]], path: Path) -> None:
    """Two or more training runs on shared axes: validation top-1 and training loss by epoch."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        if history and history[0].get("val_top1") is not None:
            axes[0].plot(epochs, [100 * h["val_top1"] for h in history], marker=".", label=name)
        axes[1].plot(epochs, [h["train_loss"] for h in history], marker=".", label=name)
    axes[0].set_title("validation top-1 (%), no TTA")
    axes[1].set_title("training loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
