"""Command line for export.

python -m export --checkpoint RUN/best.pt --name NAME [--precision fp32|fp16|int8] [--default] [--calibrate none]
python -m export verify [NAME]     re-verify a shipped model (default: the manifest's default) and its calibration
python -m export list [--models-dir DIR]   the models in the manifest
python -m export rederive REF --name NAME [--precision P] [--default]   a variant of a shipped FP32 graph whose
                                   checkpoint is gone: calibrated and/or converted, verified against that graph
python -m export default NAME [--for cpu|cuda]   make a listed model the default (on one kind of device)
python -m export card NAME [NAME ...]   the models' measured figures as a markdown table, for models/README.md
python -m export recover NAME --out FILE   the checkpoint of a shipped FP32 graph whose run is gone, rebuilt from
                                   the graph's weights and proven to reproduce it (for ensembles, Grad-CAM, other TTA)

--default-for cpu|cuda (export, rederive) makes the model the default on that kind of device only; --default makes
it the default everywhere no per-device default is set.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from inference.devices import DEVICE_KINDS
from inference.errors import UsageError
from inference.fits import DEFAULT_FIT, FITS, fit_help
from inference.interrupts import interrupt_within, say_stopped, terminations_as_interrupts
from inference.manifest import (
    CALIBRATION_METHODS,
    MODEL_NAME_PATTERN,
    MODEL_NAME_RULE,
    file_problems,
    load_manifest,
    remove_models,
    set_default,
    verify_file,
)
from inference.messages import (
    configure_logging,
    configure_streams,
    counted,
    flushed,
    os_error_text,
    reader_gone,
    stop_writing,
)
from inference.precisions import PRECISIONS, suits, tolerance_text, unsuited_hosts
from training.cli_types import path_text, positive_int

from .data_cache import DEFAULT_CACHE_DIR, RUNS_CACHE
from .int8_ranges import ACTIVATION_RANGES, DEFAULT_CALIBRATION_IMAGES, ranges_help

log = logging.getLogger("export")


def model_name(text: str) -> str:
    """A name the manifest will take, checked before the checkpoint is read and the validation pass is run."""
    if not re.fullmatch(MODEL_NAME_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name: {MODEL_NAME_RULE}")
    if text.lower().endswith(".onnx"):  # else the file would be NAME.onnx.onnx
        raise argparse.ArgumentTypeError(f"{text!r}: give the name without .onnx (the file is NAME.onnx)")
    return text


def listed_name(text: str) -> str:
    """A model the manifest lists: an empty one (an unset $MODEL in a script) would be taken for the default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty: give a model name from `python -m export list`")
    return text


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description=(
            "Export a training checkpoint to ONNX (input float32 [N,3,H,W] RGB in [0,1], "
            "normalisation inside the graph, "
            "dynamic batch), verify its accuracy against the checkpoint on the validation split, and record it in "
            "the manifest.json of --models-dir (default models/). Other commands (each with --help): verify [NAME], "
            "list, default NAME, remove "
            "NAME..., card NAME..., rederive REFERENCE, recover NAME."
        ),
    )
    p.add_argument("--checkpoint", required=True, type=path_text, help="checkpoint file (RUN/best.pt) or run folder")
    p.add_argument(
        "--name",
        required=True,
        type=model_name,
        help="model name in the manifest; the file is NAME.onnx in --models-dir",
    )
    _add_precision(p, "the graph's numbers")
    _add_models_dir(p)
    _add_defaults(p)
    p.add_argument(
        "--calibration-images",
        type=positive_int,
        help=f"INT8 only: training-split images to calibrate with (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    _add_int8_ranges(p)
    _add_data_flags(p, runs_cache=True)
    _add_data_root(p)
    # training.inference.TTA_CHOICES, spelled out so that --help does not import torch
    p.add_argument(
        "--tta",
        choices=["none", "flip", "multicrop"],
        default="none",
        help="flip: average the logits of each image and its mirror inside the graph (test-time "
        "augmentation; twice the compute per image, nothing changes for clients); multicrop: "
        "also one-pixel translations, 6 views, six times the compute",
    )
    _add_calibrate(p)
    p.add_argument(
        "--fit",
        choices=list(FITS),
        help=f"how the service and the scorer fit a photo of another aspect ratio to the model's input, "
        f"recorded in its card ({fit_help()}; default: the training run's, {DEFAULT_FIT} for a run that "
        "recorded none); a request or `service score --fit` may still choose another",
    )
    _add_reference_cache(p)
    p.add_argument(
        "--replace",
        action="store_true",
        help="NAME is already listed: replace its file and its measured figures with this export (same network, "
        "classes and precision; measured on all the validation images)",
    )
    return p


def verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export verify",
        description=(
            "Check the model's file against its sha256 (the other listed files too: their trouble is warned of), "
            "then measure its accuracy against its checkpoint on the validation split, and against the top-1 its "
            f"card records. Exits 1 when it misses its tolerance ({tolerance_text()}) or the card's figure, 2 on a "
            "missing or tampered file."
        ),
    )
    p.add_argument("name", nargs="?", type=listed_name, help="model name (default: the manifest's default)")
    _add_models_dir(p)
    _add_data_flags(p)
    _add_data_root(p)
    _add_reference_cache(p)
    return p


