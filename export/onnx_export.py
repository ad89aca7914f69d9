"""PyTorch checkpoint -> ONNX file whose metadata describes it (classes, input spec, metrics)."""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch

from inference.fits import DEFAULT_FIT, FitName
from inference.manifest import METADATA_KEY, InputSpec, ModelCard

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "logits"
log = logging.getLogger("export")


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """An OSError of a write itself (a full disk, a file-size limit) names no file: it is raised naming ``path``,
    so the user learns where, not only what ran out."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc


def input_spec(meta: dict, fit: FitName | None = None) -> InputSpec:
    """The card's input spec from a checkpoint's meta. ``fit``: how serving fits photos of another shape;
    default the training run's (a run from before runs recorded one: inference.fits.DEFAULT_FIT)."""
    size = int(meta["input_size"])
    return InputSpec(
        name=INPUT_NAME,
        shape=(3, size, size),
        mean=tuple(meta["mean"]),
        std=tuple(meta["std"]),
        fit=fit or meta.get("fit", DEFAULT_FIT),
    )


def export_fp32(model: torch.nn.Module, path: Path, image_size: int) -> None:
    """Export with the torch.export-based exporter (the supported one) and a dynamic batch axis."""
    model = model.eval().float().to(memory_format=torch.contiguous_format)
    example = (torch.rand(2, 3, image_size, image_size),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation chatter is not the user's concern
        program = torch.onnx.export(
            model,
            example,
            dynamo=True,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            optimize=True,
            verbose=False,
        )
    assert program is not None  # None comes from the legacy (dynamo=False) exporter only
    with writing(path):
        program.save(str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)


# A lone UTF-16 surrogate: how Python holds a file name's bytes that are not UTF-8 (surrogate escapes)
SURROGATE = re.compile("[\ud800-\udfff]")


def as_text(value: Any) -> Any:
    """``value`` with every surrogate in its strings (nested in lists and dicts too) as U+FFFD."""
    if isinstance(value, str):
        return SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {as_text(k): as_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(as_text(v) for v in value)
    return value


def recordable_source(card: ModelCard) -> None:
    """``card.source`` made JSON, which holds only UTF-8 text: a path of the run (its checkpoint, its data, an
    ensemble's members) whose name has bytes that are not UTF-8 is recorded with U+FFFD for them, and a warning
    says so. Such a path no longer leads to its file, which verify and recover get over as they do
    over a moved checkpoint or dataset. The card's other text is names this project checks, and training
    refuses class folders named so (training.data.folder)."""
    changed = [key for key, value in card.source.items() if as_text(value) != value]
    if not changed:
        return
    card.source = as_text(card.source)
    shown = ", ".join(f"source.{key} as {card.source[key]!r}" for key in changed)
    log.warning(
        "%s: the card records %s, with U+FFFD for the bytes that are not UTF-8 text (a card is JSON): "
        "verify and recover cannot open that path (rename the folder and export again to record it exactly)",
        card.name,
        shown,
    )


def write_card(path: Path, card: ModelCard) -> None:
    """Store the card in metadata_props, so a lone .onnx file still says what it is; ``card.source`` is made
    recordable first (``recordable_source``), so the manifest written from the card records the same."""
    recordable_source(card)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props[METADATA_KEY] = card.model_dump_json()
    props["classes"] = json.dumps(card.classes)  # readable by tools that know nothing of our schema
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "cifar-classifier export"
    onnx.checker.check_model(proto, full_check=True)
    with writing(path):
        onnx.save(proto, str(path))
