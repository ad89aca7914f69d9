"""Recover a training checkpoint from a shipped FP32 graph when the run that made it is gone.

This project's exporter keeps the network's parameter and buffer names on the graph's initializers (the
state dict's own, behind a ``model.`` for each wrapper: test-time augmentation, temperature), and the card
records the arch, model arguments, classes, normalisation and data split. So the network can be rebuilt and
its weights read back. A BatchNorm that the exporter folded into its convolution comes back as one that only
shifts (the same function; its training statistics are not in the graph). The rebuilt checkpoint is proven
before it is written: wrapped in the card's test-time augmentation and temperature, it must give the graph's
own outputs on the validation split within FP32's parity limits. It serves where a checkpoint is needed and a
graph is not enough: joining an ensemble (`python -m training ensemble`), Grad-CAM, another test-time
augmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from inference.errors import UsageError
from inference.manifest import ModelEntry
from inference.runtime import OnnxClassifier
from training.checkpoint import check_checkpoint_out, save_model_checkpoint
from training.dataset_cache import DEFAULT_CACHE_DIR
from training.inference import with_tta
from training.models import ImageClassifier, create_model

from .parity import Parity, parity_against, torch_logits
from .pipeline import ParityError
from .sources import from_project, source_at, validation_split
from .verify import ListedModel, listed_model

# BatchNorm's update counter is not part of the computation, so the exporter leaves it out of the graph.
NOT_IN_GRAPH = ("num_batches_tracked",)


def recovered_meta(listed: ListedModel | ModelEntry, data_root: str | None = None) -> dict:
    """A training checkpoint's meta from a card (a bare entry is checked as ``listed_model`` checks it): what
    rebuilds the network and names its data (``data_root``: where that dataset is now, if it has moved since the
    training; later commands read it there)."""
    if isinstance(listed, ModelEntry):
        listed = ListedModel.of(listed)
    entry, src = listed.entry, listed.source
    if src.model_args is None:  # the rest of what names the data the record requires
        raise UsageError(f"{entry.name}'s card lacks model_args: it does not say how to rebuild its network")
    return {
        "arch": entry.arch,
        "model_args": src.model_args,
        "num_classes": len(entry.classes),
        "classes": list(entry.classes),
        "mean": list(entry.input.mean),
        "std": list(entry.input.std),
        "input_size": entry.input.size[0],
        "fit": src.fit,  # how the run's images were fitted, not the card's choice for photos
        "dataset": src.dataset,
        "data_root": data_root or src.data_root,
        "val_size": src.val_size,
        "split_seed": src.split_seed,
        "recipe": src.recipe,
        **({"members": src.members} if src.members is not None else {}),
        **({"teacher": src.teacher} if src.teacher is not None else {}),
        "recovered_from": {"name": entry.name, "file": entry.file, "sha256": entry.sha256},
    }


def _wrapper_prefix(names, key: str) -> str:
    """The ``model.`` of each wrapper the graph was exported through (export/calibration.TemperatureScaled,
    training.inference.ViewAverage): each holds the network as ``.model``, and the exporter names a tensor
    by its path from the outermost module."""
    for depth in range(3):
        if "model." * depth + key in names:
            return "model." * depth
    return ""


def weights_from_graph(path: Path, model: ImageClassifier) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor read from the graph's initializer of the same name."""
    graph = {init.name: init for init in onnx.load(str(path)).graph.initializer}
    state, missing = model.state_dict(), []
    prefix = _wrapper_prefix(graph, next(iter(state)))
    for key, tensor in state.items():
        init = graph.get(prefix + key)
        if init is None:
            if not key.endswith(NOT_IN_GRAPH):
                missing.append(key)
            continue
        value = numpy_helper.to_array(init)
        if value.shape != tuple(tensor.shape):
            raise UsageError(
                f"{path.name}: {key} is {list(value.shape)} in the graph, {list(tensor.shape)} in the model"
            )
        state[key] = torch.from_numpy(np.array(value)).to(tensor.dtype)
    missing = _unfold_batchnorms(model, state, graph, prefix, missing)
    missing = _merged_constants(state, graph, missing)
    if missing:
        raise UsageError(
            f"{path.name} lacks {len(missing)} of the network's tensors by name ({', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): it was not exported by this project from this network, or "
            "its exporter folded them into others"
        )
    return state


