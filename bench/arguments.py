"""Argument types and defaults the benchmarks share, beside training/cli_types.py's: a bad value is refused by
argparse with a usage line naming the flag, before any image is extracted, any server started or anything
measured."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from training.cli_types import positive_int

# --archive's default: the CIFAR-10 training JPEGs beside the checkout (../shared/data, as CI has them).
ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpg.tar.gz"


def at_least_ten(text: str) -> int:
    """--images: a tenth of it is taken from each class, so fewer than ten would be none at all."""
    value = positive_int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"{text} is below 10 (a tenth of the images comes from each class)")
    return value


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of counts."""
    return [positive_int(part) for part in text.split(",")]


def positive_floats(text: str) -> list[float]:
    """A comma-separated list of sizes, each a finite number above 0."""
    return [positive_float(part) for part in text.split(",")]


def positive_float(text: str) -> float:
    """A length of time or a size: a finite number above 0."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number above 0")
    return value


def non_negative_float(text: str) -> float:
    """A length of time that may be none (a warm-up) or a threshold that may be 0: a finite number, at least 0."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of at least 0")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    # nan would compare false with every deadline and inf never end a timed loop
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value
