"""What the precision converters compute and what parity counts: a NaN output fails parity, an FP16 graph keeps in
float32 what would overflow float16, and INT8 quantises a network with attention past its softmax (and says what it
leaves in float)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from export.onnx_export import export_fp32
from export.parity import judge
from export.variants import input_layers, probability_tail, to_fp16, to_int8
from inference.runtime import softmax


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _float_weights(model: onnx.ModelProto) -> list[str]:
    """Weighted nodes that read a float initializer directly (not through a DequantizeLinear)."""
    initializers = {init.name for init in model.graph.initializer}
    weighted = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    return [n.name for n in model.graph.node if n.op_type in weighted and n.input[1] in initializers]


@pytest.mark.parametrize("precision,broken", [("fp32", 1), ("fp16", 4), ("int8", 20)])
def test_parity_fails_a_graph_that_gives_nan_on_a_few_images(precision, broken):
    """A NaN row ranks its classes arbitrarily and its probability difference compares as none: one NaN image in
    5,000 passed FP32's limits, 20 passed INT8's."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)
    logits = rng.normal(size=(5000, 10))
    logits[np.arange(5000), labels] += 5
    graph = logits.copy()
    graph[100 : 100 + broken] = np.nan
    top1 = float((logits.argmax(1) == labels).mean())
    with np.errstate(invalid="ignore"):
        parity = judge(precision, softmax(logits), softmax(graph), labels, top1, 1, 1)
    assert not parity.passed
    verb = "gives" if broken == 1 else "give"
    assert f"{broken} of 5,000 images {verb} NaN or infinite outputs (first: image 100)" in parity.failures


def test_parity_fails_where_only_the_reference_gives_nan():
    labels = np.array([0, 1])
    logits = np.array([[2.0, 0.0], [0.0, 2.0]])
    reference = logits.copy()
    reference[1] = np.nan
    with np.errstate(invalid="ignore"):
        parity = judge("fp32", softmax(reference), softmax(logits), labels, 0.5, 1, 1)
    assert any("the PyTorch reference gives NaN or infinite outputs on 1 image:" in f for f in parity.failures)


class Loud(nn.Module):
    """A convolution whose outputs reach 200,000 on a white image (float16 ends at 65504), then a concatenation
    (a copy ONNX Runtime makes in float16 even on a CPU), then a 1x1 convolution that scales them back down."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.down, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 4)
        with torch.no_grad():
            self.conv.weight.abs_()
            self.conv.weight.mul_(2e5 / self.conv.weight.sum((1, 2, 3), keepdim=True))
            self.down.weight.mul_(1e-4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv(x))
        y = torch.cat([y, y], 1)[:, :8]
        return self.head(self.down(y).mean((2, 3)))


def test_fp16_keeps_in_float32_the_nodes_that_would_overflow_float16(tmp_path, caplog):
    torch.manual_seed(0)
    model = Loud().eval()
    export_fp32(model, tmp_path / "fp32.onnx", 32)
    with caplog.at_level(logging.WARNING, logger="export"):
        to_fp16(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx")
    x = np.ones((2, 3, 32, 32), np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = _run(tmp_path / "fp16.onnx", x)
    assert np.isfinite(got).all()  # NaN for every class before
    np.testing.assert_allclose(got, expected, atol=1e-2 * np.abs(expected).max())
    assert "FP16: " in caplog.text and "stay float32" in caplog.text
    onnx.checker.check_model(onnx.load(str(tmp_path / "fp16.onnx")), full_check=True)


def test_fp16_of_an_ordinary_network_is_float16_throughout(tmp_path, caplog):
    from training.models import create_model

    export_fp32(create_model("resnet9", 3, width=8).eval(), tmp_path / "fp32.onnx", 32)
    with caplog.at_level(logging.WARNING, logger="export"):
        to_fp16(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx")
    model = onnx.load(str(tmp_path / "fp16.onnx"))
    casts = [n for n in model.graph.node if n.op_type == "Cast"]
    assert len(casts) == 2 and "FP16" not in caplog.text  # the input's and the output's, nothing kept float32
    assert onnx.TensorProto.FLOAT not in {i.data_type for i in model.graph.initializer}


class Attending(nn.Module):
    """A softmax inside the network (attention's), a weighted layer after it, and the log-softmax of the output."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.query, self.out = nn.Conv2d(3, 8, 4, 4), nn.Linear(8, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        attention = torch.softmax(self.query(tokens) @ tokens.transpose(1, 2), dim=-1)
        return torch.log_softmax(self.out((attention @ tokens).mean(1)), dim=1)


def test_only_the_softmax_no_weighted_layer_follows_is_a_probability_tail(tmp_path):
    export_fp32(Attending().eval(), tmp_path / "fp32.onnx", 32)
    model = onnx.load(str(tmp_path / "fp32.onnx"))
    ops = {n.name: n.op_type for n in model.graph.node}
    tail = probability_tail(model)
    assert [ops[name] for name in tail] == ["LogSoftmax"]  # everything after attention's softmax, before


@pytest.mark.parametrize(
    "name,args",
    [
        ("vit_small_patch4", dict(dim=32, depth=2, heads=2)),
        ("edgenext_small", dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), heads=4)),
    ],
)
def test_int8_quantises_the_layers_after_attention(name, args, tmp_path, caplog):
    """Attention's softmax was taken for the output's: every layer after the first attention stayed float32,
    unsaid (EdgeNeXt: 23 of 35 weighted layers)."""
    from training.models import create_model

    export_fp32(create_model(name, 3, **args).eval(), tmp_path / "fp32.onnx", 32)
    calibration = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="export"):
        to_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration)
    quantised = onnx.load(str(tmp_path / "int8.onnx"))
    assert set(_float_weights(quantised)) <= set(input_layers(quantised))  # the patch embedding or stem only
    assert "stay float32" not in caplog.text
    assert "out-of-range" not in caplog.text  # ONNX Runtime's warning for each LayerNorm scale's missing axis 1


def test_int8_says_which_weighted_layers_it_left_in_float(tmp_path, caplog, monkeypatch):
    import export.variants as variants
    from training.models import create_model

    export_fp32(create_model("resnet9", 3, width=8).eval(), tmp_path / "fp32.onnx", 32)
    # as if the quantiser could not take the classifier's head
    monkeypatch.setattr(variants, "probability_tail", lambda m: [n.name for n in m.graph.node if n.op_type == "Gemm"])
    calibration = np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="export"):
        to_int8(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", calibration)
    assert "INT8: 1 weighted layers besides the input layers stay float32 (1 Gemm" in caplog.text


def test_a_collapsed_network_is_said_as_such_not_as_every_image_right(caplog):
    """Logits equal across classes: the card and the warning said "every image right or T at an end of the search
    range", neither of which is true of a network that predicts nothing."""
    from export.calibration import fit_calibration

    logits, labels = np.full((40, 10), 3.0), np.arange(40) % 10
    with caplog.at_level("WARNING", logger="export.calibration"):
        calibration = fit_calibration(logits, labels, "temperature", "a test model")
    assert calibration.temperature == 1.0
    assert "same logit on each image" in calibration.fitted_on and "every image right" not in calibration.fitted_on
    assert any("collapsed network" in record.getMessage() for record in caplog.records), caplog.text
