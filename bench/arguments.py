"""Argument types the benchmarks share, beside training/cli_types.py's: a bad value is refused by argparse with a
usage line naming the flag, before any image is extracted, any server started or anything measured."""

from __future__ import annotations

import argparse
import math

from training.cli_types import positive_int


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
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"{part} is not a number above 0")
        values.append(value)
    return values
