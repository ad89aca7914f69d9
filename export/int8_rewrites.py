"""Exact rewrites of an FP32 graph that let ONNX Runtime's integer kernels cover more of it, applied before
INT8 quantisation.

Each rewrite computes the same function (to float rounding) with ops that quantise better. ONNX Runtime runs
QLinearConv in channels-last, so every float op left between two quantised convolutions costs a
DequantizeLinear, a transpose to channels-first and back, and a QuantizeLinear besides its own time. On the
ResNet-9 and airbench94 networks these were a quarter of the INT8 ensemble's time (docs/measurements.md,
"INT8 graph rewrites"):

- a BatchNorm after a max-pool (Conv -> MaxPool -> BatchNormalization) folds into the convolution when
  every channel's scale is positive: an increasing per-channel affine map commutes with a maximum;
- a ReLU after a max-pool moves before it (Conv -> ReLU -> MaxPool), where the quantised convolution
  absorbs it: ReLU is increasing too;
- the exact GELU that torch exports as five element-wise ops (Div by sqrt 2, Erf, Add 1, Mul 0.5, Mul x)
  becomes ONNX Runtime's one Gelu kernel (com.microsoft domain; the INT8 file runs on ONNX Runtime only).

The rewrites run in order, so a BatchNorm folded away can expose a ReLU to move.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

MICROSOFT = "com.microsoft"


class _Graph:
    """Producers, consumers and constant initializers of a graph, read once per rewrite."""

    def __init__(self, model: onnx.ModelProto) -> None:
        # One list of the node objects: the rewrites tell nodes apart by identity (names may be empty).
        self.nodes = list(model.graph.node)
        self.model = model
        self.constants = {init.name: init for init in model.graph.initializer}
        self.producer = {out: node for node in self.nodes for out in node.output if out}
        self.consumers: dict[str, list[onnx.NodeProto | None]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                self.consumers[name].append(node)
        for out in model.graph.output:
            self.consumers[out.name].append(None)  # a graph output is a consumer no rewrite may bypass

    def only_consumer(self, tensor: str) -> onnx.NodeProto | None:
        found = self.consumers.get(tensor, [])
        return found[0] if len(found) == 1 else None

    def produced_by(self, tensor: str, op_type: str) -> onnx.NodeProto | None:
        """The node of ``op_type`` that makes ``tensor``, if nothing else reads that node's output."""
        node = self.producer.get(tensor)
        if node is None or node.op_type != op_type or node.domain not in ("", "ai.onnx"):
            return None
        return node if self.only_consumer(node.output[0]) is not None else None

    def constant(self, name: str) -> np.ndarray | None:
        init = self.constants.get(name)
        return None if init is None else numpy_helper.to_array(init)

    def add_constant(self, array: np.ndarray, name: str) -> str:
        self.model.graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name


def _plain_max_pool(graph: _Graph, tensor: str) -> onnx.NodeProto | None:
    """The MaxPool that makes ``tensor`` from a Conv's output read by nothing else, without its indices."""
    pool = graph.produced_by(tensor, "MaxPool")
    if pool is None or (len(pool.output) > 1 and pool.output[1]):
        return None
    return pool if graph.produced_by(pool.input[0], "Conv") is not None else None


def fold_pooled_batchnorms(model: onnx.ModelProto) -> int:
    """Conv -> MaxPool -> BatchNormalization (every channel's scale > 0) => Conv with the BN folded -> MaxPool."""
    graph = _Graph(model)
    removed = []
    # Convolutions that share a weight and a BatchNorm's parameters (the two branches of a flip-TTA graph) share
    # the folded constants too, so the file does not grow by a copy of each weight.
    folded: dict[tuple[str, ...], tuple[str, str]] = {}
    for bn in graph.nodes:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        pool = _plain_max_pool(graph, bn.input[0])
        stats = [s for s in (graph.constant(name) for name in bn.input[1:5]) if s is not None]
        if pool is None or len(stats) != 4:
            continue
        conv = graph.producer[pool.input[0]]
        weight = graph.constant(conv.input[1])
        bias = graph.constant(conv.input[2]) if len(conv.input) > 2 and conv.input[2] else np.zeros(1)
        if weight is None or bias is None:
            continue
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        key = (*conv.input[1:3], *bn.input[1:5], repr(eps))
        if key not in folded:
            gamma, beta, mean, var = (s.astype(np.float64) for s in stats)
            scale = gamma / np.sqrt(var + eps)
            if not (scale > 0).all():  # a decreasing channel turns the maximum into a minimum: not exact
                continue
            new_weight = weight.astype(np.float64) * scale.reshape(-1, *[1] * (weight.ndim - 1))
            new_bias = (bias.astype(np.float64) - mean) * scale + beta
            stem = f"{conv.name or conv.input[1]}.bn_folded"
            folded[key] = (
                graph.add_constant(new_weight, f"{stem}.weight"),
                graph.add_constant(new_bias, f"{stem}.bias"),
            )
        x = conv.input[0]
        del conv.input[:]
        conv.input.extend([x, *folded[key]])
        pool.output[0] = bn.output[0]
        removed.append(bn)
    _edit_nodes(model, graph.nodes, drop=removed)
    return len(removed)


