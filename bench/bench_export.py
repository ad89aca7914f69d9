"""ONNX Runtime CPU throughput of a shipped model's FP32 and INT8 files against PyTorch eager on its checkpoint.

python bench/bench_export.py [--fp32 resnet9-airbench94-cifar10] [--int8 resnet9-airbench94-cifar10-int8]
    [--batch-sizes 1 64] [--seconds 3] [--out FILE.json]

Prints a markdown table and writes JSON (by default to .cache/bench-results/export.json, ignored by git).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import termination  # noqa: E402
from arguments import add_models_dir_argument, add_out_argument, positive_float  # noqa: E402
from report_io import write_json  # noqa: E402

from export.sources import from_project  # noqa: E402
from inference.errors import UsageError  # noqa: E402
from inference.manifest import ModelEntry, load_manifest  # noqa: E402
from inference.runtime import OnnxClassifier  # noqa: E402
from training.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from training.cli_types import positive_int  # noqa: E402


def images_per_s(run, batch: np.ndarray, seconds: float) -> float:
    run(batch)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def eager_checkpoint(entry: ModelEntry, models_dir: str) -> dict:
    """The checkpoint the FP32 model was exported from, which PyTorch eager runs, found as `export verify` finds
    it. Training runs are not shipped, so it is often not here: said with what to do, not only that it is
    missing."""
    named = entry.source.get("checkpoint")
    try:
        return load_checkpoint(from_project(named or "-", Path(models_dir)))
    except FileNotFoundError:
        raise UsageError(
            f"--fp32 {entry.name} was exported from {named or 'no checkpoint'}, which is not here (PyTorch eager "
            "runs it): train or copy that run, or name with --fp32 a model exported from a checkpoint you have"
        ) from None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_models_dir_argument(p)
    p.add_argument(
        "--fp32",
        default="resnet9-airbench94-cifar10",
        help="the FP32 model; its manifest entry's source checkpoint is the PyTorch eager one",
    )
    p.add_argument("--int8", default="resnet9-airbench94-cifar10-int8", help="the INT8 model")
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", default=[1, 64], help="batch sizes to time")
    p.add_argument("--seconds", type=positive_float, default=3.0, help="seconds of runs per engine and batch size")
    add_out_argument(p, "export")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    with termination.user_input():  # an unknown model, or one exported from no checkpoint this project reads
        manifest = load_manifest(args.models_dir)
        fp32, int8 = manifest.get(args.fp32), manifest.get(args.int8)
        model = model_from_checkpoint(eager_checkpoint(fp32, args.models_dir))
    engines = {
        "pytorch_eager_fp32": lambda x: model(torch.from_numpy(x)),
        "ort_fp32": OnnxClassifier(Path(args.models_dir) / fp32.file, device="cpu").logits,
        "ort_int8": OnnxClassifier(Path(args.models_dir) / int8.file, device="cpu").logits,
    }
    rng = np.random.default_rng(0)
    # the models by name: the defaults change as models are shipped, and a default is not on the command line
    results: dict = {
        "models": {"fp32": fp32.name, "int8": int8.name},
        "seconds": args.seconds,
        "threads": torch.get_num_threads(),
        "batch_sizes": {},
    }
    print("| batch | PyTorch eager | ORT FP32 | ORT INT8 | INT8/FP32 | FP32 ORT/PyTorch |\n|---|---|---|---|---|---|")
    with torch.inference_mode():
        for bs in args.batch_sizes:
            batch = rng.random((bs, 3, *fp32.input.size), dtype=np.float32)
            r = {name: images_per_s(run, batch, args.seconds) for name, run in engines.items()}
            results["batch_sizes"][bs] = r
            print(
                f"| {bs} | {r['pytorch_eager_fp32']:,.0f} | {r['ort_fp32']:,.0f} | {r['ort_int8']:,.0f} | "
                f"{r['ort_int8'] / r['ort_fp32']:.2f}x | {r['ort_fp32'] / r['pytorch_eager_fp32']:.2f}x |",
                flush=True,
            )
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    termination.run(main)
