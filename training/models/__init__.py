"""Model registry: ``create_model(name, num_classes, ...)`` is the one way to build a network.

Every model takes RGB images scaled to [0, 1] and normalises them itself, so
training, evaluation and the exported ONNX graph all see the same numbers and
a client never needs to know the mean and std.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..registry import Registry
from .resnet import BasicBlock, Bottleneck, ResNet
from .resnet9 import ResNet9
from .wide_resnet import WideResNet

MODELS: Registry = Registry("model")
DESCRIPTIONS: dict[str, str] = {}


def _register(name: str, description: str):
    def decorator(fn):
        DESCRIPTIONS[name] = description
        return MODELS.register(name)(fn)

    return decorator


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ImageClassifier(nn.Module):
    """Normalisation followed by a backbone; input is float [N, 3, H, W] in [0, 1]."""

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.backbone = backbone

    @property
    def cam_layer(self) -> nn.Module:
        return self.backbone.cam_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


# Defaults for models built without a dataset (tests, `models` listing): CIFAR-10's statistics.
DEFAULT_MEAN = (0.4914, 0.4822, 0.4465)
DEFAULT_STD = (0.2470, 0.2435, 0.2616)


def create_model(
    name: str,
    num_classes: int = 10,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    **kwargs,
) -> ImageClassifier:
    """Build a registered model; ``kwargs`` go to its constructor (dropout, use_se, ...)."""
    backbone = MODELS.get(name)(num_classes=num_classes, **kwargs)
    return ImageClassifier(backbone, mean, std)


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _se(use_se: bool) -> str:
    return "se" if use_se else "none"


@_register("resnet18", "CIFAR ResNet-18 (3x3 stem, no max-pool)")
def resnet18(num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int = 16) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, attention, reduction, dropout)


@_register("resnet34", "CIFAR ResNet-34 (3x3 stem, no max-pool)")
def resnet34(num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int = 16) -> nn.Module:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, attention, reduction, dropout)


@_register("resnet50", "CIFAR ResNet-50, bottleneck blocks (3x3 stem, no max-pool)")
def resnet50(num_classes: int = 10, dropout: float = 0.0, attention: str = "none", reduction: int = 16) -> nn.Module:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, attention, reduction, dropout)


@_register("se_resnet18", "ResNet-18 with Squeeze-and-Excitation in every block (use_se switches it off)")
def se_resnet18(num_classes: int = 10, dropout: float = 0.0, use_se: bool = True, reduction: int = 16) -> nn.Module:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, _se(use_se), reduction, dropout)


@_register("se_resnet34", "ResNet-34 with Squeeze-and-Excitation in every block (use_se switches it off)")
def se_resnet34(num_classes: int = 10, dropout: float = 0.0, use_se: bool = True, reduction: int = 16) -> nn.Module:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, _se(use_se), reduction, dropout)


@_register("wrn", "generic Wide-ResNet: wrn(depth, widen, dropout)")
def wrn(num_classes: int = 10, depth: int = 28, widen: int = 10, dropout: float = 0.3, attention: str = "none") -> nn.Module:
    return WideResNet(depth, widen, num_classes, dropout, attention)


@_register("wrn_28_10", "Wide-ResNet-28-10, dropout 0.3 by default")
def wrn_28_10(num_classes: int = 10, dropout: float = 0.3, attention: str = "none") -> nn.Module:
    return WideResNet(28, 10, num_classes, dropout, attention)


@_register("wrn_16_8", "Wide-ResNet-16-8, dropout 0.3 by default")
def wrn_16_8(num_classes: int = 10, dropout: float = 0.3, attention: str = "none") -> nn.Module:
    return WideResNet(16, 8, num_classes, dropout, attention)


@_register("resnet9", "ResNet-9 (Page, 2018), fast to train")
def resnet9(num_classes: int = 10, dropout: float = 0.0, width: int = 64) -> nn.Module:
    return ResNet9(num_classes, width, dropout)


@_register("resnet9_half", "half-width ResNet-9: the compact CPU default (about 1.6M parameters)")
def resnet9_half(num_classes: int = 10, dropout: float = 0.0) -> nn.Module:
    return ResNet9(num_classes, 32, dropout)