def relu_before_pool(model: onnx.ModelProto) -> int:
    """Conv -> MaxPool -> Relu => Conv -> Relu -> MaxPool."""
    graph = _Graph(model)
    moved: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (pool, the ReLU to run just before it)
    for relu in graph.nodes:
        if relu.op_type != "Relu" or relu.domain not in ("", "ai.onnx"):
            continue
        pool = _plain_max_pool(graph, relu.input[0])
        if pool is None:
            continue
        pooled, out = pool.output[0], relu.output[0]
        relu.input[0], relu.output[0] = pool.input[0], f"{pooled}.relu_before_pool"
        pool.input[0], pool.output[0] = relu.output[0], out
        moved.append((pool, relu))
    _edit_nodes(model, graph.nodes, drop=[relu for _, relu in moved], before=moved)
    return len(moved)


def _is_constant(graph: _Graph, name: str, value: float) -> bool:
    array = graph.constant(name)
    return array is not None and array.size == 1 and bool(np.isclose(float(array.reshape(())), value, rtol=1e-6))


def fuse_gelu(model: onnx.ModelProto) -> int:
    """Div(x, sqrt 2) -> Erf -> Add 1 -> Mul 0.5 and Mul x (either order) => com.microsoft Gelu(x)."""
    graph = _Graph(model)
    dropped: list[onnx.NodeProto] = []
    fused: list[tuple[onnx.NodeProto, onnx.NodeProto]] = []  # (the last Mul, the Gelu that replaces it)
    for erf in graph.nodes:
        if erf.op_type != "Erf":
            continue
        div = graph.produced_by(erf.input[0], "Div")
        add = graph.only_consumer(erf.output[0])
        if div is None or add is None or add.op_type != "Add" or not _is_constant(graph, div.input[1], np.sqrt(2)):
            continue
        x = div.input[0]
        if not any(_is_constant(graph, name, 1.0) for name in add.input):
            continue
        first = graph.only_consumer(add.output[0])
        second = first and graph.only_consumer(first.output[0])
        if first is None or second is None or (first.op_type, second.op_type) != ("Mul", "Mul"):
            continue
        others = [n for n in first.input if n != add.output[0]] + [n for n in second.input if n != first.output[0]]
        if len(others) != 2 or x not in others:
            continue
        others.remove(x)
        if not _is_constant(graph, others[0], 0.5):  # x * x * (1 + erf(x / sqrt 2)) is no GELU
            continue
        dropped += [div, erf, add, first]
        gelu = helper.make_node("Gelu", [x], [second.output[0]], name=f"{second.name}.gelu", domain=MICROSOFT)
        fused.append((second, gelu))
    if fused and not any(op.domain == MICROSOFT for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MICROSOFT, 1))
    _edit_nodes(model, graph.nodes, drop=dropped, replace=fused)
    return len(fused)


Pairs = Sequence[tuple[onnx.NodeProto, onnx.NodeProto]]


def _edit_nodes(
    model: onnx.ModelProto,
    nodes: list[onnx.NodeProto],
    drop: Sequence[onnx.NodeProto] = (),
    replace: Pairs = (),
    before: Pairs = (),
) -> None:
    """Write ``nodes`` (``_Graph.nodes``, edited in place) back as the graph's, leaving out ``drop``, putting
    the second node of each ``replace`` pair in place of the first, and the second of each ``before`` pair
    just before the first; then drop the initializers nothing reads any more. Nodes are matched by identity.
    Nothing to edit leaves the graph as it was."""
    if not (drop or replace or before):
        return
    dropped = {id(node) for node in drop}
    replaced = {id(old): new for old, new in replace}
    inserted = {id(at): new for at, new in before}
    order = []
    for node in nodes:
        if id(node) in inserted:
            order.append(inserted[id(node)])
        if id(node) not in dropped:
            order.append(replaced.get(id(node), node))
    # Copies: protobuf's repeated fields copy on extend, and clearing the field first would free the originals.
    copies = [onnx.NodeProto.FromString(node.SerializeToString()) for node in order]
    del model.graph.node[:]
    model.graph.node.extend(copies)
    used = {name for node in model.graph.node for name in node.input}
    used.update(out.name for out in model.graph.output)
    kept = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


# In order: folding a BatchNorm away can leave a ReLU right after a max-pool.
REWRITES: dict[str, Callable[[onnx.ModelProto], int]] = {
    "pooled BatchNorms folded": fold_pooled_batchnorms,
    "ReLUs moved before max-pools": relu_before_pool,
    "GELUs fused": fuse_gelu,
}


def rewrite_for_int8(model: onnx.ModelProto) -> dict[str, int]:
    """Apply every rewrite in place; how many places each changed."""
    return {name: rewrite(model) for name, rewrite in REWRITES.items()}
