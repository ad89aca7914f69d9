"""Argument types and defaults the benchmarks share, beside training/cli_types.py's: a bad value is refused by
argparse with a usage line naming the flag, before any image is extracted, any server started or anything
measured."""

from __future__ import annotations

import argparse
import math
import tarfile
from pathlib import Path
from urllib.parse import urlparse

from inference.errors import UsageError
from service.settings import SETTINGS
from training.cli_types import positive_int

# --archive's default: the CIFAR-10 training JPEGs beside the checkout (../shared/data, as CI has them).
ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpg.tar.gz"


def open_archive(archive: Path) -> tarfile.TarFile:
    """--archive, opened for reading: a file that is no gzipped tar is the user's mistake, not a bug."""
    try:
        return tarfile.open(archive, "r:gz")
    except tarfile.ReadError as exc:
        raise UsageError(f"{archive}: not a .tar.gz archive ({exc}); --archive takes the CIFAR-10 JPEGs") from None


def no_cifar_images(archive: Path) -> UsageError:
    return UsageError(f"{archive} holds no cifar10/train/CLASS/N.jpg; --archive takes the CIFAR-10 JPEGs")


def at_least_ten(text: str) -> int:
    """--images: a tenth of it is taken from each class, so fewer than ten would be none at all, and a count that is
    no multiple of ten would be scored as the multiple below it while reported as given."""
    value = positive_int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"{text} is below 10 (a tenth of the images comes from each class)")
    if value % 10:
        raise argparse.ArgumentTypeError(
            f"{text} is not a multiple of 10 (a tenth of the images comes from each class)"
        )
    return value


def http_url(text: str) -> str:
    """--url: the load generator speaks plain HTTP/1.1 to the routes at the server's root."""
    parsed = urlparse(text)
    try:
        port = parsed.port
    except ValueError:  # a port that is no number, or out of range
        port = -1
    if parsed.scheme != "http" or not parsed.hostname or port == -1 or parsed.path not in ("", "/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not http://HOST[:PORT] (plain HTTP, no path)")
    return text


def max_batch_size(text: str) -> int:
    """The service's --max-batch-size, refused here as the service would refuse it, before a server is started."""
    value = positive_int(text)
    least = SETTINGS["max_batch_size"].minimum or 1
    if value < least:
        raise argparse.ArgumentTypeError(f"{text} is below {least}, the least the service takes")
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
