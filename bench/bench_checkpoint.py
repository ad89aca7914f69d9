"""What the trainer's end-of-epoch save costs per recipe: the whole training state written (last.pt; best.pt
too on a new best) and the curves drawn, the work `train.checkpoint_every` skips on the other epochs.

    python bench/bench_checkpoint.py [--recipes se_resnet18_gpu wrn_16_4_gpu ...] [--epochs 100] [--repeats 5]
        [--out FILE.json]

Each recipe's real Trainer is built on a small generated image folder (the state's size depends on the network
and optimizer, not on the data), given a history of ``--epochs`` records, and saved ``--repeats`` times: the
median seconds of one checkpoint file (``torch.save`` + fsync) and of the curves, and the file's size. Compare
them with an epoch's training time (bench_training.py) to see what saving every epoch costs a run. The JSON goes
to --out (by default .cache/bench-results/checkpoint.json, ignored by git).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import termination  # noqa: E402
import torch  # noqa: E402
from arguments import add_out_argument  # noqa: E402
from report_io import write_json  # noqa: E402

from training.checkpoint import save_checkpoint  # noqa: E402
from training.cli_types import positive_int  # noqa: E402
from training.config_recipes import build_config  # noqa: E402
from training.engine import Trainer  # noqa: E402
from training.plots import CurveInfo, plot_training_curves  # noqa: E402


def image_folder(root: Path, classes: int = 10, per_class: int = 205) -> Path:
    """Enough images for the largest recipe batch (2,000) besides the validation split."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def history(epochs: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "train_acc": 1 - 0.5 / e,
            "val_loss": 1.5 / e,
            "val_top1": 1 - 0.6 / e,
            "val_top5": 1 - 0.1 / e,
            "lr": 0.1 * (1 - e / (epochs + 1)),
            "train_time_s": 2.0,
        }
        for e in range(1, epochs + 1)
    ]


def measure(recipe: str, folder: Path, work: Path, epochs: int, repeats: int) -> dict:
    sets = [
        "data.dataset=folder",
        f"data.root={folder}",
        "data.val_size=10",
        f"data.cache_dir={work / 'cache'}",
        f"epochs={epochs}",
        # the recipe's warmup would refuse a history no longer than it, and changes nothing saved but a number
        "schedule.warmup_epochs=0",
        "threads=2",
        "device=cpu",
    ]
    with termination.user_input():
        config = build_config(recipe, sets)
    trainer = Trainer(config, work / recipe)
    trainer.out_dir.mkdir(parents=True, exist_ok=True)
    trainer.history = history(epochs)
    trainer.epoch = epochs
    _take_a_step(trainer.optimizer)
    info = CurveInfo.from_config(trainer.config.model_dump(mode="json"))
    saves, plots = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        save_checkpoint(trainer.state(), trainer.out_dir / "last.pt")
        saves.append(time.perf_counter() - start)
        start = time.perf_counter()
        plot_training_curves(trainer.history, trainer.out_dir / "training_curves.png", info, recipe)
        plots.append(time.perf_counter() - start)
    return {
        "model": trainer.config.model.name,
        "checkpoint_mb": round((trainer.out_dir / "last.pt").stat().st_size / 2**20, 1),
        "checkpoint_s": round(statistics.median(saves), 3),
        "curves_s": round(statistics.median(plots), 3),
        "checkpoint_runs_s": [round(s, 3) for s in saves],
        "curves_runs_s": [round(s, 3) for s in plots],
    }


def _take_a_step(optimizer: torch.optim.Optimizer) -> None:
    """One step on zero gradients: an optimizer makes its per-parameter state (SGD's momentum buffers, which about
    double a checkpoint) at its first step, and a trained run's state has it."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=["se_resnet18_gpu", "wrn_16_4_gpu", "airbench94_muon"],
        help="built-in recipes whose trainer state is saved",
    )
    parser.add_argument("--epochs", type=positive_int, default=100, help="records in the history the curves draw")
    parser.add_argument("--repeats", type=positive_int, default=5, help="saves per recipe; the median is reported")
    add_out_argument(parser, "checkpoint")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    results: dict = {"epochs": args.epochs, "repeats": args.repeats, "recipes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = image_folder(Path(tmp) / "images")
        for recipe in args.recipes:
            row = measure(recipe, folder, Path(tmp), args.epochs, args.repeats)
            results["recipes"][recipe] = row
            print(
                f"{recipe:20s} {row['model']:14s} checkpoint {row['checkpoint_mb']:6.1f} MiB "
                f"{row['checkpoint_s']:.3f} s, curves {row['curves_s']:.3f} s",
                flush=True,
            )
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    termination.run(main)
