"""One report for any checkpoint or ONNX model: metrics.json, predictions.npz, figures and report.md.

``load_model`` gives a :class:`ModelSource` (checkpoint or ONNX) that predicts logits;
``resolve_data`` picks the evaluation split, by default the model's own validation split;
``evaluate`` writes the report folder. ``compare`` and ``ablate`` reuse the first two.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from inference.classes import folded
from inference.devices import DEVICES, Device
from inference.errors import UsageError
from inference.files import folders_to_make, remove_if_empty, write_atomic, write_text_atomic
from inference.fits import DEFAULT_FIT, LEGACY_FIT

from ..checkpoint import BEST_FILE, LAST_FILE, SUMMARY_FILE, checkpoint_file, load_checkpoint, model_from_checkpoint
from ..config import ConfigError
from ..data import SPLITS, DatasetError, ImageArrays, load_split
from ..data.augment import to_unit
from ..data.loader import TensorLoader
from ..data.split import SplitTooLarge
from ..data.targets import Targets
from ..engine import inside_the_data, resolve_device
from ..inference import TTA_DESCRIPTIONS, check_tta, predict_logits
from ..plots import CurveInfo, plot_training_curves
from . import figures
from .calibration import TEMPERATURE_BOUNDS, calibration_report, fit_temperature, meaningless_fit, undo_temperature
from .gradcam import GradCAM, NoSpatialMap
from .graph import graph_logits
from .metrics import compute_metrics, reliability_bins, softmax

log = logging.getLogger("training.reports")

PREDICTIONS_FILE = "predictions.npz"
METRICS_FILE = "metrics.json"
# The run's per-epoch history, kept with the report so a comparison of two reports can draw both curves.
HISTORY_FILE = "history.json"
# Every figure a report may hold: one an evaluation does not write this time is removed from a reused --out.
FIGURES = (
    "confusion_matrix.png",
    "per_class_accuracy.png",
    "misclassified.png",
    "reliability.png",
    "gradcam.png",
    "training_curves.png",
)
GRADCAM_PER_GROUP = 4
# the arrow's direction is said in the figure, which is often shared without report.md's caption
GRADCAM_TITLES = "green: right, predicted (confidence); red: wrong, true -> predicted (confidence)"


@dataclass
class DataSpec:
    """Which samples a model is evaluated on: enough to reload exactly the same split."""

    dataset: str
    root: str
    split: str = "val"
    val_size: int = 5000
    split_seed: int = 42
    image_size: int = 32
    cache_dir: str | None = ".cache/datasets"
    fit: str = DEFAULT_FIT  # how a folder's images of another shape are fitted (inference.fits)

    def load(self) -> ImageArrays:
        if self.split not in SPLITS:
            raise UsageError(f"unknown split {self.split!r}; valid: {', '.join(SPLITS)}")
        try:
            return load_split(
                self.dataset,
                self.root,
                self.split,
                self.val_size,
                self.split_seed,
                self.cache_dir,
                self.image_size,
                self.fit,
            )
        except SplitTooLarge as exc:
            # the model's own held-out size, applied to a folder of the user's: say how to score all of it
            raise DatasetError(
                f"{self.root} holds {exc.images} images, and the {self.split} split holds out {self.val_size} (the "
                "model's own held-out size, or --val-size): to score every image of this data pass --split all, or "
                "a smaller --val-size"
            ) from None

    def describe(self) -> str:
        extra = f", {self.val_size} held out with seed {self.split_seed}" if self.split in ("train", "val") else ""
        return f"{self.dataset} `{self.root}`, split **{self.split}**{extra}"


@dataclass
class ModelSource:
    """A model to evaluate: a checkpoint (torch) or an exported ONNX file."""

    kind: str  # "checkpoint" | "onnx"
    path: Path
    classes: list[str]
    arch: str
    image_size: int
    data_defaults: dict[str, Any] = field(default_factory=dict)
    run_dir: Path | None = None
    history: list[dict] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    model: Any = None  # torch ImageClassifier or inference.runtime.OnnxClassifier
    device: torch.device = torch.device("cpu")

    @property
    def supports_gradcam(self) -> bool:
        return self.kind == "checkpoint"

    def predict(self, data: ImageArrays, tta: str = "none", batch_size: int = 256) -> tuple[np.ndarray, float]:
        """Logits [N, C] in sample order and the wall time of the prediction pass."""
        check_tta(tta)
        start = time.perf_counter()
        if self.kind == "checkpoint":
            loader = TensorLoader(data, batch_size, self.device)
            logits, _ = predict_logits(self.model, _Progress(loader, f"evaluating {self.path.name}"), tta=tta)
        else:
            logits = self._predict_onnx(data, tta, batch_size)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return logits.astype(np.float32), time.perf_counter() - start

    def _predict_onnx(self, data: ImageArrays, tta: str, batch_size: int) -> np.ndarray:
        if not len(data):
            return np.zeros((0, len(self.classes)), np.float32)
        return graph_logits(self.model.logits, data.images, batch_size, tta, f"evaluating {self.path.name}")


class _Progress:
    """A TensorLoader seen through a tqdm bar; keeps the ``device`` that predict_logits reads."""

    def __init__(self, loader: TensorLoader, desc: str) -> None:
        self.loader, self.desc, self.device = loader, desc, loader.device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, Targets]]:
        return iter(tqdm(self.loader, desc=self.desc, unit="batch", leave=False))


def _run_history(run_dir: Path, own: list | None) -> list:
    """The training history of a checkpoint in ``run_dir``: the run's history.json beside it, else the one the
    checkpoint holds itself (one copied out of its run, as a GPU machine sends them back, has none beside it)."""
    path = run_dir / HISTORY_FILE
    return json.loads(path.read_text()) if path.is_file() else list(own or [])


def _load_checkpoint_source(path: Path, device: str) -> ModelSource:
    ckpt = load_checkpoint(path)
    file = checkpoint_file(path)
    meta = ckpt["meta"]
    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt).to(dev)
    config = ckpt.get("config") or {}
    defaults = {
        "dataset": meta.get("dataset"),
        "root": meta.get("data_root"),
        "val_size": meta.get("val_size"),
        "split_seed": meta.get("split_seed"),
        "cache_dir": config.get("data", {}).get("cache_dir") or meta.get("cache_dir"),  # an ensemble has no config
        "fit": meta.get("fit", LEGACY_FIT),
    }
    run_dir = file.parent
    history = _run_history(run_dir, ckpt.get("history"))
    info = {
        # what the history's curves measure; an ensemble's checkpoint has no config of its own
        "curves": asdict(CurveInfo.from_config(config)),
        "recipe": meta.get("recipe"),
        "epoch": ckpt.get("epoch"),
        "best": ckpt.get("best"),
        "model_args": meta.get("model_args"),
        "used_ema": bool(ckpt.get("ema")),
    }
    return ModelSource(
        "checkpoint",
        file,
        list(meta["classes"]),
        meta["arch"],
        int(meta.get("input_size", 32)),
        defaults,
        run_dir,
        history,
        info,
        model,
        dev,
    )


def onnx_placement(device: str) -> tuple[Device, int]:
    """``--device`` for an ONNX model: auto, cpu, cuda or cuda:N (N among the visible GPUs), as for a checkpoint.
    Anything else is refused: it ran on the CPU unsaid, and cuda:N on GPU 0."""
    kind, colon, index = device.partition(":")
    if kind in DEVICES and (not colon or (kind == "cuda" and index.isdigit())):
        return kind, int(index or 0)
    raise ConfigError(f"--device {device!r}: not a device; use auto, cpu, cuda or cuda:N")


def _load_onnx_source(path: Path, device: str) -> ModelSource:
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX model at {path}")
    from inference.runtime import OnnxClassifier

    onnx_device, device_id = onnx_placement(device)
    # a file it cannot load (ModelFileError) or without a card: a UsageError; cuda where it cannot run:
    # CudaPlacementError
    classifier = OnnxClassifier(path, device=onnx_device, device_id=device_id)
    card = classifier.card
    src = dict(card.source)
    defaults = {
        "dataset": src.get("dataset", card.dataset),
        "root": src.get("data_root"),
        "val_size": src.get("val_size"),
        "split_seed": src.get("split_seed"),
        # how the run's images were fitted (what parity read at export), not the card's choice for photos
        "fit": src.get("fit", LEGACY_FIT),
    }
    run_dir, history, curves = None, [], CurveInfo()
    own_history = None
    checkpoint = src.get("checkpoint")
    if checkpoint and Path(checkpoint).exists():
        # The exported file names its checkpoint: borrow the run's data split and history from it.
        ckpt_path = Path(checkpoint)
        run_dir = ckpt_path if ckpt_path.is_dir() else ckpt_path.parent
        try:
            ckpt = load_checkpoint(ckpt_path)
            meta = ckpt["meta"]
            curves = CurveInfo.from_config(ckpt.get("config"))
            own_history = ckpt.get("history")
            for key, meta_key in (
                ("dataset", "dataset"),
                ("root", "data_root"),
                ("val_size", "val_size"),
                ("split_seed", "split_seed"),
            ):
                defaults[key] = defaults.get(key) or meta.get(meta_key)
        except (OSError, KeyError, RuntimeError, ValueError) as exc:  # ValueError: not a readable checkpoint
            log.warning("could not read the source checkpoint %s: %s", checkpoint, exc)
        history = _run_history(run_dir, own_history)
    info = {
        "name": card.name,
        "precision": card.precision,
        "card_metrics": card.metrics,
        "calibration": card.calibration.model_dump(),
        "providers": classifier.providers,
        # The averaging its export put inside the graph: every call of the file already does it.
        "graph_tta": src.get("tta", "none"),
        "curves": asdict(curves),
    }
    return ModelSource(
        "onnx",
        path,
        list(card.classes),
        card.arch,
        int(card.input.size[0]),
        defaults,
        run_dir,
        history,
        info,
        classifier,
        torch.device("cpu"),
    )


def load_model(
    checkpoint: str | Path | None = None, onnx: str | Path | None = None, device: str = "auto"
) -> ModelSource:
    if (checkpoint is None) == (onnx is None):
        raise UsageError("give exactly one of --checkpoint and --onnx")
    if checkpoint is not None:
        return _load_checkpoint_source(Path(checkpoint), device)
    assert onnx is not None  # exactly one of the two is given
    return _load_onnx_source(Path(onnx), device)


def resolve_data(
    source: ModelSource | None,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "val",
    val_size: int | None = None,
    split_seed: int | None = None,
    cache_dir: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> DataSpec:
    """The evaluation split: explicit arguments first, then ``defaults``, then what the model records."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    known: dict[str, Any] = {}
    for layer in (source.data_defaults if source else {}, defaults or {}):
        known.update({k: v for k, v in layer.items() if v is not None})
    given = {"dataset": dataset, "root": root, "val_size": val_size, "split_seed": split_seed, "cache_dir": cache_dir}
    known.update({k: v for k, v in given.items() if v is not None})
    if not known.get("root") or not known.get("dataset"):
        raise UsageError("the model does not record its dataset: pass --dataset NAME and --data ROOT")
    return DataSpec(
        dataset=known["dataset"],
        root=str(known["root"]),
        split=split,
        val_size=int(known.get("val_size", 5000)),
        split_seed=int(known.get("split_seed", 42)),
        image_size=source.image_size if source else int(known.get("image_size", 32)),
        cache_dir=known.get("cache_dir", ".cache/datasets"),
        fit=known.get("fit", DEFAULT_FIT),
    )


