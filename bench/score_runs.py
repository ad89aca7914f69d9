"""`python -m service score` run as the scoring benchmarks (bench_score*.py) run it: on the first N/10 JPEGs of
each class of the CIFAR-10 archive, extracted once; when the shared machine is quiet; in a fresh process per
run, timed by its own summary."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

import termination
from arguments import no_cifar_images, open_archive

from inference.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"scored (\d+), failed (\d+).*?; ([\d.]+) s, (\d+) images/s")


def extract(archive: Path, dest: Path, count: int) -> Path:
    """The first count/10 images of each class, extracted once per archive; returns the folder to score. The
    marker names the archive the images came from: another --archive with the same --work-dir is extracted
    anew, not scored as the first one's images."""
    root = dest / f"cifar10-{count}"
    marker = root / ".complete"
    source = _archive_identity(archive)
    if marker.exists() and marker.read_text() == source:
        return root
    per_class = count // 10
    pattern = re.compile(r"^cifar10/train/[a-z]+/(\d+)\.jpg$")
    tmp = dest / f".extract-{os.getpid()}"
    try:  # stopped or refused half-way, no partial copy is left in the work dir
        with open_archive(archive) as tar:
            members = (m for m in tar if m.isfile() and (hit := pattern.match(m.name)) and int(hit[1]) < per_class)
            tar.extractall(tmp, members=members, filter="data")
        if not (tmp / "cifar10" / "train").is_dir():
            raise no_cifar_images(archive)
        found = sum(1 for _ in (tmp / "cifar10" / "train").glob("*/*.jpg"))
        if found < count:  # scored and reported as `count`, the figures would claim images that were never there
            raise UsageError(
                f"{archive} holds {found} of the {count} JPEGs asked for (the first {per_class} of each of 10 "
                f"classes): ask for fewer with --images"
            )
        shutil.rmtree(root, ignore_errors=True)  # another archive's images, replaced only once these are out
        (tmp / "cifar10" / "train").rename(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(source)
    return root


def _archive_identity(archive: Path) -> str:
    """The archive's path, size and modification time: another file, or the same one rewritten, differs."""
    try:
        stat = archive.stat()
    except OSError:  # opening it says why, in the user's words
        return ""
    return f"{archive.resolve()} {stat.st_size} {stat.st_mtime_ns}"


def busy_cores_since(start: tuple[float, float] | None = None):
    """CPU time all processes spent busy (from /proc/stat); with ``start``, the cores busy since then."""
    with open("/proc/stat") as f:
        ticks = list(map(int, f.readline().split()[1:]))
    now = ((sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK"), time.perf_counter())
    if start is None:
        return now
    return (now[0] - start[0]) / max(now[1] - start[1], 1e-9)


def wait_until_quiet(threshold: float, timeout: float = 180.0) -> float:
    """Wait until the machine's other work uses less than ``threshold`` cores (checked over 2 s), at most
    ``timeout`` seconds; returns it. 0: no wait, the load only measured. A wait is said, and so is its end
    without quiet: minutes of silence would look like a hung benchmark."""
    deadline = time.monotonic() + timeout
    waiting = False
    while True:
        mark = busy_cores_since()
        time.sleep(2.0)
        load = busy_cores_since(mark)
        if threshold <= 0 or load < threshold:
            return load
        if time.monotonic() > deadline:
            print(f"  measuring anyway: other processes still use {load:.2f} cores", file=sys.stderr, flush=True)
            return load
        if not waiting:
            waiting = True
            print(
                f"  waiting up to {timeout:.0f} s for other processes to use fewer than {threshold:g} cores "
                f"(--quiet-below; now {load:.2f})",
                file=sys.stderr,
                flush=True,
            )


def run_scorer(folder: Path, models_dir: Path, model: str, batch_size: int | None, flags: list[str], out: Path) -> dict:
    if batch_size and "--batch-size" not in flags:
        flags = ["--batch-size", str(batch_size), *flags]
    cmd = [
        sys.executable,
        "-m",
        "service.score",
        str(folder),
        "--out",
        str(out),
        "--models-dir",
        str(models_dir),
        "--model",
        model,
        "--no-progress",
        "--overwrite",  # each run replaces the last one's rows
        *flags,
    ]
    start = time.perf_counter()
    done = termination.run_child(cmd, cwd=ROOT)  # stopped, the scorer shuts its Ray instance down (--engine ray)
    wall = time.perf_counter() - start
    if done.returncode == 2:  # the scorer refused what it was given (a --ray-flags or --configs value): the user's
        said = done.stderr.strip().splitlines()
        raise UsageError(f"the scorer refused {shlex.join(flags)}: {said[-1] if said else 'it said nothing'}")
    if done.returncode != 0:
        raise SystemExit(f"scorer failed ({done.returncode}): {done.stderr}")
    hit = SUMMARY.search(done.stderr)
    if hit is None:
        raise SystemExit(f"scorer printed no summary: {done.stderr}")
    scored, failed = int(hit[1]), int(hit[2])
    seconds = scoring_seconds(scored + failed, float(hit[3]), float(hit[4]))
    rows = sum(1 for _ in open(out)) - 1
    return {
        "scored": scored,
        "failed": failed,
        "rows": rows,
        "seconds": seconds,
        "wall_s": wall,
        "images_per_s": (scored + failed) / seconds,
        "images_per_s_wall": (scored + failed) / wall,
    }


def scoring_seconds(images: int, seconds: float, rate: float) -> float:
    """The scorer's own time from its summary, which gives it to 0.1 s and its images/s to a whole number: of the
    two, the one its rounding moves less. A slow run of a few images (Ray's start, a 6-view model) is some
    seconds at 0-5 images/s, where the rate alone is 10% off or zero; a fast one is a second at a thousand."""
    if rate <= 0 or (seconds > 0 and 0.05 / seconds < 0.5 / rate):
        return max(seconds, 0.05)  # a summary's 0.0 s is under 0.05 s
    return images / rate
