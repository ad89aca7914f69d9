"""ResNet variants: Coordinate Attention, SE pooling, activations, ResNeXt-29, Res2Net (+ v1b).

Full-size models are built on the meta device: their structure and parameter count
without allocating or initialising 34M weights. Numbers are checked on tiny instances.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_arrays
from export.onnx_export import export_fp32, input_spec, write_card
from export.parity import measure_parity
from inference.manifest import ModelCard
from inference.runtime import OnnxClassifier
from training.config_recipes import build_config
from training.models import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    ImageClassifier,
    UnknownArgument,
    count_parameters,
    create_model,
)
from training.models.activation import ACTIVATIONS
from training.models.attention import CoordinateAttention, SqueezeExcite
from training.models.res2net import Res2NetBottleneck
from training.models.resnet import BasicBlock, Bottleneck, ResNet

# Computed here, 10 classes. Published counts where they exist (checked below):
#  - ResNeXt-29 8x64d: 34.4M (Xie et al., 2017, Table 7, CIFAR).
#  - Res2Net-50 26w4s 25.70M and Res2Net-50-v1b 25.72M (ImageNet, 1000 classes, stride-2 stem: the
#    Res2Net-PretrainedModels README); the CIFAR versions differ by the head and, for Res2Net-50, the stem.
# No published count: ResNeXt-29 2x64d, and anything with Coordinate Attention (its paper has no ResNet).
PINNED = {
    "ca_resnet18": 11_248_698,
    "resnext29": 9_130_314,  # 2x64d by default
    "resnext29_2x64d": 9_130_314,
    "resnext29_8x64d": 34_426_698,
    "res2net50": 23_662_930,
    "res2net50_v1b": 23_689_842,
    "res2net50_ca_v1b": 25_607_674,
}
IMAGENET_HEAD = 2048 * 1000 + 1000
CIFAR_HEAD = 2048 * 10 + 10
PUBLISHED = {
    "resnext29_8x64d": 34.4e6,
    # 7x7 stem conv (9,408 weights) replaced by the 3x3 one (1,728)
    "res2net50": 25.70e6 - IMAGENET_HEAD + CIFAR_HEAD - 9_408 + 1_728,
    "res2net50_v1b": 25.72e6 - IMAGENET_HEAD + CIFAR_HEAD,  # the deep stem is the same, only its strides differ
}


def _meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, 10, **kwargs)


def _count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("name,count", PINNED.items())
def test_parameter_counts_pinned(name, count):
    assert count_parameters(_meta_model(name)) == count


@pytest.mark.parametrize("name,count", PUBLISHED.items())
def test_parameter_counts_match_published(name, count):
    # The published figures are rounded to 0.01M-0.1M. Counted from the model, not read from PINNED: the pins
    # are this code's own figures, the published ones are not.
    assert abs(count_parameters(_meta_model(name)) - count) / count < 0.002


def test_resnext_and_res2net_options_reach_the_blocks():
    wide = _meta_model("resnext29", cardinality=4, base_width=32)
    convs = [m.conv2 for m in wide.modules() if isinstance(m, Bottleneck)]
    assert len(convs) == 9 and {c.groups for c in convs} == {4} and convs[0].out_channels == 4 * 32
    r2 = [m for m in _meta_model("res2net50", scale=6, base_width=14).modules() if isinstance(m, Res2NetBottleneck)]
    assert len(r2) == 16 and {len(b.convs) for b in r2} == {5} and r2[0].width == 14
    with pytest.raises(UnknownArgument, match="'resnext29_8x64d' sets cardinality itself"):  # a preset is fixed
        _meta_model("resnext29_8x64d", cardinality=4)


def test_v1b_has_deep_stem_and_pooled_shortcuts():
    plain, v1b = _meta_model("res2net50"), _meta_model("res2net50_v1b")
    assert _count(plain.backbone.stem, nn.Conv2d) == 1 and _count(v1b.backbone.stem, nn.Conv2d) == 3
    assert _count(plain, nn.AvgPool2d) == 4  # Res2Net's pooled pass-through group, in each stage's first block
    assert _count(v1b, nn.AvgPool2d) == 4 + 3  # plus the shortcuts of the three strided stages


@pytest.mark.parametrize("name", PINNED)
def test_cam_layer_is_last_stage(name):
    model = _meta_model(name)
    assert model.cam_layer is model.backbone.stages[-1]


@pytest.mark.parametrize("attention,module", [("se", SqueezeExcite), ("ca", CoordinateAttention)])
@pytest.mark.parametrize("name,blocks", [("resnet18", 8), ("resnet50", 16), ("resnext29", 9), ("res2net50", 16)])
def test_every_attention_in_every_family(name, blocks, attention, module):
    assert _count(_meta_model(name, attention=attention), module) == blocks
    assert _count(_meta_model(name), module) == 0


def test_reduction_none_is_each_attentions_default():
    se = next(m for m in _meta_model("resnet18", attention="se").modules() if isinstance(m, SqueezeExcite))
    ca = next(m for m in _meta_model("ca_resnet18").modules() if isinstance(m, CoordinateAttention))
    assert se.fc[0].out_channels == 64 // 16 and ca.shared[0].out_channels == 8  # 64 // 32 is below CA's floor of 8
    assert count_parameters(_meta_model("se_resnet18", reduction=16)) == count_parameters(_meta_model("se_resnet18"))


@pytest.mark.parametrize("pool", ["avg", "avg+max", "avg+l1", "avg+l2"])
def test_se_pool_reaches_every_block_and_keeps_parameters(pool):
    model = _meta_model("se_resnet18", attention_pool=pool)
    assert {m.pool for m in model.modules() if isinstance(m, SqueezeExcite)} == {tuple(pool.split("+"))}
    assert count_parameters(model) == 11_263_042  # the shared MLP: pooling never adds weights


def test_se_pools_change_the_gate():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 8, 8)
    plain = SqueezeExcite(16, 4).eval()
    expected = x * torch.sigmoid(plain.fc(x.mean((2, 3), keepdim=True)))
    torch.testing.assert_close(plain(x), expected)  # "avg" is the original SE
    outputs = {}
    for pool in ("avg+max", "avg+l1", "avg+l2"):
        se = SqueezeExcite(16, 4, pool).eval()
        se.load_state_dict(plain.state_dict())
        outputs[pool] = se(x)
        assert not torch.allclose(outputs[pool], expected)
    assert not torch.allclose(outputs["avg+l1"], outputs["avg+l2"])


def test_bad_pools_fail_loudly():
    with pytest.raises(ValueError, match="bad attention pool"):
        SqueezeExcite(16, 4, "avg+median")
    with pytest.raises(ValueError, match="bad attention pool"):
        SqueezeExcite(16, 4, "avg+avg")
    with pytest.raises(ValueError, match="applies to 'se' only"):
        _meta_model("ca_resnet18", attention_pool="avg+max")


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
@pytest.mark.parametrize("name", ["resnet18", "resnext29", "res2net50_v1b"])
def test_activation_reaches_stem_and_blocks(name, activation):
    model = _meta_model(name, activation=activation)
    kind = type(ACTIVATIONS.get(activation)())
    acts = [m for m in model.modules() if isinstance(m, (nn.ReLU, nn.ELU, nn.GELU, nn.SiLU))]
    assert acts and all(type(a) is kind for a in acts)
    assert isinstance(model.backbone.stem[2], kind)


def test_default_activation_keeps_resnet_counts():
    for name in ("resnet18", "resnet50"):
        assert count_parameters(_meta_model(name, activation="gelu")) == count_parameters(_meta_model(name))


@pytest.mark.parametrize("recipe", ["ca_resnet18", "resnext29_8x64d", "res2net50_ca_v1b"])
def test_recipes_build_their_model(recipe):
    config = build_config(recipe)
    model = _meta_model(config.model.name, **config.model.args)
    assert count_parameters(model) == PINNED[config.model.name]


# Tiny instances of each family, covering every attention, pool and activation between them.
TINY = {
    "resnet_ca_gelu": dict(block=BasicBlock, attention="ca", activation="gelu"),
    "resnet_se_pools_elu": dict(
        block=BasicBlock, attention="se", reduction=4, attention_pool="avg+max+l1+l2", activation="elu"
    ),
    "resnext_se_silu": dict(block=Bottleneck, groups=2, base_width=16, attention="se", reduction=4, activation="silu"),
    "res2net_ca_v1b": dict(
        block=Res2NetBottleneck, scale=4, base_width=32, attention="ca", deep_stem=True, avg_down=True
    ),
}
CLASSES = 3


def _tiny(options: dict) -> ImageClassifier:
    torch.manual_seed(0)
    backbone = ResNet(depths=(2, 2), num_classes=CLASSES, widths=(8, 16), **options)
    return ImageClassifier(backbone, DEFAULT_MEAN, DEFAULT_STD).eval()


@pytest.mark.parametrize("family", TINY)
def test_tiny_forward_backward(family):
    model = _tiny(TINY[family]).train()
    out = model(torch.rand(4, 3, 32, 32))
    assert out.shape == (4, CLASSES) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("family", TINY)
def test_tiny_onnx_export_parity(family, tmp_path):
    model = _tiny(TINY[family])
    path = tmp_path / f"{family}.onnx"
    export_fp32(model, path, 32)
    spec = input_spec({"input_size": 32, "mean": DEFAULT_MEAN, "std": DEFAULT_STD})
    write_card(
        path,
        ModelCard(
            name=family,
            arch=family,
            dataset="synthetic",
            classes=["a", "b", "c"],
            precision="fp32",
            input=spec,
            metrics={"val_top1": 0.0},
        ),
    )
    images, labels = make_arrays(CLASSES, 8)
    parity = measure_parity(model, OnnxClassifier(path, device="cpu"), images, labels)
    assert parity.passed and parity.top1_agreement == 1.0 and parity.max_abs_prob_diff < 1e-5, parity.summary()


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("wrn", dict(depth=4, widen=1), r"6n\+4 with n >= 1"),  # no residual block at all
        ("wrn", dict(depth=-2, widen=1), r"6n\+4 with n >= 1"),
        ("wrn", dict(depth=10, widen=0), "widen must be 1 or more"),
        ("resnet18", dict(widths=(8, 8)), "one entry per stage: 4"),  # zip would build two stages
        ("resnet34", dict(widths=(8, 8, 8, 8, 8)), "one entry per stage: 4"),
        ("resnet18", dict(attention="se", reduction=0), "reduction must be 1 or more"),  # 0 became 16
        ("ca_resnet18", dict(reduction=-4), "reduction must be 1 or more"),
        ("resnet9", dict(width=0), "no channels"),
        ("res2net50", dict(base_width=4, widths=(8, 8, 8, 8)), "no channels"),  # 8 * 4 / 64 rounds down to 0
        ("resnext29", dict(base_width=0), "no channels"),
    ],
)
def test_arguments_no_network_can_be_built_from_are_refused(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _meta_model(name, **kwargs)


@pytest.mark.parametrize("value", ["false", "off", 0, None])
def test_the_se_switch_takes_only_true_or_false(value):
    """Read by its truth, "false" given as text would leave SE on."""
    with pytest.raises(TypeError, match="use_se takes true or false"):
        _meta_model("se_resnet18", use_se=value)
    assert count_parameters(_meta_model("se_resnet18", use_se=False)) == count_parameters(_meta_model("resnet18"))