def sample_fingerprint(data: ImageArrays) -> str:
    """A digest of the images and labels in order: two reports can be paired only if theirs match."""
    return data.fingerprint()


def match_classes(source: ModelSource, data: ImageArrays, spec: DataSpec) -> tuple[ImageArrays, str | None]:
    """The data with its labels in the model's class order, matched by name (exactly, else ``inference.classes.
    folded``: ignoring case and Unicode normalisation), so
    that a folder holding some of the model's classes, or its class folders spelled ``Cat/``, is scored
    right; a class the model does not know is refused. Only when no name matches at all and the counts agree
    (data whose classes are not named as the model's) is the label order assumed equal, with a note.
    Returns the data and a note for the report, or None where nothing needed saying."""
    model, given = list(source.classes), list(data.classes)
    if given == model:
        return data, None
    by_folded: dict[str, int] = {}
    for i, name in enumerate(model):
        by_folded.setdefault(folded(name), i)
    found = [model.index(c) if c in model else by_folded.get(folded(c)) for c in given]
    unknown = [c for c, i in zip(given, found) if i is None]
    if len(unknown) == len(given) and len(given) == len(model):
        message = (
            f"no class name of the data is one of the model's ({', '.join(given[:5])}...): label order assumed equal"
        )
        log.warning(message)
        return data, message
    if unknown:
        raise UsageError(
            f"{spec.dataset} {spec.root} holds classes {source.path} does not predict: {', '.join(unknown[:5])}"
            f"{', ...' if len(unknown) > 5 else ''} (its classes: {', '.join(model)}); a folder's class folders are "
            "matched to the model's classes by name"
        )
    index = [i for i in found if i is not None]  # all of them: an unknown class was refused above
    if len(set(index)) < len(index):
        raise UsageError(f"{spec.dataset} {spec.root} has two class folders for one class of the model: {given}")
    labels = np.asarray(index, dtype=np.int64)[data.labels]
    mapped = ImageArrays(data.images, labels, model)
    missing = [c for i, c in enumerate(model) if i not in set(index)]
    notes = []
    if [model[i] for i in index] != given:
        case = ", ignoring case" if any(c not in model for c in given) else ""
        notes.append(f"the data's class folders are matched to the model's classes by name{case}")
    if missing:
        more = ", ..." if len(missing) > 5 else ""
        notes.append(
            f"the data holds {len(given)} of the model's {len(model)} classes (none of "
            f"{', '.join(missing[:5])}{more}): those have no per-class accuracy, and a prediction of one is wrong"
        )
    return mapped, "; ".join(notes) or None


