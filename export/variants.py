"""Lighter variants of an FP32 ONNX model: FP16 for GPUs and static INT8 for CPUs."""

from __future__ import annotations

import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
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


# float16's largest finite value is 65504. A node whose float32 input or output passes an eighth of it on plain
# images stays float32: a real image may run its activations a few times larger, and in float16 an overflow is an
# infinity, then NaN for every class of that image.
FP16_LIMIT = 65504.0 / 8


def fp16_probes(size: int) -> np.ndarray:
    """Images at the edges of the input range, and noise: black, white, each channel saturated alone, grey."""
    probes = np.zeros((8, 3, size, size), np.float32)
    probes[1] = 1.0
    for channel in range(3):
        probes[2 + channel, channel] = 1.0
    probes[5] = 0.5
    probes[6:] = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    return probes


def fp16_overflows(model: onnx.ModelProto, floats: set[str]) -> list[str]:
    """The nodes that read or write a tensor passing ``FP16_LIMIT``: a weight, or one of the float32 tensors
    ``floats`` on ``fp16_probes``; in graph order."""
    large = {init.name for init in model.graph.initializer if _passes_limit(onnx.numpy_helper.to_array(init))}
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) == 4 and dims[2] and dims[2] == dims[3]:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        names = sorted(floats)
        del probe.graph.output[:]
        probe.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        for image in fp16_probes(dims[2]):  # one at a time: every activation of the graph is held at once
            values = session.run(names, {model.graph.input[0].name: image[None]})
            large.update(name for name, value in zip(names, values) if _passes_limit(value))
    return [node.name for node in model.graph.node if large.intersection([*node.input, *node.output])]


def _passes_limit(values: np.ndarray) -> bool:
    return values.dtype == np.float32 and values.size > 0 and float(np.nanmax(np.abs(values))) > FP16_LIMIT


def _float_tensors(model: onnx.ModelProto) -> set[str]:
    """The float32 tensors the nodes of ``model`` make."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        info.name
        for info in [*inferred.graph.value_info, *inferred.graph.output]
        if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }


def _cast_to(node: onnx.NodeProto | None) -> int | None:
    if node is None or node.op_type != "Cast":
        return None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _tidy_kept_nodes(model: onnx.ModelProto, kept: list[str], floats: set[str]) -> None:
    """Undo what the converter does wrong around the nodes it keeps in float32 (``node_block_list``): it adds the
    same Cast twice where one tensor feeds two of them, and between two of them it casts the float32 tensor to
    float16 and back, which overflows as a float16 node would. The cast back then reads the float32 tensor itself
    (one of ``floats``, the float32 graph's, or made by a ``kept`` node), and the casts nothing reads any more
    go."""
    unique: dict[bytes, onnx.NodeProto] = {}
    for node in model.graph.node:
        unique.setdefault(node.SerializeToString(), node)
    producer = {out: node for node in unique.values() for out in node.output}
    for node in unique.values():
        there = producer.get(node.input[0]) if _cast_to(node) == onnx.TensorProto.FLOAT else None
        if there is None or _cast_to(there) != onnx.TensorProto.FLOAT16:
            continue
        source = producer.get(there.input[0])
        if there.output[0] in floats or (source is not None and source.name in kept):
            node.input[0] = there.input[0]  # a cast of float32 to float32: ONNX Runtime drops it
    outputs = {out.name for out in model.graph.output}
    nodes = list(unique.values())
    while True:
        read = {name for node in nodes for name in node.input} | outputs
        remaining = [node for node in nodes if node.op_type != "Cast" or node.output[0] in read]
        if len(remaining) == len(nodes):
            break
        nodes = remaining
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    # its value_info may still call a kept node's output float16; the checker infers what is left out
    del model.graph.value_info[:]


@converts("fp16")
def to_fp16(src: Path, dst: Path) -> None:
    """Weights and activations in float16; inputs and outputs stay float32 so clients need not change. Nodes
    whose values would overflow float16 (``fp16_overflows``) stay float32, and a warning names them."""
    fp32 = onnx.load(str(src))
    floats = _float_tensors(fp32)
    kept = fp16_overflows(fp32, floats)
    if kept:
        log.warning(
            "FP16: %d nodes stay float32 (first: %s): their values pass %.0f on plain test images, near float16's "
            "limit of 65504, where they would overflow to infinity and give NaN",
            len(kept),
            kept[0],
            FP16_LIMIT,
        )
    model = convert_float_to_float16(fp32, keep_io_types=True, node_block_list=kept or None)
    if kept:
        _tidy_kept_nodes(model, kept, floats)
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


# Ops that apply weights: the work INT8 is for; the first of them on each path from the input is where the image
# enters a network.
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


# Ops whose outputs are probabilities or log-probabilities (an ensemble's averaging starts with them).
PROBABILITY_OPS = ("Softmax", "LogSoftmax")


def probability_tail(model: onnx.ModelProto) -> list[str]:
    """The nodes from a (log-)softmax that no weighted op follows on: their values span many orders of magnitude
    (an ensemble's log-probabilities reach -30 and below), so 256 uint8 steps would move probabilities by tenths.
    They are a handful of cheap ops, kept in float. A softmax inside the network (attention's, in ViT and
    EdgeNeXt) feeds weighted ops: it is no tail, and keeping everything after it in float would leave most of
    such a network unquantised."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tail: dict[str, None] = {}
    for start in model.graph.node:
        if start.op_type not in PROBABILITY_OPS or start.name in tail:
            continue
        after, todo, seen = [], [start], {id(start)}
        while todo:
            node = todo.pop()
            after.append(node)
            for out in node.output:
                for reader in consumers.get(out, []):
                    if id(reader) not in seen:
                        seen.add(id(reader))
                        todo.append(reader)
        if not any(node.op_type in WEIGHTED_OPS for node in after):
            tail.update(dict.fromkeys(node.name for node in after))
    order = {node.name: i for i, node in enumerate(model.graph.node)}
    return sorted(tail, key=order.__getitem__)


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
        kept_float = input_layers(graph)
        quantize_static(
            str(prepared),
            str(dst),
            reader,
            nodes_to_exclude=kept_float + probability_tail(graph),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod[ranges.ort_method],
            reduce_range=True,
            extra_options={
                "ActivationSymmetric": False,
                "WeightSymmetric": True,
                # A BatchNormalization that no convolution absorbs (after a pooling), and a LayerNormalization
                # (ViT, EdgeNeXt), have 1-D scales; the quantiser's default channel axis (1) does not exist there,
                # so it warned for each and fell back to one scale for all channels.
                "QDQOpTypePerChannelSupportToAxis": {"BatchNormalization": 0, "LayerNormalization": 0},
                **ranges.options,
            },
        )
    quantised = onnx.load(str(dst))
    onnx.checker.check_model(quantised, full_check=True)
    missed = [node for node in float_weight_layers(quantised) if node.name not in kept_float]
    if missed:
        kinds = ", ".join(f"{n} {op}" for op, n in sorted(Counter(node.op_type for node in missed).items()))
        log.warning(
            "INT8: %d weighted layers besides the input layers stay float32 (%s; first: %s): ONNX Runtime's "
            "quantiser left them, so the file is that much larger and slower than an all-INT8 one",
            len(missed),
            kinds,
            missed[0].name,
        )
    return reader.used


def float_weight_layers(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The weighted nodes of a quantised graph that apply float weights: an initializer read directly, not
    through a DequantizeLinear."""
    initializers = {init.name for init in model.graph.initializer}
    return [
        node
        for node in model.graph.node
        if node.op_type in WEIGHTED_OPS and any(name in initializers for name in node.input[1:2])
    ]