def rederive_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export rederive",
        description=(
            "Derive a model from a shipped FP32 graph when the checkpoint it came from is not here: fit a "
            "temperature on the graph's validation logits and append the division to it (unless --calibrate "
            "none), convert it to --precision, verify it against the FP32 graph's logits divided by the same "
            "temperature, and record it in the manifest (the same name replaces the reference)."
        ),
    )
    p.add_argument(
        "reference", type=listed_name, help="name of a shipped FP32 model (a calibrated one with --calibrate none)"
    )
    p.add_argument("--name", required=True, type=model_name, help="name of the derived model")
    _add_precision(p, "the derived graph's numbers")
    _add_calibrate(p)
    _add_defaults(p)
    _add_models_dir(p)
    p.add_argument(
        "--calibration-images",
        type=positive_int,
        help=f"INT8 only: training-split images to calibrate with (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    _add_int8_ranges(p)
    _add_data_flags(p)
    p.add_argument(
        "--fit",
        choices=list(FITS),
        help="the derived model's fit for photos of another shape (default: the reference's)",
    )
    _add_data_root(p)
    p.add_argument(
        "--replace",
        action="store_true",
        help="NAME is already listed (and is not REFERENCE, which its own name replaces): replace its file and figures",
    )
    return p


def recover_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export recover",
        description=(
            "Rebuild the training checkpoint of a shipped FP32 model whose run is gone: the network from its "
            "card, its weights from the graph's initializers; written only once, with the card's test-time "
            "augmentation and temperature, it reproduces the graph on the validation split within FP32's limits. "
            "The checkpoint then joins ensembles (`python -m training ensemble`) and reports like any other."
        ),
    )
    p.add_argument("name", type=listed_name, help="name of a shipped FP32 model")
    p.add_argument("--out", required=True, type=path_text, help="checkpoint file to write, e.g. runs/recovered/NAME.pt")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    _add_models_dir(p)
    _add_data_flags(p)
    _add_data_root(p)
    return p


def _add_models_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--models-dir", default="models", type=path_text, help="where the .onnx files and manifest.json live"
    )


def _add_data_flags(p: argparse.ArgumentParser, runs_cache: bool = False) -> None:
    """The validation data every command that measures a model reads. ``runs_cache``: a checkpoint's export, whose
    cache is by default the one the run decoded its data into."""
    # "" reads the images without a cache (tests, a read-only checkout): not refused as the empty paths are
    p.add_argument(
        "--cache-dir",
        default=RUNS_CACHE if runs_cache else DEFAULT_CACHE_DIR,
        help='dataset decode cache ("" for none); default: '
        + (f"the one the run used (data.cache_dir), else {DEFAULT_CACHE_DIR}" if runs_cache else DEFAULT_CACHE_DIR),
    )
    p.add_argument(
        "--max-val-images",
        type=positive_int,
        help="measure on N validation images drawn with a fixed seed (quick checks; default: all of them)",
    )


def _add_data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        type=path_text,
        metavar="ROOT",
        help="the run's dataset where it is now, when it has moved since training or is on another machine (a "
        "warning says when its validation images are not the ones the run recorded a fingerprint of); default: "
        "where the run read it",
    )


def _add_precision(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32",
        help=f"{what}: " + "; ".join(f"{x.name}: {x.help}, for {suits(x)}" for x in PRECISIONS.values()),
    )


def _add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--calibrate",
        choices=CALIBRATION_METHODS,
        default="temperature",
        help="temperature (default): fit one temperature on the validation split and divide the logits by "
        "it inside the graph, after any TTA, so that confidences are calibrated; none: leave them as "
        "trained",
    )


def _add_int8_ranges(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--int8-ranges",
        choices=list(ACTIVATION_RANGES),
        help=f"INT8 only: how each activation's range is set from the calibration images ({ranges_help()})",
    )