def check_view(source: ModelSource, tta: str) -> None:
    """Test-time augmentation on top of a graph that already averages views would average twice."""
    in_graph = source.info.get("graph_tta", "none")
    if tta != "none" and in_graph != "none":
        raise UsageError(
            f"{source.path} already averages {in_graph} views inside its graph (its card's source.tta); "
            "evaluate it with --tta none"
        )


PREDICTION_KEYS = ("logits", "labels", "classes", "fingerprint")  # what a report's predictions need (_savez)


def save_predictions(path: Path, logits: np.ndarray, labels: np.ndarray, classes: list[str], fingerprint: str) -> None:
    write_atomic(path, lambda f: _savez(f, logits, labels, classes, fingerprint))


def _savez(f, logits: np.ndarray, labels: np.ndarray, classes: list[str], fingerprint: str) -> None:
    np.savez_compressed(
        f,
        logits=logits.astype(np.float32),
        labels=labels.astype(np.int64),
        predictions=logits.argmax(1).astype(np.int64),
        classes=np.array(classes),
        fingerprint=np.array(fingerprint),
    )


def load_predictions(report_dir: str | Path) -> dict[str, Any]:
    """A report folder's per-sample predictions plus its metrics.json (under ``metrics``) and the run's
    history (under ``history``; empty for a report of a model without one, or written before reports kept it)."""
    report_dir = Path(report_dir)
    path = report_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {PREDICTIONS_FILE} in {report_dir}: re-run `python -m training evaluate`")
    metrics_path = report_dir / METRICS_FILE
    if not metrics_path.is_file():  # written last: an evaluation stopped part-way leaves only the predictions
        raise FileNotFoundError(
            f"no {METRICS_FILE} in {report_dir}: the report is incomplete; re-run `python -m training evaluate`"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise UsageError(f"{path} is damaged ({exc}): re-run `python -m training evaluate`") from None
    missing = [key for key in PREDICTION_KEYS if key not in out]
    if missing:
        raise UsageError(f"{path} holds no {', '.join(missing)}: not a report's; re-run `python -m training evaluate`")
    if "predictions" not in out:  # derived from the logits: a file written by hand (or a tool) may leave it out
        out["predictions"] = out["logits"].argmax(1)
    out["fingerprint"] = str(out["fingerprint"])
    out["classes"] = [str(c) for c in out["classes"]]
    out["metrics"] = read_json(metrics_path)
    if not isinstance(out["metrics"], dict) or not all(
        isinstance(out["metrics"].get(section, {}), dict) for section in ("source", "data")
    ):
        raise UsageError(f"{metrics_path} is not a report's metrics (edited?): re-run `python -m training evaluate`")
    history_path = report_dir / HISTORY_FILE
    out["history"] = read_json(history_path) if history_path.is_file() else []
    if not isinstance(out["history"], list) or not all(isinstance(epoch, dict) for epoch in out["history"]):
        raise UsageError(f"{history_path} is not a run's history (a list of epochs): copy the run's own, or delete it")
    return out


def graph_temperature(source: dict[str, Any]) -> float | None:
    """The temperature a report's calibrated ONNX graph divides its logits by (its card's); None for a checkpoint
    or a graph without one."""
    calibration = source.get("calibration") or {}
    if source.get("kind") == "onnx" and calibration.get("method") == "temperature":
        return float(calibration["temperature"])
    return None


def logits_before_temperature(report: dict[str, Any]) -> np.ndarray:
    """A loaded report's logits as its network computes them: a calibrated ONNX graph answers its logits divided
    by the temperature in its card, a checkpoint its raw logits. Reports of both kinds compare (or average) on
    equal terms only like this."""
    t = graph_temperature(report["metrics"].get("source") or {})
    return report["logits"] if t is None else undo_temperature(report["logits"], t)


def read_json(path: Path) -> Any:
    """A report's or a run's JSON file; a damaged one is named, with what to do."""
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # also bytes that are not UTF-8
        raise UsageError(f"{path} is not valid JSON ({exc}): it was cut short or edited; write it again") from None


def default_out_dir(source: ModelSource, split: str, tta: str) -> Path:
    suffix = f"{split}-tta-{tta}" if tta != "none" else split
    if source.kind == "checkpoint":
        assert source.run_dir is not None  # a checkpoint's source always names its run folder
        return source.run_dir / f"report-{source.path.stem}-{suffix}"
    return Path("reports") / f"{source.path.stem}-{suffix}"


def temperature_for(
    source: ModelSource, spec: DataSpec, data: ImageArrays, logits: np.ndarray, tta: str, batch_size: int
) -> tuple[np.ndarray, float, str] | None:
    """(logits without temperature, T, where T comes from) for the before/after calibration section.

    An ONNX model that divides by a temperature inside its graph has it recorded in its card; for
    anything else T is fitted on the validation split (never on training images), predicted again
    when the report is of another split. None when there is no validation split to fit on.
    """
    calibration = source.info.get("calibration") or {}
    if source.kind == "onnx" and calibration.get("method") == "temperature":
        t = float(calibration["temperature"])
        fitted = (
            "recorded in the model (fitted at export on these validation images, so the after row is in-sample; "
            "divided inside its graph)"
            if spec.split == "val"
            else "recorded in the model (fitted at export on the validation split, divided inside its graph)"
        )
        return undo_temperature(logits, t), t, fitted  # as export verify and the card undo it
    if spec.split == "val":
        fit_logits, fit_labels = logits, data.labels
    else:
        try:
            val = replace(spec, split="val").load() if spec.val_size else None
        except DatasetError:  # data of the user's own, too small for the model's held-out size
            val = None
        if val is None or len(val) == 0:
            return None
        val, _ = match_classes(source, val, spec)  # labels in the model's order, as the scored data's
        fit_logits, _ = source.predict(val, tta, batch_size)
        fit_labels = val.labels
    where = (
        "these validation images, so the after row is in-sample, as at export"
        if spec.split == "val"
        else f"the validation split ({len(fit_labels)} images"
        + (", which are among the images scored here: in-sample for those)" if spec.split == "all" else ")")
    )
    t = fit_temperature(fit_logits, fit_labels)
    return logits, t, f"fitted here on {where}{fit_caveat(fit_logits, fit_labels, t)}"


def fit_caveat(logits: np.ndarray, labels: np.ndarray, temperature: float) -> str:
    """Why a temperature fitted on these samples means little, by which way the fit ran off; "" where it means
    something (``meaningless_fit``)."""
    if not meaningless_fit(logits, labels, temperature):
        return ""
    top = TEMPERATURE_BOUNDS[1]
    if abs(np.log(temperature / top)) < abs(np.log(temperature / TEMPERATURE_BOUNDS[0])):
        # flattening every sample's probabilities to equal ones was still improving the likelihood
        return (
            f", where it means little: T was pushed to the top of its range ({top:g}), as the logits of those images "
            "are no better than a uniform guess (a model near chance), so the "
            "temperature-scaled row gives every class about the same probability"
        )
    return (
        ", where it means little: those images carry no calibration signal (all or nearly all of them right, so "
        "the fit only sharpens the logits), so the temperature-scaled row says nothing about other images"
    )


def calibration_section(raw_logits: np.ndarray, labels: np.ndarray, temperature: float, origin: str) -> dict[str, Any]:
    """metrics.json's ``calibration``: before/after numbers and the reliability bins of both."""
    report = calibration_report(raw_logits, labels, temperature)
    report["temperature_origin"] = origin
    z = raw_logits.astype(np.float64)
    report["reliability"] = {
        "before": reliability_bins(softmax(z), labels),
        "after": reliability_bins(softmax(z / temperature), labels),
    }
    return report


def _gradcam_samples(labels: np.ndarray, preds: np.ndarray, confidence: np.ndarray, per_group: int) -> list[int]:
    """The most confident correct samples of distinct classes, then the most confident mistakes."""
    correct_idx = np.flatnonzero(preds == labels)
    chosen, seen = [], set()
    for i in correct_idx[np.argsort(-confidence[correct_idx], kind="stable")]:
        if labels[i] not in seen:
            chosen.append(int(i))
            seen.add(labels[i])
        if len(chosen) == per_group:
            break
    wrong_idx = np.flatnonzero(preds != labels)
    chosen += [int(i) for i in wrong_idx[np.argsort(-confidence[wrong_idx], kind="stable")][:per_group]]
    return chosen


def render_gradcam(
    source: ModelSource,
    data: ImageArrays,
    preds: np.ndarray,
    confidence: np.ndarray,
    classes: list[str],
    path: Path,
    per_group: int = GRADCAM_PER_GROUP,
    tta: str = "none",
    subtitle: str | None = None,
) -> list[int]:
    indices = _gradcam_samples(data.labels, preds, confidence, per_group)
    if not indices:
        figures.plot_gradcam(np.zeros((0,)), np.zeros((0,)), [], [], path, subtitle=subtitle)
        return []
    images = data.images[indices]
    batch = to_unit(torch.from_numpy(images).permute(0, 3, 1, 2)).to(source.device)
    cam = GradCAM(source.model)  # NoSpatialMap where the model has no spatial layer: the caller skips the figure
    cams = cam(batch, torch.from_numpy(preds[indices]))
    assert cam.map_size is not None and cam.stride is not None  # set by the call
    (height, width), (row_step, col_step) = cam.map_size, cam.stride
    # the overlay is smooth at the image's size; say how coarse the map under it is, and what it is not
    note = [f"{height}x{width} map of the last stage, upsampled; each scaled to its own maximum"]
    covered = round(height * row_step), round(width * col_step)
    if covered != tuple(batch.shape[-2:]):  # a map its pooling floored: its cells sit where they read, not stretched
        note[0] = (
            f"{height}x{width} map of the last stage, cells {row_step:g} px apart, upsampled over its "
            f"{covered[0]}x{covered[1]} px; each scaled to its own maximum"
        )
    if source.arch == "ensemble":
        note.append("first member's layer" + (f", its unaugmented view of {cam.views}" if cam.views > 1 else ""))
    if tta != "none":
        note.append("from the image alone, predictions from the TTA views")
    titles, correct = [], []
    for i in indices:
        ok = bool(preds[i] == data.labels[i])
        correct.append(ok)
        true, predicted = figures.short_label(classes[data.labels[i]]), figures.short_label(classes[preds[i]])
        titles.append(f"{predicted} ({confidence[i]:.2f})" if ok else f"{true} -> {predicted} ({confidence[i]:.2f})")
    figures.plot_gradcam(
        images, cams, titles, correct, path, subtitle=subtitle, map_note="; ".join(note), titles_note=GRADCAM_TITLES
    )
    return indices


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _top(metrics: dict[str, Any], k: int) -> str:
    """Top-k, or n/a where the model has no more than k classes (every label is then among its top k)."""
    return _pct(metrics[f"top{k}"]) if metrics[f"top{k}"] is not None else "n/a"


def write_report_md(path: Path, metrics: dict[str, Any], files: dict[str, str | None], notes: list[str]) -> None:
    src, data = metrics["source"], metrics["data"]
    in_graph = src.get("graph_tta", "none")
    tta = TTA_DESCRIPTIONS[metrics["tta"]] if in_graph == "none" else f"{TTA_DESCRIPTIONS[in_graph]} inside the graph"
    lines = [
        f"# Evaluation of `{src['path']}`",
        "",
        f"{src['kind']} `{src['arch']}` on {metrics['data_description']} ({metrics['num_samples']} images, "
        f"{metrics['num_classes']} classes), {tta}.",
        "",
        "| top-1 | top-3 | top-5 | loss | ECE | macro F1 | mean per-class accuracy |",
        "|---|---|---|---|---|---|---|",
        f"| {_pct(metrics['top1'])} | {_top(metrics, 3)} | {_top(metrics, 5)} | {metrics['loss']:.4f} | "
        f"{metrics['ece']:.4f} | {metrics['macro_avg']['f1']:.4f} | {_pct(metrics['mean_per_class_accuracy'])} |",
        "",
        f"Prediction took {metrics['wall_time_s']:.2f} s ({metrics['images_per_s'] or 0:.0f} images/s) on "
        f"{metrics['device']}.",
    ]
    calibration = metrics.get("calibration") or {}
    if calibration and graph_temperature(src) is not None:
        # the table is of what the model answers, which its graph has already divided by T: a checkpoint's
        # report of the same network shows its raw logits' loss and ECE, so say both
        before = calibration["before"]
        lines += [
            "",
            f"Loss and ECE are of the model's answers, which its graph divides by its temperature "
            f"(T = {calibration['temperature']:.4f}); before it: loss {before['nll']:.4f}, ECE {before['ece']:.4f}, "
            "as a checkpoint's report shows them.",
        ]
    recorded = (src.get("best") or {}).get("val_top1")
    if recorded is not None and data["split"] == "val":
        lines += [
            "",
            f"Training recorded {_pct(recorded)} val top-1 for this checkpoint, without test-time augmentation "
            "and in the run's precision (bf16 where its hardware had it); this evaluation runs in fp32, so a few "
            "samples may differ even without augmentation.",
        ]
    ranked = sorted((c for c in metrics["per_class"] if c["accuracy"] is not None), key=lambda c: c["accuracy"])
    if len(ranked) >= 2:
        weak, strong = ranked[: min(5, len(ranked) // 2)], ranked[::-1][: min(3, len(ranked) // 2)]
        lines += [
            "",
            "Weakest classes: "
            + ", ".join(f"{c['class']} {_pct(c['accuracy'])}" for c in weak)
            + "; strongest: "
            + ", ".join(f"{c['class']} {_pct(c['accuracy'])}" for c in strong)
            + ".",
        ]
    if metrics["top_confusions"]:
        lines += [
            "",
            "Most frequent confusions (true -> predicted): "
            + ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in metrics["top_confusions"][:5])
            + ".",
        ]
    cal = metrics.get("calibration")
    if cal:
        lines += [
            "",
            "## Calibration",
            "",
            f"Temperature scaling divides the logits by T = {cal['temperature']:.4f}, "
            f"{cal['temperature_origin']}. ECE over 15 equal-width confidence bins; Brier score summed over "
            "classes.",
            "",
            "| | ECE | NLL | Brier | mean confidence | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        scaled = f"temperature-scaled (T = {cal['temperature']:.3f})"
        for name, key in (("uncalibrated (T = 1)", "before"), (scaled, "after")):
            m = cal[key]
            lines.append(
                f"| {name} | {m['ece']:.4f} | {m['nll']:.4f} | {m['brier']:.4f} | "
                f"{_pct(m['mean_confidence'])} | {_pct(m['accuracy'])} |"
            )
    captions = {
        "confusion_matrix": "Confusion matrix, each row normalised over its true class",
        "per_class_accuracy": "Per-class accuracy; the dashed line is the mean over classes",
        "misclassified": "The most confident mistakes",
        "reliability": "Reliability diagrams before and after temperature scaling: accuracy per confidence bin "
        "against the diagonal of perfect calibration",
        "gradcam": "Grad-CAM heat maps of the predicted class, correct samples (green) then mistakes (red)",
        "training_curves": "Training curves from the run's history",
    }
    lines += ["", "## Figures"]
    for key, caption in captions.items():
        if files.get(key):
            lines += ["", f"**{caption}.**", "", f"![{key}]({files[key]})"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += [
        "",
        f"All numbers: `{METRICS_FILE}`; per-sample logits and labels: `{PREDICTIONS_FILE}` "
        "(`python -m training compare` pairs two reports).",
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


TTA_SHORT = {"none": "no TTA", "flip": "flip TTA", "multicrop": "multi-crop TTA"}


def model_label(source: ModelSource) -> str:
    if source.kind == "onnx":
        return f"{source.info['name']} ({source.info['precision']} ONNX graph)"
    return f"{source.arch} checkpoint {source.path.parent.name}/{source.path.name}"


def figure_subtitle(source: ModelSource, split: str, tta: str, num_samples: int) -> str:
    """Which model, views and images a report's figures show, for each figure's heading."""
    in_graph = source.info.get("graph_tta", "none") if source.kind == "onnx" else "none"
    views = f"{TTA_SHORT[in_graph]} in the graph" if in_graph != "none" else TTA_SHORT[tta]
    return f"{model_label(source)} · {views} · {split} split, {num_samples:,} images"


def confidence_note(source: ModelSource) -> str:
    """What a report's per-sample confidence is: a checkpoint's softmax is before any temperature; a
    calibrated graph answers after its own."""
    t = graph_temperature({"kind": source.kind, "calibration": source.info.get("calibration")})
    if t is not None:
        return f"softmax probability of the predicted class, calibrated (the graph divides by T = {t:.3f})"
    return "softmax probability of the predicted class, uncalibrated (T = 1)"


def _check_report_out(out: Path, model: str | Path | None = None) -> None:
    """A report folder is a report's own: in a run's folder it would replace the run's history.json and curves
    (and `ensemble` and `compare` would then take the folder for a report, not the run); and the report of
    another ``model`` (a checkpoint or ONNX path) is that model's, whose figures an ensemble or a comparison
    may read."""
    if model is not None:
        _check_not_anothers(out, model, f"--out {out}")
    # A report's own folder (even one stopped after its predictions) is rewritten; any other holding files is
    # someone's: its report.md or figures of the same names would be replaced.
    check_own_folder(
        out,
        "report",
        PREDICTIONS_FILE,
        (LAST_FILE, BEST_FILE, SUMMARY_FILE),
        elsewhere=" (by default it goes to a folder inside the run's)",
    )


def check_own_folder(
    out: Path, kind: str, own_file: str, run_files: tuple[str, ...], files_only: bool = False, elsewhere: str = ""
) -> None:
    """Refuse ``out`` as the folder of a new ``kind`` (a report, an ablation) where it holds a training run (any
    of ``run_files``), or, without the ``own_file`` that marks a ``kind``'s own folder, anything else (files
    only, with ``files_only``): what the ``kind`` writes would be mixed in among those files or replace them."""
    held = [name for name in run_files if (out / name).is_file()]
    if held:
        raise UsageError(
            f"--out {out} holds a training run ({', '.join(held)}): write the {kind} to another folder{elsewhere}"
        )
    if out.is_dir() and not (out / own_file).is_file():
        others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and (p.is_file() or not files_only))
        if others:
            raise UsageError(
                f"--out {out} holds files and no {kind} ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})"
                f": write the {kind} to a new or empty folder"
            )


def _check_not_anothers(out: Path, model: str | Path, named: str) -> None:
    reported = _reported_model(out)
    if reported is not None and _same_file(reported, model) is False:
        raise UsageError(
            f"{named} holds the report of another model ({reported}): write this one to another folder (--out), "
            "or delete that report first"
        )


def _reported_model(out: Path) -> str | None:
    """The model path a report folder's metrics name, or None (no report there, or one that cannot be read)."""
    try:
        path = json.loads((out / METRICS_FILE).read_text())["source"]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if isinstance(path, str) else None


def _same_file(reported: str, model: str | Path) -> bool | None:
    """Whether the report's model and ``model`` are one file or run folder (a run folder's report names its
    best.pt); None when the report's path is not here to tell (a report copied from another machine)."""
    if not Path(reported).exists():
        return None
    return checkpoint_file(reported).resolve() == checkpoint_file(model).resolve()


@contextmanager
def report_folder(out_dir: Path) -> Iterator[None]:
    """``out_dir`` made, with the parents it lacks, for the body; those made are taken away again when the body
    fails or is stopped before writing in them, so an evaluation that never got to its report leaves no folder."""
    made = folders_to_make(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        remove_if_empty(made)
        raise


def evaluate(
    checkpoint: str | Path | None = None,
    onnx: str | Path | None = None,
    out: str | Path | None = None,
    dataset: str | None = None,
    root: str | None = None,
    split: str = "val",
    tta: str = "none",
    val_size: int | None = None,
    split_seed: int | None = None,
    cache_dir: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
    gradcam_per_group: int = GRADCAM_PER_GROUP,
    max_classes: int = figures.MAX_CLASSES,
    sample_figures: bool = True,
) -> dict[str, Any]:
    """Evaluate a checkpoint or ONNX model and write the report folder; returns the metrics. Without
    ``sample_figures`` the two figures made of the dataset's own images (misclassified samples, Grad-CAM) are
    left out, for a report kept where copies of the data must not be."""
    check_tta(tta)
    if out is not None:
        _check_report_out(Path(out), checkpoint or onnx)
    source = load_model(checkpoint, onnx, device)
    check_view(source, tta)
    spec = resolve_data(source, dataset, root, split, val_size, split_seed, cache_dir)
    out_dir = Path(out) if out else default_out_dir(source, split, tta)
    if inside_the_data(spec.dataset, spec.root, out_dir):
        named = f"--out {out_dir}" if out else f"the default report folder {out_dir}"
        raise UsageError(
            f"{named} is inside the dataset {spec.root}: the report's figures would be read as images of it by "
            "later runs; write the report to a folder outside it (--out)"
        )
    data = spec.load()
    if len(data) == 0:
        held_out = " (the run held out none: data.val_size=0; evaluate it on other images, --data ROOT --split all)"
        raise UsageError(
            f"{spec.dataset} {spec.root} split {split!r} has no samples{held_out if split == 'val' else ''}"
        )
    data, note = match_classes(source, data, spec)
    notes = [note] if note else []
    if not out:  # two ONNX files of one name go to one default folder, reports/<name>-<split>
        _check_not_anothers(out_dir, checkpoint or onnx or "", f"the default report folder {out_dir}")
    with report_folder(out_dir):
        return _write_report(
            source, spec, data, notes, out_dir, tta, batch_size, gradcam_per_group, max_classes, sample_figures
        )


def _write_report(
    source: ModelSource,
    spec: DataSpec,
    data: ImageArrays,
    notes: list[str],
    out_dir: Path,
    tta: str,
    batch_size: int,
    gradcam_per_group: int,
    max_classes: int,
    sample_figures: bool,
) -> dict[str, Any]:
    """Predict, and write the report folder ``out_dir`` (made): evaluate's work once its input is checked."""
    classes = source.classes
    logits, seconds = source.predict(data, tta, batch_size)
    metrics = compute_metrics(logits, data.labels, classes)
    fingerprint = sample_fingerprint(data)
    metrics = {
        "source": {"kind": source.kind, "path": str(source.path), "arch": source.arch, **source.info},
        "data": {**asdict(spec), "fingerprint": fingerprint},
        "data_description": spec.describe(),
        "tta": tta,
        "device": str(source.device) if source.kind == "checkpoint" else ",".join(source.info["providers"]),
        "wall_time_s": seconds,
        "images_per_s": len(data) / seconds if seconds > 0 else None,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        **metrics,
    }
    scaling = temperature_for(source, spec, data, logits, tta, batch_size)
    # A report stopped midway must not pair these predictions with an earlier evaluation's metrics (compare
    # reads its TTA and data from them): the old metrics go before the new predictions arrive.
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    (out_dir / "report.md").unlink(missing_ok=True)  # nor a person read the earlier report beside them
    save_predictions(out_dir / PREDICTIONS_FILE, logits, data.labels, classes, fingerprint)
    if scaling is None:
        notes.append(
            "No calibration section: no validation split to fit a temperature on (the run held out none, or "
            "this data is smaller than the images it holds out)."
        )
    else:
        metrics["calibration"] = calibration_section(scaling[0], data.labels, scaling[1], scaling[2])

    probs = softmax(logits)
    preds, confidence = logits.argmax(1), probs.max(1)
    subtitle = figure_subtitle(source, spec.split, tta, len(data))
    files: dict[str, str | None] = {}
    with tqdm(total=6, desc="figures", unit="figure", leave=False) as bar:
        figures.plot_confusion_matrix(
            np.array(metrics["confusion_matrix"]), classes, out_dir / "confusion_matrix.png", max_classes, subtitle
        )
        files["confusion_matrix"] = "confusion_matrix.png"
        bar.update()
        figures.plot_per_class_accuracy(
            [c["accuracy"] for c in metrics["per_class"]],
            classes,
            out_dir / "per_class_accuracy.png",
            max_classes,
            subtitle,
        )
        files["per_class_accuracy"] = "per_class_accuracy.png"
        bar.update()
        if sample_figures:
            metrics["misclassified_shown"] = figures.plot_misclassified(
                data.images,
                data.labels,
                preds,
                confidence,
                classes,
                out_dir / "misclassified.png",
                subtitle=subtitle,
                confidence_note=confidence_note(source),
            )
            files["misclassified"] = "misclassified.png"
        else:
            notes.append(
                "Misclassified samples and Grad-CAM are left out (--no-sample-figures): they are made of the "
                "dataset's images. The same command without the flag writes them."
            )
        bar.update()
        if "calibration" in metrics:
            cal = metrics["calibration"]
            # T fitted on the very images shown flatters the after panel; the figure says so, as the report does
            fitted_here = {"val": "\nT fitted on these images: in-sample", "all": "\nT fitted on the val part of these"}
            figures.plot_reliability(
                [
                    (f"uncalibrated (T = 1): ECE {cal['before']['ece']:.4f}", cal["reliability"]["before"]),
                    (
                        f"temperature-scaled (T = {cal['temperature']:.3f}): ECE {cal['after']['ece']:.4f}"
                        + fitted_here.get(spec.split, ""),
                        cal["reliability"]["after"],
                    ),
                ],
                out_dir / "reliability.png",
                subtitle,
            )
            files["reliability"] = "reliability.png"
        bar.update()
        if sample_figures and source.supports_gradcam:
            try:
                metrics["gradcam_samples"] = render_gradcam(
                    source, data, preds, confidence, classes, out_dir / "gradcam.png", gradcam_per_group, tta, subtitle
                )
                files["gradcam"] = "gradcam.png"
            except NoSpatialMap as exc:
                notes.append(f"Grad-CAM skipped: {source.arch} has no spatial layer to show evidence on ({exc}).")
        elif sample_figures:
            notes.append("Grad-CAM skipped: an ONNX model exposes no gradients; evaluate its checkpoint for heat maps.")
        bar.update()
        if source.history:
            plot_training_curves(
                source.history,
                out_dir / "training_curves.png",
                CurveInfo(**source.info["curves"]),
                f"{model_label(source)} · its training run, by epoch",
            )
            write_text_atomic(out_dir / HISTORY_FILE, json.dumps(source.history, indent=1))
            files["training_curves"] = "training_curves.png"
        else:
            notes.append("No training curves: no history.json next to the model and none in the checkpoint.")
        bar.update()
    if len(classes) > max_classes:
        notes.append(
            f"With {len(classes)} classes the confusion matrix and bar chart show the {max_classes} worst "
            "classes; metrics.json has all of them."
        )
    metrics["notes"] = notes
    metrics["files"] = {k: v for k, v in files.items() if v}
    written = {*files.values(), HISTORY_FILE if source.history else None}
    for stale in set(FIGURES + (HISTORY_FILE,)) - written:  # an earlier report's, in a reused --out
        (out_dir / stale).unlink(missing_ok=True)
    write_text_atomic(out_dir / METRICS_FILE, json.dumps(metrics, indent=2))
    write_report_md(out_dir / "report.md", metrics, files, notes)
    metrics["out_dir"] = str(out_dir)
    return metrics
