"""Train the mission's networks on one GPU inside a fixed time budget, and bring back what the CPU needs.

One call of the device tool (a lent H200, 15 minutes in all) runs this once:

    python3 scripts/gpu_zoo.py --data DATA.tar.gz --out $OUT --budget 440

The call carries the data archive and the pydantic wheels the device lacks in an ignored folder (`.gpu/`, named in
`carry`), and the shipped .onnx files are moved aside for it: with them the repository is over the 64 MiB a call
takes.

It times a training step of each network first and sizes the epochs to the budget, then trains one after
another, so a run that overruns costs the last network, not all of them: SE-ResNet18, WRN-16-4, then the SE
ablation (ResNet-18 with the SE-ResNet18 run's recipe and epochs) only if its measured time still fits.
Each shipped network's best checkpoint comes back without its optimiser state (what `python -m export`
reads), split under the tool's 16 MiB per file; the ablation's two reports come back for
`python -m training compare`. Everything else (export, verification, reports) runs on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import torch

PART_BYTES = 15 * 2**20
# Wall time per epoch over the timed forward/backward steps (augmentation, evaluation, checkpoints, curves), as
# the H200 runs that saved every epoch measured it (docs/fast-training.md, "On a GPU"). Saving less should lower
# it, but until a run measures that the factor stands: a run that ends early wastes device time, one that
# overruns loses a network.
OVERHEAD = 2.1
# Epochs between whole-state checkpoints and curves (a small share of an epoch of these networks on the H200:
# docs/fast-training.md, "On a GPU"); the device run is never resumed, so fewer lose nothing.
CHECKPOINT_EVERY = 10
# (run name, recipe, overrides): the order is the priority.
RUNS = (
    ("se_resnet18", "se_resnet18_gpu", ()),
    ("wrn_16_4", "wrn_16_4_gpu", ()),
    ("resnet18", "se_resnet18_gpu", ("model.args.use_se=false",)),
)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def step_seconds(recipe: str, sets: tuple[str, ...], batch: int, device: torch.device) -> float:
    """Seconds per bf16 channels_last training step of the recipe's network at this batch size, after warm-up."""
    from training.config_recipes import build_config
    from training.models import create_model

    config = build_config(recipe, list(sets))
    model = create_model(config.model.name, 10, **config.model.args).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,), device=device)
    for i in range(25):
        if i == 5:
            torch.cuda.synchronize(device)
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / 20


def train(
    run: str, recipe: str, sets: tuple[str, ...], epochs: int, data: str, folder: Path, extra: list[str]
) -> float:
    cmd = [
        sys.executable,
        "-m",
        "training",
        "train",
        "--recipe",
        recipe,
        "--out",
        str(folder / run),
        "--force",
        "--set",
        f"epochs={epochs}",
        f"data.root={data}",
        f"checkpoint_every={CHECKPOINT_EVERY}",
        *sets,
        *extra,
    ]
    log("$ " + " ".join(cmd))
    start = time.time()
    with open(folder / f"{run}.log", "w") as out:
        code = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
    took = time.time() - start
    best = json.loads((folder / run / "summary.json").read_text()).get("best") if code == 0 else None
    log(f"{run}: exit {code}, {took:.0f} s, best {best}")
    if code != 0:
        raise SystemExit(f"{run} failed: see {folder / run}.log")
    return took


def evaluate(run: str, folder: Path, out: Path, tta: str, extra: list[str]) -> None:
    report = out / f"{run}-{tta}"
    cmd = [
        sys.executable,
        "-m",
        "training",
        "evaluate",
        "--checkpoint",
        str(folder / run),
        "--tta",
        tta,
        "--no-sample-figures",
        "--out",
        str(report),
        *extra,
    ]
    log("$ " + " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def slim(run: str, folder: Path, out: Path) -> None:
    """best.pt without the optimiser and random states, in parts small enough to come back."""
    ckpt = torch.load(folder / run / "best.pt", map_location="cpu", weights_only=True)
    for key in ("optimizer", "rng_cpu", "rng_cuda", "rng_ranks", "lookahead"):
        ckpt.pop(key, None)
    whole = out / f"{run}.pt"
    torch.save(ckpt, whole)
    blob = whole.read_bytes()
    if len(blob) > PART_BYTES:
        whole.unlink()
        for i in range(math.ceil(len(blob) / PART_BYTES)):
            (out / f"{run}.pt.part{i:02d}").write_bytes(blob[i * PART_BYTES : (i + 1) * PART_BYTES])
    log(f"{run}: {len(blob)} bytes back, sha256 {hashlib.sha256(blob).hexdigest()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--runs", type=Path, default=Path("/tmp/gpu_runs"))
    parser.add_argument("--budget", type=float, required=True, help="seconds for all the training")
    parser.add_argument("--max-epochs", type=int, default=100)
    parser.add_argument("--epochs", type=int, help="skip the timing and train this many (a CPU smoke run)")
    parser.add_argument("--set", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--eval-args", default="", help="more evaluate flags, one string (smoke runs)")
    args = parser.parse_args()
    deadline = time.time() + args.budget
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)

    if args.epochs:
        epochs = args.epochs
    else:
        device = torch.device("cuda")
        log(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
        per_epoch = {}
        for run, recipe, sets in RUNS:
            per_epoch[run] = step_seconds(recipe, sets, 512, device) * (45_000 // 512) * OVERHEAD
            log(f"{run}: about {per_epoch[run]:.2f} s per epoch")
        epochs = min(args.max_epochs, int((deadline - time.time()) / sum(per_epoch.values())))
        if epochs < 10:
            raise SystemExit(f"{epochs} epochs fit the budget: too few to be worth it")
    log(f"{epochs} epochs each")

    took = {"se_resnet18": train(*RUNS[0], epochs, args.data, args.runs, args.set)}
    slim("se_resnet18", args.runs, args.out)
    # WRN-16-4 takes what the ablation leaves, judged by what SE-ResNet18 really took.
    wrn_epochs = epochs
    if not args.epochs:
        left = deadline - time.time() - took["se_resnet18"] * 1.05
        wrn_epochs = max(10, min(args.max_epochs, int(left / per_epoch["wrn_16_4"])))
    took["wrn_16_4"] = train(*RUNS[1], wrn_epochs, args.data, args.runs, args.set)
    slim("wrn_16_4", args.runs, args.out)
    reports = args.runs / "reports"  # under $OUT every file would come back on its own
    if args.epochs or deadline - time.time() > took["se_resnet18"] * 1.05:
        took["resnet18"] = train(*RUNS[2], epochs, args.data, args.runs, args.set)
        for run in ("se_resnet18", "resnet18"):
            for tta in ("none", "multicrop"):
                evaluate(run, args.runs, reports, tta, shlex.split(args.eval_args))
    else:
        log("no time left for the SE ablation")
    for run in took:
        (reports / run).mkdir(parents=True, exist_ok=True)
        for name in ("history.json", "config.yaml", "summary.json", "training_curves.png"):
            if (args.runs / run / name).exists():
                (reports / run / name).write_bytes((args.runs / run / name).read_bytes())
    (reports / "took.json").write_text(json.dumps({"epochs": epochs, "wrn_epochs": wrn_epochs, "seconds": took}))
    with tarfile.open(args.out / "reports.tar.gz", "w:gz") as tar:
        tar.add(reports, arcname="reports")
        for log_file in args.runs.glob("*.log"):
            tar.add(log_file, arcname=f"logs/{log_file.name}")
    log("done")


if __name__ == "__main__":
    main()
