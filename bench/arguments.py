"""Argument types and defaults the benchmarks share, beside training/cli_types.py's: a bad value is refused by
argparse with a usage line naming the flag, before any image is extracted, any server started or anything
measured."""

from __future__ import annotations

import argparse
import math
import os
import tarfile
from pathlib import Path
from urllib.parse import urlparse

from report_io import default_out

from inference.errors import UsageError
from inference.files import file_in_the_way
from service.settings import SETTINGS
from training.cli_types import non_negative_int, path_text, positive_int

ROOT = Path(__file__).resolve().parents[1]
# --archive's default: the CIFAR-10 training JPEGs beside the checkout (../shared/data, as CI has them).
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-train-jpg.tar.gz"


def json_out(text: str) -> Path:
    """--out: refused before anything is measured where the results could not be written after it (a folder, or a
    file standing where its folder would be), which would throw the whole run away at its end."""
    path = Path(path_text(text))
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give the JSON file to write, such as {text}/out.json")
    in_the_way = file_in_the_way(path.parent)
    if in_the_way is not None:
        raise argparse.ArgumentTypeError(f"{in_the_way} is a file, not a folder to write {path.name} in")
    # the results are written beside the file and renamed over it, and missing folders made: the folder that
    # exists must take a new entry (a read-only mount refuses even root)
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"{existing} is not writable here: name a folder you can write in")
    return path


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """--out, the same in every benchmark: by default under .cache/ (ignored by git), never over the committed
    results in bench/results/, which a publishing run names."""
    default = default_out(name)
    parser.add_argument(
        "--out",
        type=json_out,
        default=default,
        help=f"JSON results (default: {default.relative_to(ROOT)}; bench/results/ holds the published ones)",
    )


def add_models_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir",
        type=path_text,
        default=str(ROOT / "models"),
        help="models folder with manifest.json (default: this checkout's models/)",
    )


def add_archive_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", type=path_text, default=str(ARCHIVE), help="the CIFAR-10 JPEG archive")


def add_work_dir_argument(parser: argparse.ArgumentParser) -> None:
    """The scoring benchmarks' --work-dir: one, so that they extract the images once for all of them."""
    parser.add_argument(
        "--work-dir",
        type=path_text,
        default=str(ROOT / ".cache" / "bench-score"),
        help="where images are extracted (default: .cache/bench-score)",
    )


def add_server_arguments(parser: argparse.ArgumentParser, warmup_s: float, pool: int) -> None:
    """The flags of the service benchmarks that load a server: which one, how it is started, what it is sent."""
    add_models_dir_argument(parser)
    parser.add_argument(
        "--url", type=http_url, help="benchmark a server already running at this URL instead of starting one"
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_float,
        default=warmup_s,
        help=f"seconds of unmeasured load before each measurement (default: {warmup_s:g})",
    )
    parser.add_argument("--k", type=positive_int, default=5, help="top-k asked for")
    parser.add_argument(
        "--pool", type=positive_int, default=pool, help=f"distinct JPEGs taken from the archive (default: {pool})"
    )
    parser.add_argument(
        "--streams", type=non_negative_int, default=0, help="the service's concurrent batches (0: its default)"
    )
    parser.add_argument(
        "--threads",
        type=non_negative_int,
        default=0,
        help="the service's ONNX Runtime threads per batch (0: its default)",
    )
    parser.add_argument(
        "--max-batch-size", type=max_batch_size, default=256, help="the service's adaptive batching limit"
    )
    parser.add_argument("--serve-arg", action="append", default=[], help="extra argument for `python -m service serve`")
    add_archive_argument(parser)


def open_archive(archive: Path) -> tarfile.TarFile:
    """--archive, opened for reading: a file that is no gzipped tar is the user's mistake, not a bug."""
    try:
        return tarfile.open(archive, "r:gz")
    except tarfile.ReadError as exc:
        raise UsageError(f"{archive}: not a .tar.gz archive ({exc}); --archive takes the CIFAR-10 JPEGs") from None
    except (FileNotFoundError, IsADirectoryError) as exc:
        raise UsageError(f"{archive}: {exc.strerror}; --archive takes the CIFAR-10 JPEGs ({ARCHIVE.name})") from None


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
