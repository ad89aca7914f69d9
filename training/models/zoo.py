"""The model zoo: every network ``create_model`` can build, registered by name with its one-line description.

The registry lives with its entries, so whatever reads it (``create_model``, the ``models`` listing) has imported
every registration first: no model can be looked up before it is registered.
"""

from __future__ import annotations

from typing import Sequence, TypedDict

from torch import nn

from ..registry import Registry
from .airbench import AIRBENCH94_WIDTHS, AirbenchNet
from .dla import DLA
from .edgenext import EdgeNeXt
from .res2net import Res2NetBottleneck
from .resnet import BasicBlock, Bottleneck, ResNet
from .resnet9 import ResNet9
from .vit import VisionTransformer
from .wide_resnet import WideResNet

MODELS: Registry = Registry("model")
DESCRIPTIONS: dict[str, str] = {}


def _register(name: str, description: str):
    def decorator(fn):
        DESCRIPTIONS[name] = description
        return MODELS.register(name)(fn)

    return decorator


def _se(use_se: bool) -> str:
    return "se" if use_se else "none"


# The ResNet-family constructors pass ``**options`` on to ``ResNet`` (see its docstring): activation,
# attention_pool, deep_stem, avg_down. A reduction of None is the attention's published one (SE 16, CA 32).


@_register("resnet18", "CIFAR ResNet-18 (3x3 stem, no max-pool)")
def resnet18(
    num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int | None = None, **options
) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, attention, reduction, dropout, **options)


@_register("resnet34", "CIFAR ResNet-34 (3x3 stem, no max-pool)")
def resnet34(
    num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int | None = None, **options
) -> nn.Module:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, attention, reduction, dropout, **options)


@_register("resnet50", "CIFAR ResNet-50, bottleneck blocks (3x3 stem, no max-pool)")
def resnet50(
    num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int | None = None, **options
) -> nn.Module:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, attention, reduction, dropout, **options)


@_register("se_resnet18", "ResNet-18 with Squeeze-and-Excitation in every block (use_se switches it off)")
def se_resnet18(
    num_classes: int = 10, dropout: float = 0.0, use_se: bool = True, reduction: int | None = None, **options
) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, _se(use_se), reduction, dropout, **options)


@_register("se_resnet34", "ResNet-34 with Squeeze-and-Excitation in every block (use_se switches it off)")
def se_resnet34(
    num_classes: int = 10, dropout: float = 0.0, use_se: bool = True, reduction: int | None = None, **options
) -> nn.Module:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, _se(use_se), reduction, dropout, **options)


@_register("ca_resnet18", "ResNet-18 with Coordinate Attention in every block (Hou et al., 2021)")
def ca_resnet18(num_classes: int = 10, dropout: float = 0.0, reduction: int | None = None, **options) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, "ca", reduction, dropout, **options)


class _Stages(TypedDict):
    depths: tuple[int, ...]
    widths: tuple[int, ...]


# Xie et al.'s CIFAR net: 3 stages of 3 blocks, 256-1024 out
RESNEXT29 = _Stages(depths=(3, 3, 3), widths=(64, 128, 256))


@_register("resnext29", "generic CIFAR ResNeXt-29: resnext29(cardinality, base_width), 2x64d by default")
def resnext29(
    num_classes: int = 10,
    dropout: float = 0.0,
    cardinality: int = 2,
    base_width: int = 64,
    attention: str = "none",
    reduction: int | None = None,
    **options,
) -> nn.Module:
    return ResNet(
        Bottleneck,
        num_classes=num_classes,
        attention=attention,
        reduction=reduction,
        dropout=dropout,
        groups=cardinality,
        base_width=base_width,
        **RESNEXT29,
        **options,
    )


@_register("resnext29_8x64d", "ResNeXt-29 8x64d, the paper's CIFAR model (34.4M parameters)")
def resnext29_8x64d(num_classes: int = 10, **kwargs) -> nn.Module:
    return resnext29(num_classes, cardinality=8, base_width=64, **kwargs)


@_register("resnext29_2x64d", "ResNeXt-29 2x64d, the small CIFAR ResNeXt")
def resnext29_2x64d(num_classes: int = 10, **kwargs) -> nn.Module:
    return resnext29(num_classes, cardinality=2, base_width=64, **kwargs)


