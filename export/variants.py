"""Lighter variants of an FP32 ONNX model: FP16 for GPUs and static INT8 for CPUs."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from inference.precisions import precision

from .int8_ranges import DEFAULT_ACTIVATION_RANGE, activation_range
from .int8_rewrites import rewrite_for_int8
from .onnx_export import INPUT_NAME, writing

log = logging.getLogger("export")


# Each precision of inference.precisions has one converter here, registered with @converts(name): it makes
# that precision's file from the exported FP32 one.
@dataclass(frozen=True)
class Converter:
    # (src, dst), or (src, dst, calibration images, activation range name) -> the number of images it used,
    # when ``calibration`` is set
    convert: Callable[..., int | None]
    # How calibration images are used, recorded on the card after their count ("{ranges}": the activation
    # range's label, int8_ranges.py); None: the converter needs none.
    calibration: str | None = None


CONVERTERS: dict[str, Converter] = {}


def converts(
    name: str, calibration: str | None = None
) -> Callable[[Callable[..., int | None]], Callable[..., int | None]]:
    """Register the decorated function as the converter of precision ``name``; an unknown or repeated name fails
    at import."""

    def register(convert: Callable[..., int | None]) -> Callable[..., int | None]:
        precision(name)
        if name in CONVERTERS:
            raise ValueError(f"precision {name!r} has two converters")
        CONVERTERS[name] = Converter(convert, calibration)
        return convert

    return register


def converter(name: str) -> Converter:
    precision(name)
    if name not in CONVERTERS:
        raise ValueError(f"precision {name!r} has no converter in export/variants.py")
    return CONVERTERS[name]


@converts("fp32")
def keep_fp32(src: Path, dst: Path) -> None:
    """FP32 is what the exporter wrote: the file only moves into place."""
    os.replace(src, dst)


@converts("fp16")
def to_fp16(src: Path, dst: Path) -> None:
    """Weights and activations in float16; inputs and outputs stay float32 so clients need not change."""
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    # The converter appends the input Casts at the end of the node list; the checker wants topological order.
    graph = ir.from_proto(model)
    graph.graph.sort()
    model = ir.to_proto(graph)
    onnx.checker.check_model(model, full_check=True)
    with writing(dst):
        onnx.save(model, str(dst))


CALIBRATION_BATCH = 50


class _Calibration(CalibrationDataReader):
    """The images in batches; with ``equal``, all of one size (a remainder smaller than a batch is left out)."""

    def __init__(self, images: np.ndarray, batch_size: int | None = None, equal: bool = False) -> None:
        batch_size = min(batch_size or CALIBRATION_BATCH, len(images))
        end = len(images) - len(images) % batch_size if equal else len(images)
        self.used = end
        self.batches = iter([images[i : min(i + batch_size, end)] for i in range(0, end, batch_size)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {INPUT_NAME: batch}


# Ops whose outputs are probabilities or log-probabilities (an ensemble's averaging starts with them).
PROBABILITY_OPS = ("Softmax", "LogSoftmax")


def probability_tail(model: onnx.ModelProto) -> list[str]:
    """The nodes from the first (log-)softmax on: their values span many orders of magnitude (an ensemble's
    log-probabilities reach -30 and below), so 256 uint8 steps would move probabilities by tenths. They are
    a handful of cheap ops, kept in float."""
    tail: list[str] = []
    produced: set[str] = set()
    for node in model.graph.node:  # topologically sorted, as the ONNX checker requires
        if node.op_type in PROBABILITY_OPS or produced.intersection(node.input):
            tail.append(node.name)
            produced.update(node.output)
    return tail


# Ops that apply weights: the first of them on each path from the input is where the image enters a network.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def input_layers(model: onnx.ModelProto) -> list[str]:
    """The weighted nodes that read the input image through weight-free ops only (normalisation, the views of
    test-time augmentation): each network's stem, or a frozen patch-whitening layer. With 3 input channels they
    are a small share of the work, and their outputs feed everything after them: kept in float, they cost no
    measurable speed and remove the largest per-layer rounding (docs/deploy.md, "INT8")."""
    initializers = {init.name for init in model.graph.initializer}
    reached = {tensor.name for tensor in model.graph.input}
    found = []
    for node in model.graph.node:  # topologically sorted
        if not reached.intersection(t for t in node.input if t and t not in initializers):
            continue
        if node.op_type in WEIGHTED_OPS:
            found.append(node.name)
        else:
            reached.update(node.output)
    return found


@converts("int8", calibration="training-split images, {ranges}, per-channel weights, input layers in float")
def to_int8(
    src: Path, dst: Path, calibration_images: np.ndarray, activation_ranges: str = DEFAULT_ACTIVATION_RANGE
) -> int:
    """Static QDQ quantisation: per-channel int8 weights, uint8 activations calibrated on ``calibration_images``
    with the range method ``activation_ranges`` (int8_ranges.py). The input layers and the probability tail
    stay float (``input_layers``, ``probability_tail``). The graph is first rewritten, exactly, into ops that
    quantise better (int8_rewrites.py).

    Weights use 7 bits (``reduce_range``): on x86 CPUs without VNNI, ONNX Runtime's u8s8 kernels add pairs of
    products in saturating int16, and full-range weights overflow there, so a model that is exact on a VNNI/AMX
    machine loses points on an AVX2-only one (docs/deploy.md has the measurement).

    Calibration images must come from the training split: calibrating on the
    validation images would tune the model on the data that measures it.
    """
    ranges = activation_range(activation_ranges)
    reader = _Calibration(calibration_images.astype(np.float32), equal=ranges.equal_batches)
    with tempfile.TemporaryDirectory() as tmp:
        rewritten, prepared = Path(tmp) / "rewritten.onnx", Path(tmp) / "prepared.onnx"
        fp32 = onnx.load(str(src))
        changed = rewrite_for_int8(fp32)
        log.info("INT8 graph rewrites: %s", ", ".join(f"{name} {n}" for name, n in changed.items()))
        # A file, not the ModelProto: given one, quant_pre_process writes external data its own check cannot read.
        with writing(rewritten):
            onnx.save(fp32, str(rewritten))
        quant_pre_process(str(rewritten), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared))
        quantize_static(
            str(prepared),
            str(dst),
            reader,
            nodes_to_exclude=input_layers(graph) + probability_tail(graph),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod[ranges.ort_method],
            reduce_range=True,
            extra_options={
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                # A BatchNormalization that no convolution absorbs (after a pooling) has 1-D scales; the
                # quantiser's default channel axis (1) does not exist there, so it warned and fell back to one
                # scale for all channels.
                "QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0},
                **ranges.options,
            },
        )
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
    return reader.used