def _add_defaults(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()  # every kind of host, or some: both at once says neither
    group.add_argument(
        "--default",
        action="store_true",
        help="make the model the default on every kind of host (replaces per-device defaults)",
    )
    group.add_argument(
        "--default-for",
        action="append",
        choices=DEVICE_KINDS,
        default=[],
        help="make it the default on this kind of host only (repeatable): cpu for CPU hosts, cuda for GPU hosts; "
        "the service and the scorer pick the default of the device they run on",
    )


def _add_reference_cache(p: argparse.ArgumentParser) -> None:
    # export.reference.DEFAULT_FOLDER, spelled out so that --help does not import torch
    p.add_argument(
        "--reference-cache",
        type=path_text,
        default=".cache/reference_logits",
        help="folder where the checkpoint's PyTorch logits on the validation images are kept, so that exporting "
        "another precision of the same checkpoint, or verifying one, skips that pass (found only by the "
        "checkpoint's bytes, the TTA, the images and the torch version); default %(default)s",
    )
    p.add_argument(
        "--no-reference-cache",
        dest="reference_cache",
        action="store_const",
        const=None,
        help="run the PyTorch pass again and keep nothing",
    )


def default_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export default",
        description="Make a model listed in the manifest the default on one kind of host (--for), or on every "
        "kind (no --for: the per-device defaults are replaced by this one).",
    )
    p.add_argument("name", type=listed_name, help="a model name from `python -m export list`")
    p.add_argument("--for", dest="kinds", action="append", choices=DEVICE_KINDS, default=[], help="cpu or cuda")
    _add_models_dir(p)
    return p


def remove_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export remove",
        description="Take models out of the manifest and delete their ONNX files (their reports/ folders stay). "
        "A default model is refused: make another the default first. A service started afterwards loads only the "
        "models left, and holds less memory.",
    )
    p.add_argument("names", nargs="+", type=listed_name, help="model names from `python -m export list`")
    _add_models_dir(p)
    return p


def list_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export list",
        description="The models in the manifest; * marks a default, named with the kinds of host it is the default on.",
    )
    _add_models_dir(p)
    return p


def card_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export card",
        description="Print the listed models' measured figures (accuracy, parity, calibration, speed, size) as one "
        "markdown table, a column per model, read from the manifest; refused (exit 2) for a model whose file is "
        "missing or not the one the figures were measured on (its sha256).",
    )
    p.add_argument("names", nargs="+", type=listed_name, help="model names from `python -m export list`")
    _add_models_dir(p)
    return p