@_register("res2net50", "CIFAR Res2Net-50: res2net50(scale, base_width), 26w x 4s by default")
def res2net50(
    num_classes: int = 10,
    dropout: float = 0.0,
    scale: int = 4,
    base_width: int = 26,
    attention: str = "none",
    reduction: int | None = None,
    **options,
) -> nn.Module:
    return ResNet(
        Res2NetBottleneck,
        (3, 4, 6, 3),
        num_classes,
        attention,
        reduction,
        dropout,
        scale=scale,
        base_width=base_width,
        **options,
    )


@_register("res2net50_v1b", "Res2Net-50 v1b: deep 3x3 stem and average-pooled downsampling shortcuts")
def res2net50_v1b(num_classes: int = 10, **kwargs) -> nn.Module:
    return res2net50(num_classes, deep_stem=True, avg_down=True, **kwargs)


@_register("res2net50_ca_v1b", "Res2Net-50 v1b with Coordinate Attention in every block (Res2NetCA)")
def res2net50_ca_v1b(num_classes: int = 10, **kwargs) -> nn.Module:
    return res2net50_v1b(num_classes, attention="ca", **kwargs)


@_register("wrn", "generic Wide-ResNet: wrn(depth, widen, dropout)")
def wrn(
    num_classes: int = 10,
    depth: int = 28,
    widen: int = 10,
    dropout: float = 0.3,
    attention: str = "none",
    reduction: int | None = None,
) -> nn.Module:
    return WideResNet(depth, widen, num_classes, dropout, attention, reduction)


@_register("wrn_28_10", "Wide-ResNet-28-10, dropout 0.3 by default")
def wrn_28_10(
    num_classes: int = 10, dropout: float = 0.3, attention: str = "none", reduction: int | None = None
) -> nn.Module:
    return WideResNet(28, 10, num_classes, dropout, attention, reduction)


@_register("wrn_16_8", "Wide-ResNet-16-8, dropout 0.3 by default")
def wrn_16_8(
    num_classes: int = 10, dropout: float = 0.3, attention: str = "none", reduction: int | None = None
) -> nn.Module:
    return WideResNet(16, 8, num_classes, dropout, attention, reduction)


@_register("wrn_16_4", "Wide-ResNet-16-4, dropout 0 by default (about 2.75M parameters)")
def wrn_16_4(
    num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int | None = None
) -> nn.Module:
    return WideResNet(16, 4, num_classes, dropout, attention, reduction)


@_register(
    "airbench94", "airbench94 (Jordan, 2024): frozen patch whitening, 3 conv groups 64-256-256, about 2M parameters"
)
def airbench94(num_classes: int = 10, widths: Sequence[int] = AIRBENCH94_WIDTHS, **options) -> nn.Module:
    return AirbenchNet(num_classes, tuple(widths), **options)


@_register("resnet9", "ResNet-9 (Page, 2018), fast to train")
def resnet9(num_classes: int = 10, dropout: float = 0.0, width: int = 64, head_scale: float = 0.125) -> nn.Module:
    return ResNet9(num_classes, width, dropout, head_scale)


@_register("resnet9_half", "half-width ResNet-9: the compact CPU default (about 1.6M parameters)")
def resnet9_half(num_classes: int = 10, dropout: float = 0.0, head_scale: float = 0.125) -> nn.Module:
    return ResNet9(num_classes, 32, dropout, head_scale)


@_register("dla34", "DLA-34 (Yu et al., 2018), tree aggregation, 3x3 stem and 32-16-8-4 levels for 32x32 inputs")
def dla34(num_classes: int = 10, **kwargs) -> nn.Module:
    return DLA(num_classes, **kwargs)


@_register("vit_small_patch4", "ViT for 32x32: 4x4 patches, dim 384, depth 6, 6 heads, mean-pooled tokens")
def vit_small_patch4(num_classes: int = 10, **kwargs) -> nn.Module:
    return VisionTransformer(num_classes, **kwargs)


@_register("edgenext_small", "EdgeNeXt-S (Maaz et al., 2022): conv encoders + SDTA attention, stride-1 stem")
def edgenext_small(num_classes: int = 10, **kwargs) -> nn.Module:
    return EdgeNeXt(num_classes, **kwargs)
