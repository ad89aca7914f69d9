"""The argument parser of each ``python -m export`` command, and the flags several of them share, so that one
flag reads and helps the same in every command that takes it. Importing it loads no torch: ``--help`` and the
manifest's own commands run on the serving install. The dispatch and the error handling are __main__.py's."""

from __future__ import annotations

import argparse
import re

from inference.devices import DEVICE_KINDS
from inference.fits import DEFAULT_FIT, FITS, fit_help
from inference.manifest import CALIBRATION_METHODS, MODEL_NAME_PATTERN, MODEL_NAME_RULE
from inference.precisions import PRECISIONS, suits, tolerance_text
from training.cli_types import path_text, positive_int

from .data_cache import DEFAULT_CACHE_DIR, RUNS_CACHE
from .int8_ranges import ACTIVATION_RANGES, DEFAULT_CALIBRATION_IMAGES, ranges_help


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
            "then measure its accuracy against its checkpoint on the validation split (without it: against the FP32 "
            "graph a re-derived model came from, where it is still there unchanged, else the figure recorded at "
            "export), and against the top-1 its card records. Exits 1 when it misses its tolerance "
            f"({tolerance_text()}) or the card's figure, 2 on a missing or tampered file."
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