def _list(models_dir: str) -> int:
    """Exits 1 when a listed file is missing or not the recorded one (the service would refuse to start)."""
    manifest = load_manifest(models_dir, verify=False)
    problems = file_problems(manifest, Path(models_dir))
    roles: dict[str, list[str]] = {}
    for kind in DEVICE_KINDS:
        roles.setdefault(manifest.default_for(kind).name, []).append(kind)
    width = max(len(m.name) for m in manifest.models)
    for m in manifest.models:
        mark = "*" if m.name in roles else " "  # what some kind of host serves by default
        where = f"  default on {'+'.join(roles[m.name])}" if m.name in roles else ""
        samples = m.metrics.get("val_samples")
        on = f" ({counted(samples, 'image')})" if samples else ""
        broken = "  BROKEN: the file is missing or not the recorded one" if m.name in problems else ""
        print(
            f"{mark} {m.name:<{width}} {m.arch:<14} {m.precision:<5} "
            f"val_top1={100 * m.metrics['val_top1']:.2f}%{on}  {m.file}{where}{broken}"
        )
    for problem in problems.values():
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _report(entry, parity) -> int:
    from .calibration import calibration_summary

    print(parity.summary())
    print(calibration_summary(entry.metrics["calibration"]))
    print(json.dumps({"name": entry.name, "file": entry.file, "sha256": entry.sha256}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    configure_streams()
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        with terminations_as_interrupts():
            return flushed(_command(argv))
    except UsageError as exc:  # what the user gave wrong (ManifestError too); any other error is a bug: its traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing file, a path through a file, a full disk, a permission: one line
        if isinstance(exc, BrokenPipeError) and reader_gone():  # `| head -1`: not the command's failure
            return stop_writing()
        # one of ours names what is missing in its message; the system's names the path and the reason
        print(f"error: {os_error_text(exc) if exc.errno is not None else exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM/SIGHUP as Terminated
        # Graphs are built and checked in a temporary folder, and moved in beside the new manifest only once
        # verified; a recovered checkpoint is written to a temporary file and renamed: a stop leaves no part.
        # (a stop that arrives while a model is recorded waits for the record to be whole, and says so)
        return say_stopped(exc, f"interrupted: {(getattr(exc, '__notes__', None) or ['nothing was written'])[0]}")
    except Exception as exc:
        stop = interrupt_within(exc)
        if stop is None:
            raise
        return say_stopped(stop, "interrupted: nothing was written")


COMMANDS = ("verify", "list", "default", "remove", "card", "rederive", "recover")


def _command(argv: list[str]) -> int:
    """The manifest's own commands need no torch: they run on the serving install (scripts/setup.sh serve)."""
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:  # else: "required: --checkpoint, --name"
        raise UsageError(
            f"unknown command {argv[0]!r}: export takes --checkpoint RUN/best.pt --name NAME, or one of "
            f"{', '.join(COMMANDS)}"
        )
    late = [word for word in argv[1:] if word in COMMANDS]
    exporting = any(word == "--checkpoint" or word.startswith("--checkpoint=") for word in argv)
    if argv and argv[0].startswith("-") and late and not exporting:
        raise UsageError(f"put the command first: python -m export {late[0]} [options] (its options after it)")
    if argv[:1] == ["list"]:
        return _list(list_parser().parse_args(argv[1:]).models_dir)
    if argv[:1] == ["default"]:
        args = default_parser().parse_args(argv[1:])
        manifest = set_default(args.models_dir, args.name, args.kinds)
        warning = unsuited_hosts(args.name, manifest.get(args.name).precision, args.kinds or DEVICE_KINDS)
        if warning:
            log.warning("%s", warning)
        _list(args.models_dir)  # done: a broken file elsewhere is marked, and is not this command's failure
        return 0
    if argv[:1] == ["remove"]:
        args = remove_parser().parse_args(argv[1:])
        remove_models(args.models_dir, args.names)
        _list(args.models_dir)
        return 0
    if argv[:1] == ["card"]:
        from .card import card_table

        args = card_parser().parse_args(argv[1:])
        manifest = load_manifest(args.models_dir, verify=False)
        entries = [manifest.get(n) for n in args.names]
        for entry in entries:  # the figures describe the recorded file, not whatever stands there now
            verify_file(entry, Path(args.models_dir), manifest)
        print(card_table(entries, args.models_dir))
        return 0
    return _conversion_command(argv)


def _conversion_command(argv: list[str]) -> int:
    """The commands that run a network (torch, ONNX Runtime): export, verify, recover, rederive."""
    from .calibration import calibration_summary
    from .pipeline import ParityError, export_checkpoint, verify_model

    try:
        if argv[:1] == ["verify"]:
            args = verify_parser().parse_args(argv[1:])
            parity, calibration = verify_model(
                args.name, args.models_dir, args.cache_dir, args.max_val_images, args.reference_cache, args.data
            )
            print(parity.summary())
            print(calibration_summary(calibration))
            if not parity.passed:
                print(f"FAILED: {parity.verdict()}", file=sys.stderr)
                return 1
            print("verified")
            return 0
        if argv[:1] == ["recover"]:
            from .recover import recover_checkpoint

            args = recover_parser().parse_args(argv[1:])
            meta, parity = recover_checkpoint(
                args.name, args.out, args.models_dir, args.cache_dir, args.max_val_images, args.data, args.force
            )
            print(parity.summary())
            print(f"{args.out}: {meta['arch']} checkpoint rebuilt from {meta['recovered_from']['file']}")
            return 0
        if argv[:1] == ["rederive"]:
            from .rederive import rederive

            args = rederive_parser().parse_args(argv[1:])
            entry, parity = rederive(
                args.reference,
                args.name,
                args.precision,
                args.models_dir,
                args.default,
                args.calibrate,
                args.calibration_images,
                args.cache_dir,
                args.max_val_images,
                args.fit,
                args.default_for,
                args.int8_ranges,
                args.data,
                args.replace,
            )
            return _report(entry, parity)
        args = export_parser().parse_args(argv)
        entry, parity = export_checkpoint(
            args.checkpoint,
            args.name,
            args.precision,
            args.models_dir,
            args.default,
            args.calibration_images,
            args.cache_dir,
            args.max_val_images,
            args.tta,
            args.calibrate,
            args.fit,
            args.default_for,
            args.reference_cache,
            args.int8_ranges,
            args.data,
            args.replace,
        )
        return _report(entry, parity)
    except ParityError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