def _unfold_batchnorms(model: nn.Module, state: dict, graph: dict, prefix: str, missing: list[str]) -> list[str]:
    """A BatchNorm that the exporter's optimiser folded into the convolution before it leaves that convolution's
    weight scaled (same name) and a shift named ``<conv>.weight_bias``; it comes back as a BatchNorm that only adds
    the shift, which computes the same in evaluation (all a graph holds; its training statistics are gone).
    Returns the keys still missing."""
    gone, conv = set(missing), None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            conv = name
            continue
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        keys = {f"{name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")}
        shift = graph.get(f"{prefix}{conv}.weight_bias") if conv is not None else None
        if keys <= gone and shift is not None and module.affine and module.track_running_stats:
            bias = torch.from_numpy(np.array(numpy_helper.to_array(shift)))
            state[f"{name}.weight"] = torch.ones_like(state[f"{name}.weight"])
            state[f"{name}.bias"] = bias.to(state[f"{name}.bias"].dtype)
            state[f"{name}.running_mean"] = torch.zeros_like(state[f"{name}.running_mean"])
            state[f"{name}.running_var"] = torch.full_like(state[f"{name}.running_var"], 1.0 - module.eps)
            gone -= keys
        conv = None
    return [k for k in missing if k in gone]


def _merged_constants(state: dict, graph: dict, missing: list[str]) -> list[str]:
    """The exporter keeps one initializer of any set with equal values and points every user at it, and drops a
    zero bias (adding zero is nothing). So a tensor that still holds the value the network is built with (a
    member's normalisation, the ones of a BatchNorm without learnable scale, a whitening bias never trained) can
    be gone by name. It keeps its built value when the graph holds a twin of exactly that value, or when it is
    a zero bias; the parity check against the graph's own outputs then proves the whole. Returns the keys still
    missing."""
    left = []
    for key in missing:
        built = state[key].detach().cpu().numpy()
        if key.endswith(".bias") and not built.any():
            continue
        if not any(
            tuple(init.dims) == built.shape and np.array_equal(numpy_helper.to_array(init), built)
            for init in graph.values()
        ):
            left.append(key)
    return left


def recover_checkpoint(
    name: str,
    out: str | Path,
    models_dir: str | Path = "models",
    cache_dir: str | None = DEFAULT_CACHE_DIR,
    max_val_images: int | None = None,
    data_root: str | None = None,
    replace: bool = False,
) -> tuple[dict, Parity]:
    """Write the checkpoint of the shipped FP32 model ``name`` to ``out`` once it reproduces the graph;
    ``data_root``: where its dataset is now (``--data``), if it has moved since the training; ``replace``:
    write over an existing ``out``."""
    models_dir = Path(models_dir)
    check_checkpoint_out(Path(out), replace=replace)  # before minutes of work, not after
    listed = listed_model(models_dir, name)
    entry = listed.entry
    if entry.precision != "fp32":
        raise UsageError(f"{name} is {entry.precision}: its weights were rounded; recover from its FP32 graph")
    # the card records its data relative to the project (where exports run): found from any folder, as verify finds
    # it, and written as this folder finds it, for the commands that read the checkpoint next
    meta = recovered_meta(listed, data_root or from_project(listed.source.data_root, models_dir))
    model = create_model(meta["arch"], meta["num_classes"], meta["mean"], meta["std"], **meta["model_args"])
    model.load_state_dict(weights_from_graph(models_dir / entry.file, model))
    model.eval()
    # Read now, with the weights, as listed_model checked it: another command may replace the file while the
    # validation images are read (minutes), and the checkpoint says it was recovered from this one.
    graph = OnnxClassifier(models_dir / entry.file, device="cpu")
    source = source_at(listed.source.model_dump(), cache_dir, meta["data_root"])
    val = validation_split(source, max_val_images, entry.classes, moved=data_root is not None)
    with torch.no_grad():
        logits, speed = torch_logits(with_tta(model, listed.source.tta), val.images)
    parity, _ = parity_against(
        logits / entry.calibration.temperature, speed, graph, val.images, val.labels, split_images=source["val_size"]
    )
    if not parity.passed:
        raise ParityError(
            f"the network rebuilt from {entry.file} does not reproduce it: {parity.verdict()}\n{parity.summary()}"
        )
    save_model_checkpoint(meta, model, out)
    return meta, parity
