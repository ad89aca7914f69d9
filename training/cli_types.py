"""Argument types shared by the training and export command lines: a bad value is refused by argparse with a
usage line naming the flag, before any data is read or any network trained. What only later code can judge (a
name, a file, a folder) is refused with inference.errors.UsageError: one line and status 2."""

from __future__ import annotations

import argparse
import math
from typing import TypeVar

_Number = TypeVar("_Number", int, float)


# numpy's and torch's integers: a count or seed past them fails later, far from its flag
_INT_LIMIT = 2**63


def _number(text: str, kind: type[_Number]) -> _Number:
    try:
        return _integer(text) if kind is int else kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None


def _integer(text: str) -> int:
    """An integer written as ``--set`` takes one (training/config_yaml.py): 1000, 1_000, 1e3, 1000.0, 0x3e8, 0o1750."""
    try:
        value = int(text, 0) if text.strip().lstrip("+-")[:2].lower() in ("0x", "0o", "0b") else int(text)
    except ValueError:
        number = float(text)  # 1e3: a whole number, as --set epochs=1e3 takes it
        if not number.is_integer():
            raise
        value = int(number)
    if abs(value) >= _INT_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer that fits in 64 bits")
    return value


def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not at least 0")
    return value


def percent(text: str) -> float:
    value = _number(text, float)
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is not a percentage in (0, 100]")
    return value


def significance(text: str) -> float:
    """A significance level: strictly between 0 and 1 (0 would make every interval infinite)."""
    value = _number(text, float)
    if not 0 < value < 1 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"{text} is not a significance level between 0 and 1, such as 0.05")
    return value


def path_text(text: str) -> str:
    """A path given on the command line: an empty one (an unset $OUT in a script) is a mistake, not the default
    folder or the current one."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a path")
    return text


def add_set_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE ...``, repeatable: every --set's overrides count (argparse's plain nargs keeps only
    the last --set, silently dropping the others)."""
    parser.add_argument("--set", nargs="*", action="extend", default=[], metavar="KEY=VALUE", help=help)
