"""The exact graph rewrites before INT8 quantisation (export/int8_rewrites.py): each place they change computes
what it computed before, the places they must leave alone are left, and the INT8 file gets the fused ops."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export.int8_rewrites import rewrite_for_int8
from export.onnx_export import export_fp32
from export.variants import converter


class Pooled(nn.Module):
    """The places the rewrites look for, and two they must not touch: a BatchNorm with a negative scale after
    a max-pool (not monotone: max and BN do not commute) and a convolution whose output has a second reader."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)  # -> pool -> BN -> ReLU
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)  # -> pool -> BN -> GELU
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)  # negative scale: stays
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)  # read twice: its pool's ReLU stays after the pool
        self.head = nn.Linear(8, 5)
        generator = torch.Generator().manual_seed(0)
        for bn in (self.bn1, self.bn2, self.bn3):
            bn.running_mean.copy_(torch.randn(8, generator=generator))
            bn.running_var.copy_(torch.rand(8, generator=generator) + 0.5)
            bn.weight.data.copy_(torch.rand(8, generator=generator) + 0.5)
            bn.bias.data.copy_(torch.randn(8, generator=generator))
        self.bn3.weight.data[3] = -0.7

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool = nn.functional.max_pool2d
        x = torch.relu(self.bn1(pool(self.conv1(x), 2)))
        x = nn.functional.gelu(self.bn2(pool(self.conv2(x), 2)))
        x = torch.relu(self.bn3(pool(self.conv3(x), 2)))
        y = self.conv4(x)
        x = torch.relu(pool(y, 2)) + y.mean(dim=(2, 3), keepdim=True)
        return self.head(x.amax(dim=(2, 3)))


@pytest.fixture(scope="module")
def pooled_graph(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rewrites") / "pooled.onnx"
    export_fp32(Pooled().eval(), path, 32)
    return path


def _run(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _ops(model: onnx.ModelProto) -> Counter:
    return Counter(node.op_type for node in model.graph.node)


def test_rewrites_change_only_the_exact_places_and_keep_the_function(pooled_graph):
    model = onnx.load(str(pooled_graph))
    before = _ops(model)
    changed = rewrite_for_int8(model)
    onnx.checker.check_model(model, full_check=True)  # still topologically sorted, every input defined
    after = _ops(model)
    assert changed == {"pooled BatchNorms folded": 2, "ReLUs moved before max-pools": 1, "GELUs fused": 1}
    assert (before["BatchNormalization"], after["BatchNormalization"]) == (3, 1)  # bn3 (negative scale) stays
    assert before["Erf"] == 1 and after["Erf"] == 0 and after["Gelu"] == 1
    # conv1's ReLU now reads the convolution; conv4's (whose output has a second reader) still reads its pool.
    producer = {out: node for node in model.graph.node for out in node.output}
    relu_inputs = sorted(producer[node.input[0]].op_type for node in model.graph.node if node.op_type == "Relu")
    assert relu_inputs == ["BatchNormalization", "Conv", "MaxPool"]
    # Nothing the graph no longer reads is left behind (the folded BatchNorms' statistics).
    read = {name for node in model.graph.node for name in node.input}
    assert all(init.name in read for init in model.graph.initializer)
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(pooled_graph, x), rtol=1e-4, atol=1e-4)


def test_a_graph_without_those_places_is_left_as_it_was():
    """BatchNorm straight after a convolution (ONNX Runtime folds that itself), ReLU already before the pool,
    a pool whose indices are read: nothing to rewrite, and the graph comes back as it was."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(np.ones(4, np.float32), n) for n in ("g", "b", "m", "v")]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p", "i"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 4, 4, 4]),
            helper.make_tensor_value_info("i", TensorProto.INT64, [1, 4, 4, 4]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before = model.SerializeToString()
    assert set(rewrite_for_int8(model).values()) == {0}
    assert model.SerializeToString() == before


def test_the_int8_file_runs_the_rewritten_graph(pooled_graph, tmp_path, monkeypatch):
    import export.variants as variants

    monkeypatch.setattr(variants, "CALIBRATION_BATCH", 16)
    images = np.random.default_rng(1).random((32, 3, 32, 32), dtype=np.float32)
    out = tmp_path / "pooled.int8.onnx"
    converter("int8").convert(pooled_graph, out, images)
    ops = _ops(onnx.load(str(out)))
    assert ops["Gelu"] == 1 and ops["Erf"] == 0 and ops["BatchNormalization"] == 1
    fp32, int8 = _run(pooled_graph, images), _run(out, images)
    # Quantised, so close rather than equal: within a few percent of the logits' spread.
    assert np.abs(int8 - fp32).max() < 0.1 * (fp32.max() - fp32.min())


class FlipAveraged(nn.Module):
    """One Conv -> MaxPool -> BN -> ReLU run on the image and on its mirror, as the flip-TTA export does: the
    two convolutions read one weight, the two BatchNorms one set of statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 5)
        with torch.no_grad():
            self.bn.running_var.fill_(2.0)
            self.bn.bias.fill_(0.3)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(nn.functional.max_pool2d(self.conv(x), 2))).amax(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.branch(x) + self.branch(torch.flip(x, dims=[3]))) / 2


def test_convolutions_sharing_a_weight_share_the_folded_one(tmp_path):
    path = tmp_path / "flip.onnx"
    export_fp32(FlipAveraged().eval(), path, 32)
    model = onnx.load(str(path))
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert len(convs) == 2 and convs[0].input[1] == convs[1].input[1]  # the export shares the weight
    assert rewrite_for_int8(model)["pooled BatchNorms folded"] == 2
    convs = [node for node in model.graph.node if node.op_type == "Conv"]
    assert convs[0].input[1:] == convs[1].input[1:]
    assert sum(init.dims[:1] == [8] and len(init.dims) == 4 for init in model.graph.initializer) == 1
    x = np.random.default_rng(2).standard_normal((3, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(path, x), rtol=1e-4, atol=1e-4)


def test_a_gelu_like_chain_without_its_half_is_left_as_it_was():
    """x * x * (1 + erf(x / sqrt 2)) has GELU's shape but no 0.5: the rewrite leaves it, and does not stop the
    INT8 conversion with a StopIteration."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"], name="div"),
        helper.make_node("Erf", ["d"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "x"], ["m"], name="mul1"),
        helper.make_node("Mul", ["m", "x"], ["y"], name="mul2"),
    ]
    vector = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in ("x", "y")]
    graph = helper.make_graph(nodes, "g", vector[:1], vector[1:], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    before = model.SerializeToString()
    assert rewrite_for_int8(model)["GELUs fused"] == 0
    assert model.SerializeToString() == before
