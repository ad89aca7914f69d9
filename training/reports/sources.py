"""A model to evaluate: a checkpoint (torch) or an exported ONNX file, loaded by ``load_model`` as a
:class:`ModelSource` that predicts logits and carries what the model records of its data and training run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from inference.devices import Device
from inference.errors import UsageError
from inference.fits import LEGACY_FIT

from ..checkpoint import (
    checkpoint_file,
    load_checkpoint,
    load_checkpoint_and_sha256,
    model_from_checkpoint,
    recorded_top1,
)
from ..config import ConfigError, device_remedy
from ..data import ImageArrays
from ..data.loader import TensorLoader
from ..data.targets import Targets
from ..device import resolve_device
from ..inference import check_tta, predict_logits
from ..plots import CurveInfo
from .graph import graph_logits
from .predictions import HISTORY_FILE

log = logging.getLogger("training.reports")


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


def _recorded_cache_dir(config: dict, meta: dict) -> str | None:
    """The run's data.cache_dir, else its meta's (an ensemble has no config). "" is a choice, no cache, not a gap
    to fill: a run trained without a cache is evaluated without one."""
    chosen = config.get("data", {}).get("cache_dir")
    return chosen if chosen is not None else meta.get("cache_dir")


def _load_checkpoint_source(path: Path, device: str) -> ModelSource:
    ckpt, sha256 = load_checkpoint_and_sha256(path)
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
        "cache_dir": _recorded_cache_dir(config, meta),
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
        "recorded_top1": recorded_top1(ckpt),
        "model_args": meta.get("model_args"),
        "used_ema": bool(ckpt.get("ema")),
        "val_fingerprint": held_out_fingerprint(meta),
        # What an export's card records of it (source.checkpoint_sha256): the reports of both name one model.
        "checkpoint_sha256": sha256,
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


def held_out_fingerprint(meta: dict) -> str | None:
    """The digest of the validation images the run held out (its meta's ``data_fingerprint`` is training's and
    validation's, joined by a colon), or None where it held out none or did not record them."""
    parts = str(meta.get("data_fingerprint") or "").split(":")
    return parts[1] if len(parts) == 2 else None


def onnx_placement(device: str) -> tuple[Device, int]:
    """``--device`` for an ONNX model: auto, cpu, cuda or cuda:N (N among the visible GPUs), as for a checkpoint.
    Anything else is refused: it ran on the CPU unsaid, and cuda:N on GPU 0."""
    remedy = device_remedy(device)
    if remedy:
        raise ConfigError(f"--device {device!r}: not a device; {remedy}")
    kind, _, index = device.partition(":")
    return cast(Device, kind), int(index or 0)


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
    own_history, val_fingerprint = None, None
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
            val_fingerprint = held_out_fingerprint(meta)
            for key, meta_key in (
                ("dataset", "dataset"),
                ("root", "data_root"),
                ("val_size", "val_size"),
                ("split_seed", "split_seed"),
            ):
                defaults[key] = defaults.get(key) or meta.get(meta_key)
            defaults["cache_dir"] = _recorded_cache_dir(ckpt.get("config") or {}, meta)
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
        # the card records it too: a graph whose checkpoint is gone (deleted, or the file copied to another
        # machine) still tells the run's held-out images from others
        "val_fingerprint": val_fingerprint or src.get("val_fingerprint"),
        **_checkpoint_identity(src),
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


def _checkpoint_identity(card_source: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint an exported graph holds the weights of, as its card records it (sha256, and the path it was
    read from): a report of the graph and one of that checkpoint are then known for one model's. Nothing where
    the card records no digest (a graph exported by hand, or an early card)."""
    sha256 = card_source.get("checkpoint_sha256")
    if not sha256:
        return {}
    return {"checkpoint_sha256": sha256, "checkpoint": card_source.get("checkpoint")}


def load_model(
    checkpoint: str | Path | None = None, onnx: str | Path | None = None, device: str = "auto"
) -> ModelSource:
    if (checkpoint is None) == (onnx is None):
        raise UsageError("give exactly one of --checkpoint and --onnx")
    if checkpoint is not None:
        return _load_checkpoint_source(Path(checkpoint), device)
    assert onnx is not None  # exactly one of the two is given
    return _load_onnx_source(Path(onnx), device)


def check_view(source: ModelSource, tta: str) -> None:
    """Test-time augmentation on top of a graph that already averages views would average twice."""
    in_graph = source.info.get("graph_tta", "none")
    if tta != "none" and in_graph != "none":
        raise UsageError(
            f"{source.path} already averages {in_graph} views inside its graph (its card's source.tta); "
            "evaluate it with --tta none"
        )


def check_finite(source: ModelSource, logits: np.ndarray, images: str = "images") -> None:
    """Refuse the logits of a model that answers NaN or inf: a report of them would hold NaN losses and ECE, an
    arbitrary fitted temperature and arbitrary predictions (the argmax of NaN), and look like a report."""
    broken = ~np.isfinite(logits).all(axis=1)
    if broken.any():
        raise UsageError(
            f"{source.path} is broken: it answers NaN or infinite logits for {int(broken.sum())} of {len(logits)} "
            f"{images} (the first: #{int(np.flatnonzero(broken)[0])}), so nothing a report says of it would mean "
            "anything (a damaged or diverged checkpoint, or a precision its logits overflow)"
        )
