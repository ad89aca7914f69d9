"""Training throughput (images/s) per model, and the data loader's own throughput for comparison.

    python bench/bench_training.py [--models se_resnet18 resnet18:activation=gelu ...] [--steps 5]
        [--batch-size 128] [--device auto] [--optimizer sgd|adamw|muon] [--image-size 32]
        [--out FILE.json]

A model is a registry name, optionally with constructor arguments after a colon
(``resnet18:attention=se,attention_pool=avg+max``), each value YAML (``airbench94:widths=[128,384,384]``);
``--models all`` is every registered model.

``--image-size`` times smaller images: what an epoch of progressive resizing
(``augment.progressive_sizes``) costs against one at full size.

The loader figure is the augmentation pipeline alone (crop + flip + Cutout on
uint8 tensors): it must be well above every model's step throughput, or the
loader would be the bottleneck.

Prints a markdown table and writes JSON (by default to .cache/bench-results/training.json, ignored by git).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import termination  # noqa: E402
from arguments import add_out_argument  # noqa: E402
from report_io import write_json  # noqa: E402

from inference.errors import UsageError  # noqa: E402
from inference.messages import exception_summary  # noqa: E402
from training.cli_types import positive_int  # noqa: E402
from training.config import OptimConfig  # noqa: E402
from training.config_yaml import YamlMistake, read_yaml  # noqa: E402
from training.data import ImageArrays  # noqa: E402
from training.data.augment import AugmentParams  # noqa: E402
from training.data.loader import TensorLoader  # noqa: E402
from training.device import resolve_device  # noqa: E402
from training.inference import autocast, resolve_bf16  # noqa: E402
from training.models import BUILD_ERRORS, argument_error, create_model, list_models, size_refusal  # noqa: E402
from training.optim import OPTIMIZERS, build_optimizer  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic(n: int) -> ImageArrays:
    rng = np.random.default_rng(0)
    return ImageArrays(
        rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n), [str(i) for i in range(10)]
    )


def loader_throughput(device: torch.device, batch_size: int, batches: int) -> float:
    loader = TensorLoader(
        synthetic(batch_size * batches),
        batch_size,
        device,
        train=True,
        augment=AugmentParams(4, True, 16),
        channels_last=True,
    )
    next(iter(loader))
    synchronize(device)
    start = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    synchronize(device)
    return n / (time.perf_counter() - start)


def parse_spec(spec: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, kwargs). Values are YAML as training reads them: scalars, or flow
    lists and mappings (``widths=[128,384,384]``, ``{x: 1}``), whose commas do not split the arguments. A spec
    that cannot be read is the user's mistake (a UsageError), refused before anything is measured."""
    name, _, args = spec.partition(":")
    kwargs = {}
    for pair in _split_arguments(spec, args):
        key, sign, value = pair.partition("=")
        key = key.strip()
        if not sign or not key:
            raise UsageError(
                f"--models {spec!r}: {pair!r} is not key=value (a model's arguments are NAME:key=value,...)"
            )
        if key in kwargs:  # the last would win silently, as a YAML mapping's would
            raise UsageError(f"--models {spec!r}: {key!r} is given twice: keep one")
        kwargs[key] = _read_value(spec, value)
    return name, kwargs


def _split_arguments(spec: str, args: str) -> list[str]:
    """``args`` split on the commas outside brackets and quoted strings (``name='a,b'``, ``s="]"``: quoting is
    how YAML keeps such text whole); empty pieces (a trailing comma) are dropped."""
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(args):
        char = args[i]
        i += 1
        if char in "'\"" and _opens_quote(args[start : i - 1], depth):
            i = _quote_end(args, i - 1)  # an unclosed quote takes the rest, for YAML to refuse
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
            if depth < 0:
                raise UsageError(f"--models {spec!r}: {char!r} closes no bracket")
        elif char == "," and depth == 0:
            pieces.append(args[start : i - 1])
            start = i
    if depth:
        raise UsageError(f"--models {spec!r}: a bracket is not closed")
    pieces.append(args[start:])
    return [piece for piece in pieces if piece]


def _opens_quote(before: str, depth: int) -> bool:
    """Whether a quote after ``before`` (its argument's text so far) starts a quoted string, as it does where a
    value or a flow item starts; elsewhere it is a plain value's own (``name=it's``)."""
    before = before.rstrip()
    if depth:
        return before[-1:] in ("[", "{", ",", ":")
    return before.endswith("=") and before.count("=") == 1


def _quote_end(text: str, i: int) -> int:
    """The index after the quoted string that starts at ``text[i]``: ``''`` is a quote within single quotes, a
    backslash escapes within double quotes."""
    quote, j = text[i], i + 1
    while j < len(text):
        if quote == '"' and text[j] == "\\":
            j += 2
        elif text[j] != quote:
            j += 1
        elif quote == "'" and text[j + 1 : j + 2] == "'":
            j += 2
        else:
            return j + 1
    return len(text)


