"""The ``score`` command line: ``python -m service score DIR ...`` (or ``python -m service.score DIR ...``)."""

from __future__ import annotations

import argparse
import sys
import textwrap

from inference.devices import DEVICES, device_choice
from inference.fits import FITS, fit_help
from inference.messages import configure_streams

from ..confidence import parse_min_confidence
from ..settings import SETTINGS
from .engines import ENGINE_ONLY_FLAGS, ENGINES
from .local import DEFAULT_BATCH_SIZE, DEFAULT_GPU_BATCH_SIZE
from .remote import DEFAULT_URL_BATCH, DEFAULT_URL_WORKERS
from .remote_options import API_KEY_VARIABLE
from .run import run
from .sinks import FORMATS


def add_score_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "score",
        help="score every image under a folder; write CSV or JSON Lines",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Walk DIR recursively (sorted, following directory links once each), classify every file with an "
            "image extension, and stream one row per file to --out: its path relative to DIR, the top-k labels "
            "and confidences, and an error message for files that could not be read or decoded, or that the "
            "service (--url) fails on (those never stop the run). "
            "Files without an image extension are skipped and counted. A progress bar and, at the end, a summary "
            "(scored, failed, skipped, time, images/s) go to stderr."
        ),
        epilog=(
            "output formats (chosen by the --out extension, or --format):\n"
            "  csv    path,label_1,confidence_1,...,label_k,confidence_k,error\n"
            '  jsonl  {"path": ..., "top_k": [{"label", "index", "confidence"}, ...], "error": null}\n'
            '  with --min-confidence P: a confident column before error (true/false), or a "confident" key\n'
            "  paths are written exactly (--resume reads them back, and they name the files): in CSV, a name\n"
            "  beginning with =, +, -, @, a tab or a carriage return is a formula to a spreadsheet that opens\n"
            "  the file as it is; a name that is not UTF-8 is written as its bytes, which a strict UTF-8\n"
            "  reader refuses (jsonl escapes them as \\udcXX, which only Python's surrogateescape turns back\n"
            "  into the bytes); the summary warns of both: import that CSV as text, or use jsonl\n\n"
            "examples:\n"
            "  python -m service score photos/ --out preds.csv\n"
            "  python -m service score photos/ --out preds.jsonl --resume          # continue an interrupted run\n"
            "  python -m service score photos/ --out preds.csv --overwrite         # replace an earlier run's rows\n"
            "  python -m service score val/ --out val.csv --labels-from-folders   # class-per-folder: accuracy\n"
            "  python -m service score photos/ --url http://localhost:3000 --out preds.csv\n"
            "  python -m service score photos/ --engine ray --out preds.csv       # Ray Data, local instance\n"
            "  python -m service score /shared/photos --engine ray --address auto --out preds.csv  # a cluster\n\n"
            f"engines (--engine):\n{_engines_help()}\n"
            "exit status: 0 done (even if some files failed), 1 with --fail-on-error and a failed file, when\n"
            "the service stops answering, or when decoding fails for a reason no file explains (a bug: as rows it\n"
            "would be every file's), 2 usage errors (DIR holds no image file, --out exists without --resume or\n"
            "--overwrite, another run is writing --out, ...), 74 --out could not be written (a full disk: it holds\n"
            "the rows the summary counts; make room, then --resume), 130/143 interrupted by Ctrl-C/SIGTERM (the\n"
            "output stays valid for --resume), 141 the reader of standard output has gone (| head)."
        ),
    )
    p.add_argument(
        "dir",
        metavar="DIR",
        help=(
            "folder to score (searched recursively; hidden files and folders under it are left out, as "
            "training's folder reader leaves them)"
        ),
    )
    p.add_argument(
        "--out", "-o", default="-", metavar="FILE", help="output file, .csv or .jsonl (default: CSV on stdout)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="output format when --out is stdout or has neither extension (.csv, .jsonl or .ndjson name their own)",
    )
    p.add_argument(
        "--model",
        help="model name from the manifest (default: the manifest's default for the device it runs on: the CPU "
        "hosts' or the CUDA hosts'; with --url, the service's default)",
    )
    p.add_argument(
        "--models-dir",
        help=f"folder with manifest.json and the .onnx files (default: {_default('models_dir')}; not with --url)",
    )
    p.add_argument(
        "--k",
        type=int,
        default=5,
        help="how many labels per image, most likely first (default: 5; capped at the number of classes)",
    )
    p.add_argument(
        "--min-confidence",
        type=_threshold,
        metavar="P",
        help=(
            "mark each image whose top-1 confidence is below P (0 to 1): a confident column "
            "(true/false) in the output, "
            "and a count in the summary; no image is left out (default: no threshold and no such column)"
        ),
    )
    p.add_argument(
        "--fit",
        choices=list(FITS),
        help=f"how an image of another aspect ratio than the model's input is fitted to it ({fit_help()}; "
        "default: the model's own, from its card)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=(
            f"images per inference call (default: {DEFAULT_BATCH_SIZE}, {DEFAULT_GPU_BATCH_SIZE} "
            f"with a GPU); with --url, "
            f"images per request (default: "
            f"{DEFAULT_URL_BATCH}, halved when the service answers that a request held too many)"
        ),
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help=(
            "decode processes running beside inference; 0 decodes in the main process between inference calls "
            "(default: one per usable core, up to 8, at a lower priority than inference; with a "
            "GPU, all cores but one; "
            "with --url, concurrent requests (at least 1), default "
            f"{DEFAULT_URL_WORKERS})"
        ),
    )
    p.add_argument(
        "--streams",
        type=int,
        metavar="N",
        help=(
            "inference batches run at once, each on its own thread (default: one per usable core on CPU, 2 with a GPU)"
        ),
    )
    p.add_argument(
        "--threads",
        type=int,
        help=(
            "ONNX Runtime intra-op threads per stream (default: the usable cores divided among the streams); "
            "with --engine ray, per actor, which holds as many of the cluster's CPUs (default: 1)"
        ),
    )
    p.add_argument(
        "--device",
        type=device_choice,
        metavar="{" + ",".join(DEVICES) + "}",
        help="where the model runs: auto picks CUDA when a GPU is visible and the CPU for a model that cannot run "
        f"wholly on CUDA; cuda refuses such a model (default: {_default('device')}; not with --url)",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help=f"{SETTINGS['max_pixels'].help} (default: {_default('max_pixels')}, as the service's --max-pixels; "
        "not with --url: the service's own limit applies)",
    )
    p.add_argument(
        "--engine",
        choices=list(ENGINES),
        help="what scores the images (see below; default: local, or remote when --url is given)",
    )
    p.add_argument(
        "--url",
        help="score through a running service (POST URL/classify) instead of a local model; requests are sized to "
        "the images and bytes its GET /models says a request may hold; one still loading its models (GET /readyz 503) "
        "is waited for, up to --timeout",
    )
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"with --url, the key of a service that asks for one, sent as 'Authorization: Bearer KEY' (default: the "
        f"{API_KEY_VARIABLE} variable; prefer it: a flag shows in the process list)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        help=f"seconds per request with --url (default: {_default('timeout'):g}); a request unanswered in time is "
        "sent again once, then in halves, down to the image it times out on, which is an error row",
    )
    p.add_argument(
        "--address",
        metavar="ADDR",
        help=(
            "with --engine ray: the Ray cluster to run on, 'auto' (the cluster this machine belongs to) or "
            "ray://HEAD:10001 (Ray Client); DIR must be at the same absolute path on every node "
            "(default: start a local Ray instance with this machine's cores)"
        ),
    )
    p.add_argument(
        "--actors",
        type=int,
        metavar="N",
        help=(
            "with --engine ray: model actors, each holding one ONNX Runtime session and --threads CPUs "
            "(default: one per GPU share with --gpus-per-actor, otherwise one per --threads of the cluster's CPUs: "
            "each actor reads and decodes its own batches too)"
        ),
    )
    p.add_argument(
        "--gpus-per-actor",
        type=float,
        metavar="F",
        help="with --engine ray: GPUs each actor holds (e.g. 0.5: two actors share one); its session runs on CUDA",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help=(
            "keep the rows already in --out and score only the files not in it, and again those modified since it "
            "was written (their old rows dropped; a trailing half-written line is dropped too); error rows count as "
            "done: rerun with --overwrite to retry them"
        ),
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out file, once the first new rows are written (a run stopped before then "
        "leaves it as it was; without --resume or this, an existing file is left alone: an error)",
    )
    p.add_argument(
        "--labels-from-folders",
        action="store_true",
        help=(
            "DIR is class-per-folder: take each image's parent folder name as its true label and report accuracy, "
            "per-class accuracy and the most frequent confusions at the end"
        ),
    )
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 when any file could not be scored")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (it is off anyway when stderr is not a terminal)"
    )
    p.set_defaults(fn=run)
    return p


def _default(dest: str):
    """An engine-only flag's default, filled in once the engine is chosen (engines.ENGINE_ONLY_FLAGS)."""
    return ENGINE_ONLY_FLAGS[dest].default


def _engines_help() -> str:
    return "".join(
        textwrap.fill(engine.help, 104, initial_indent=f"  {name:<8}", subsequent_indent=" " * 10) + "\n"
        for name, engine in ENGINES.items()
    )


def _threshold(text: str) -> float:
    try:
        return parse_min_confidence(text)
    except ValueError as exc:
        try:
            # a number out of range: refused by arguments.validate, as one line, as the integer flags' values are
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(str(exc)) from None


def get_args_parser() -> argparse.ArgumentParser:
    """The ``score`` command on its own (tests and ``python -m service.score``)."""
    parser = argparse.ArgumentParser(prog="python -m service")
    add_score_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: list[str] | None = None) -> int:
    configure_streams()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = get_args_parser().parse_args(["score", *argv])
    return args.fn(args)
