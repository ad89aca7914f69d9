"""A job's arguments refused before anything slow or destructive starts: an engine takes seconds to open (Ray)
and --out may hold the user's rows, so each refusal comes first, as one line."""

from __future__ import annotations

import errno
import math
import os
import sys
import tempfile

from inference.image_formats import is_image_name
from inference.tree_files import unpack_command

from ..settings import THREADS_MAXIMUM, empty_flag_refusal
from .engines import ENGINE_ONLY_FLAGS
from .errors import UserError
from .sinks import format_from_path, holds_no_rows

# Flags whose empty value would be taken for another (dest, flag); --model has its own refusal.
_PATHS = (("out", "--out"), ("models_dir", "--models-dir"), ("url", "--url"), ("address", "--address"))


def validate(args) -> str:
    """The output format; UserError for bad arguments."""
    # An unset shell variable ("$PHOTOS") would otherwise mean the current folder or the default models folder,
    # or be refused as another engine's flag (an empty --url leaves the local engine chosen).
    if not args.dir.strip():
        raise UserError("DIR is empty: name the folder to score")
    if refused := empty_flag_refusal({flag: getattr(args, dest, None) for dest, flag in _PATHS}):
        raise UserError(refused)
    if not os.path.isdir(args.dir):
        raise UserError(_not_a_folder(args.dir))
    if args.k < 1:
        raise UserError(f"--k must be at least 1, not {args.k}")
    if args.min_confidence is not None and not 0 <= args.min_confidence <= 1:  # NaN included
        raise UserError(f"--min-confidence must be between 0 and 1, not {_number(args.min_confidence)}")
    if args.model is not None and not args.model.strip():  # a shell variable never set: not the default, unsaid
        raise UserError("--model is empty: give a model name from the manifest, or leave --model out")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be 0 or more, not {args.workers}")
    if args.workers == 0 and getattr(args, "url", None):  # 0 means decoding in the main process, which --url has not
        raise UserError("--workers with --url is the number of concurrent requests: at least 1, not 0")
    for dest in ("threads", "streams", "actors", "max_pixels"):
        value = getattr(args, dest, None)
        if value is not None and value < 1:
            raise UserError(f"{ENGINE_ONLY_FLAGS[dest].flag} must be at least 1, not {value}")
    if getattr(args, "threads", None) is not None and args.threads > THREADS_MAXIMUM:  # as serve's --threads
        raise UserError(f"--threads must be at most {THREADS_MAXIMUM}, not {args.threads}")
    if getattr(args, "gpus_per_actor", None) is not None and not args.gpus_per_actor > 0:
        raise UserError(f"--gpus-per-actor must be more than 0, not {_number(args.gpus_per_actor)}")
    if args.out != "-" and os.path.isdir(args.out):
        raise UserError(f"--out {args.out} is a folder")
    named = None if args.out == "-" else format_from_path(args.out)
    if args.format and named and args.format != named:
        raise UserError(f"--format {args.format} contradicts --out {args.out} (a {named} name): drop one of them")
    fmt = args.format or named or ("csv" if args.out == "-" else None)
    if fmt is None:
        raise UserError(f"cannot tell the output format from {args.out!r}: name it .csv or .jsonl, or pass --format")
    timeout = getattr(args, "timeout", None)
    if timeout is not None and not 0 < timeout < math.inf:
        raise UserError(f"--timeout must be a number of seconds above 0, not {timeout}")
    if args.resume and getattr(args, "overwrite", False):
        raise UserError("--resume keeps the rows in --out, --overwrite replaces them: pass one of them")
    if args.out == "-":
        if args.resume:
            raise UserError("--resume needs --out FILE")
        if sys.stdout is None:  # started with it closed (`>&-`): Python has no standard output to write to
            raise UserError("standard output is closed: give --out FILE")
    else:
        _check_existing_output(args)
        if args.resume and os.path.exists(args.out) and not os.path.isfile(args.out):
            raise UserError(f"--resume needs --out to be a file it can read back; {args.out} is not a regular file")
        _check_writable(args.out, replaces=getattr(args, "overwrite", False) and not holds_no_rows(args.out))
    return fmt


def _not_a_folder(path: str) -> str:
    """Why ``path``, given as DIR, cannot be scored. An archive, which training reads, is to be unpacked: the walk
    reads folders (worded as `service doctor --folder` refuses one)."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    unpack = unpack_command(path) if os.path.isfile(path) else None
    if unpack:
        return f"{path} is an archive, not a folder: unpack it (mkdir DIR && {unpack}) and score DIR"
    return f"{path} is not a folder"


def _check_writable(out: str, replaces: bool) -> None:
    """UserError, worded as when ``score_rows`` opens ``out``, unless it can be written; checked before any engine
    opens, since Ray takes seconds to start. Tried, not read from permission bits (``os.access``): root passes
    those, and a read-only mount or a pseudo file system (/proc, /sys) refuses what they allow. ``replaces``:
    --overwrite of a file with rows, whose new rows go to a file beside it (``Replacement``)."""
    if os.path.exists(out) and not replaces:
        if not os.path.isfile(out):
            # a device or a pipe (/dev/stdout), which opening could block on (a FIFO without a reader): only the
            # bits are asked
            if not os.access(out, os.W_OK):
                raise UserError(f"cannot write {out}: {os.strerror(errno.EACCES)}")
            return
        try:
            os.close(os.open(out, os.O_WRONLY))  # neither truncated nor appended to: it stays as it is
        except OSError as exc:
            raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
        return
    # A new file, or the replacement beside one: in the folder of the file a link names, where either is made.
    folder = os.path.dirname(os.path.realpath(out) if replaces or os.path.islink(out) else os.path.abspath(out))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise UserError(f"cannot write {out}: {folder} is a file, not a folder")
        raise UserError(f"cannot write {out}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{os.path.basename(out)}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _check_existing_output(args) -> None:
    """An existing --out is continued (--resume) or replaced (--overwrite), never silently; and never an
    image the run scores, even with --overwrite."""
    if _under(args.out, args.dir) and is_image_name(args.out):
        # A new file too: the walk lists a folder only when it reaches it, after the output was opened, so it
        # would score the run's own rows as an unreadable image.
        being = "is" if os.path.lexists(args.out) else "would be"
        raise UserError(f"--out {args.out} {being} one of the images under {args.dir}: write the rows elsewhere")
    if not os.path.isfile(args.out):
        return  # a new file, or a device, pipe or /dev/null: nothing of the user's is replaced
    if not args.resume and not getattr(args, "overwrite", False) and not holds_no_rows(args.out):
        raise UserError(f"{args.out} exists: --resume continues it, --overwrite replaces it")


def _under(path: str, root: str) -> bool:
    """Whether ``path`` is under ``root``: by its folder (the walk scores a link by its own name), or where it
    leads (what --overwrite replaces)."""
    real_root = os.path.realpath(root)
    named = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))), os.path.basename(path))
    return any(
        real != real_root and os.path.commonpath([real, real_root]) == real_root
        for real in (named, os.path.realpath(path))
    )


def _number(value: float) -> str:
    """``value`` short (2, not 2.0), where that is still the number: 1.0000001 shown as "1" beside "between 0 and
    1" would read as a refusal of 1 itself."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)