def _read_value(spec: str, text: str) -> Any:
    try:
        return read_yaml(text)
    except YamlMistake as exc:  # YAML that parses, but not as meant (a key twice, {width:8})
        raise UsageError(f"--models {spec!r}: value {text!r}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(
            f"--models {spec!r}: value {text!r} is not YAML ({exception_summary(exc, lines=2)}): quote it, or "
            "close its brackets"
        ) from None


def train_throughput(
    spec: str,
    device: torch.device,
    batch_size: int,
    steps: int,
    bf16: bool,
    warmup: int = 2,
    optimizer: str = "sgd",
    image_size: int = 32,
) -> float:
    name, kwargs = parse_spec(spec)
    with termination.user_input():  # an unknown model or argument in --models
        model = create_model(name, **kwargs)
    model = model.to(device).to(memory_format=torch.channels_last).train()
    x = torch.rand(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    opt = build_optimizer(model, OptimConfig(name=optimizer, lr=0.01, momentum=0.9, nesterov=True), x[:2])
    y = torch.randint(0, 10, (batch_size,), device=device)
    for i in range(warmup + steps):
        if i == warmup:
            synchronize(device)
            start = time.perf_counter()
        with autocast(device, bf16):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - start)


def check_image_size(spec: str, image_size: int) -> None:
    """A side the network pools down to nothing is refused before anything is measured, as training refuses its
    data.image_size."""
    name, kwargs = parse_spec(spec)
    with termination.user_input():  # an unknown model or argument in --models
        try:
            model = create_model(name, **kwargs).eval()
        except UsageError:  # typed already (an unknown model or argument): its message is the one to say
            raise
        except BUILD_ERRORS as exc:
            # a value the network refuses (dirac=maybe): named with its arguments, as training's preflight does
            raise UsageError(argument_error(name, kwargs, exc)) from exc
    refused = size_refusal(model, image_size)
    if refused is not None:
        raise UsageError(f"model {spec!r} cannot take {image_size}x{image_size} images (--image-size): {refused}")


def training_gflop_per_image(spec: str, image_size: int = 32) -> float:
    """Forward and backward FLOPs of one training image, counted by PyTorch's FLOP counter (a multiply-add is
    2 FLOPs) on a batch of 2 in float32: what the images/s figure is to be read against (images/s x GFLOP
    per image = GFLOP/s achieved, against the CPU's peak)."""
    from torch.utils.flop_counter import FlopCounterMode

    name, kwargs = parse_spec(spec)
    model = create_model(name, **kwargs).train()
    with FlopCounterMode(display=False) as counter:
        model(torch.rand(2, 3, image_size, image_size)).sum().backward()
    return counter.get_total_flops() / 2 / 1e9


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--models",
        nargs="+",
        default=["airbench94", "resnet9_half", "se_resnet18", "wrn_16_4", "wrn_16_8", "wrn_28_10"],
        help="registry names, each optionally NAME:key=value,... (constructor arguments, YAML values such as "
        "widths=[128,384,384]); all: every model",
    )
    p.add_argument("--steps", type=positive_int, default=5, help="timed training steps per model, after 2 warm-up")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per training step")
    p.add_argument("--device", default="auto", help="auto (CUDA when there is a GPU), cpu, cuda or cuda:N")
    p.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="bf16 autocast; auto: only where the hardware has it (as training's default)",
    )
    p.add_argument(
        "--optimizer",
        choices=list(OPTIMIZERS),
        default="sgd",
        help="the optimizer whose step is timed with the model's (muon: Newton-Schulz per filter bank)",
    )
    p.add_argument(
        "--image-size",
        type=positive_int,
        default=32,
        help="side of the training images (smaller: progressive resizing)",
    )
    add_out_argument(p, "training")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.models == ["all"]:
        args.models = list_models()
    with termination.user_input():  # a device that is none, or not on this machine
        device = resolve_device(args.device)
    bf16 = resolve_bf16({"auto": "auto", "on": True, "off": False}[args.bf16], device)
    for name in args.models:
        check_image_size(name, args.image_size)
    results = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "bf16": bf16,
        "optimizer": args.optimizer,
        "loader_images_per_s": loader_throughput(device, args.batch_size, 50),
        "models": {},
        "training_gflop_per_image": {},
    }
    print(
        f"| model | train images/s ({device}, batch {args.batch_size}, {args.image_size}x{args.image_size}, "
        f"bf16={bf16}, {args.optimizer}) "
        "| GFLOP per training image | GFLOP/s |\n|---|---|---|---|"
    )
    for name in args.models:
        ips = train_throughput(
            name, device, args.batch_size, args.steps, bf16, optimizer=args.optimizer, image_size=args.image_size
        )
        gflop = training_gflop_per_image(name, args.image_size)
        results["models"][name] = ips
        results["training_gflop_per_image"][name] = gflop
        print(f"| {name} | {ips:,.0f} | {gflop:.3f} | {ips * gflop:,.0f} |", flush=True)
    print(f"| data loader alone (crop+flip+cutout) | {results['loader_images_per_s']:,.0f} | | |")
    write_json(args.out, results)
    return 0


if __name__ == "__main__":
    termination.run(main)
