"""Model registry: ``create_model(name, num_classes, ...)`` is the one way to build a network.

Every model takes RGB images scaled to [0, 1] and normalises them itself, so
training, evaluation and the exported ONNX graph all see the same numbers and
a client never needs to know the mean and std.
"""

from __future__ import annotations

import inspect
import re
import warnings
from typing import Callable, Sequence

import torch
from torch import nn

from inference.errors import UsageError

from ..inference import with_tta
from .ensemble import ENSEMBLE_ARCH, Ensemble
from .zoo import DESCRIPTIONS as DESCRIPTIONS  # re-exported: the package is where the registry's names are read
from .zoo import MODELS


class Normalize(nn.Module):
    # Buffers, declared for their type: nn.Module's __getattr__ would type them Tensor | Module.
    mean: torch.Tensor
    std: torch.Tensor

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
        # nn.Module's __getattr__ is typed Tensor | Module; every backbone's cam_layer is a Module property
        return self.backbone.cam_layer  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


# Defaults for models built without a dataset (tests, `models` listing): CIFAR-10's statistics.
DEFAULT_MEAN = (0.4914, 0.4822, 0.4465)
DEFAULT_STD = (0.2470, 0.2435, 0.2616)


class UnknownArgument(UsageError):
    """A model argument its constructor does not take: ``unknown``, those given it has no parameter for;
    ``taken``, the ones it has (to guess the one meant)."""

    def __init__(self, message: str, unknown: list[str], taken: list[str]) -> None:
        super().__init__(message)
        self.unknown, self.taken = unknown, taken


def create_model(
    name: str,
    num_classes: int = 10,
    mean: Sequence[float] = DEFAULT_MEAN,
    std: Sequence[float] = DEFAULT_STD,
    **kwargs,
) -> ImageClassifier:
    """Build a registered model; ``kwargs`` go to its constructor (dropout, use_se, ...).

    ``ensemble`` (an ensemble checkpoint's arch, not a registered model: it is assembled from trained
    checkpoints, not trained) takes ``members``, each a member's arch, num_classes, mean, std, model_args and
    optionally tta (the views it averages before the ensemble averages the members); each member normalises
    its own input, so the ensemble's ``mean`` and ``std`` are the identity."""
    if name == ENSEMBLE_ARCH:
        return _ensemble(num_classes, mean, std, **kwargs)
    constructor = MODELS.get(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be 1 or more, got {num_classes}")
    try:
        with warnings.catch_warnings():
            # a width of 0 is refused below, saying so; torch's warnings on the way would come first and mislead
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            backbone = constructor(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        fixed = re.search(r"(\w+)\(\) got multiple values for (?:keyword )?argument '(\w+)'", str(exc))
        if fixed is not None and fixed.group(2) in kwargs:
            raise _fixed_argument(name, fixed.group(2), fixed.group(1)) from exc
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if bad is None:
            raise
        params = inspect.signature(constructor).parameters
        named = [p.name for p in params.values() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        # a constructor open to any keyword passed it on: the argument refused is not one of its own
        open_ended = len(named) < len(params)
        raise UnknownArgument(
            f"model {name!r} takes no argument {bad.group(1)!r} (given: {', '.join(kwargs)}; "
            "a --set key that is no configuration field is passed to the model)",
            # of an open constructor only the argument refused is known to be unknown: the others reached its blocks
            unknown=[bad.group(1)] if open_ended else [k for k in kwargs if k not in params],
            taken=[p for p in named if p != "num_classes"]
            + (_settable(constructor, num_classes, kwargs, exc, named) if open_ended else []),
        ) from exc
    # options pass through the network to its blocks (avg_down), whose own signatures say which are switches
    _check_switches([constructor, *_own_layers(backbone)], kwargs)
    _check_no_empty_layer(backbone)
    return ImageClassifier(backbone, mean, std)


def _settable(constructor: Callable, num_classes: int, kwargs: dict, exc: TypeError, named: list[str]) -> list[str]:
    """Of the arguments the options reached, those the network lets its user set: one that it or a preset on the way
    passes itself (resnext29's groups and widths, se_resnet18's attention, res2net50_v1b's avg_down) would be
    refused as given twice, so is not offered. Each is tried ahead of the refused one: Python says the first wrong
    keyword of a call, so a build that takes it stops where this one did, at the same refusal, nothing built past
    the first block."""
    settable = []
    for key, default in _reached(constructor, num_classes).items():
        if key in named or key in kwargs:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                constructor(num_classes=num_classes, **{key: default}, **kwargs)
        except TypeError as probe:
            if str(probe) == str(exc):
                settable.append(key)
        except Exception:  # noqa: BLE001 - a default at odds with the rest: not known to be settable, and a second
            # error here would hide the typo being said
            continue
    return settable


def _reached(constructor: Callable, num_classes: int) -> dict[str, object]:
    """The settable arguments of the network and of its own layers (ResNet and its blocks, VisionTransformer), read
    from a build with no options as ``_check_switches`` reads them: a typo of one of those (patch_sise) is to be
    offered it, not the setting it happens to be close to (train.batch_size)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain = constructor(num_classes=num_classes)
    except Exception:  # noqa: BLE001 - this runs while a typo is being said, where a second error would hide it
        return {}
    reached: dict[str, object] = {}
    takers: list[Callable] = [constructor, *_own_layers(plain)]
    for taker in takers:
        for key, param in _parameters(taker).items():
            if key != "num_classes" and param.default is not param.empty:
                reached.setdefault(key, param.default)
    return reached


def _own_layers(backbone: nn.Module) -> set[type]:
    """The network's module classes that this package defines, whose signatures say what its options are."""
    return {type(m) for m in backbone.modules() if type(m).__module__.startswith(__name__)}


def _parameters(taker: Callable) -> dict[str, inspect.Parameter]:
    """A callable's parameters; none for one whose signature cannot be read (a builtin): this runs while a typo is
    being said, where a second error would hide the first."""
    try:
        return dict(inspect.signature(taker).parameters)
    except (TypeError, ValueError):
        return {}


def _fixed_argument(name: str, key: str, taker: str) -> UnknownArgument:
    """A named configuration (resnext29_8x64d, se_resnet18) sets ``key`` itself; given it again, Python's "got
    multiple values" says nothing of what to do. The generic model to name instead: ``taker``, the function that
    was handed it twice, where that is a registered one, else the one this name adds a prefix to (se_resnet18 ->
    resnet18) if that takes it."""
    base = name.partition("_")[2]
    if taker not in MODELS and base in MODELS and key in inspect.signature(MODELS.get(base)).parameters:
        taker = base
    instead = (
        f"model.name={taker} takes it"
        if taker in MODELS and taker != name
        else "`python -m training models` lists the others"
    )
    return UnknownArgument(
        f"model {name!r} sets {key} itself, so it takes no {key} argument: leave it out, or name another model "
        f"({instead})",
        unknown=[],
        taken=[],
    )


def _check_switches(takers: Sequence[Callable], kwargs: dict) -> None:
    """An argument whose default is true or false takes only those: any other value would be read by its truth, and
    "false" or "off" given as text would leave the option on."""
    for taker in takers:
        for key, param in inspect.signature(taker).parameters.items():
            if key in kwargs and isinstance(param.default, bool) and not isinstance(kwargs[key], bool):
                raise TypeError(f"{key} takes true or false, not {kwargs[key]!r}")


def _check_no_empty_layer(backbone: nn.Module) -> None:
    """A width of 0 (or one that rounds down to 0, as base_width 4 of a Res2Net stage of 8 does) builds, and then
    fails on the first image with an error about weight shapes that reads as if the image were wrong."""
    for path, m in backbone.named_modules():
        sizes = (
            (m.in_channels, m.out_channels)
            if isinstance(m, nn.Conv2d)
            else (m.in_features, m.out_features)
            if isinstance(m, nn.Linear)
            else ()
        )
        if 0 in sizes:
            raise ValueError(f"its layer {path} ({m}) has no channels: a width is 0, or rounds down to 0")


def _ensemble(
    num_classes: int, mean: Sequence[float], std: Sequence[float], members: Sequence[dict]
) -> ImageClassifier:
    for spec in members:
        if spec["arch"] == ENSEMBLE_ARCH:
            raise ValueError("an ensemble's member cannot itself be an ensemble")
        if spec["num_classes"] != num_classes:
            raise ValueError(f"an ensemble member has {spec['num_classes']} classes, the ensemble {num_classes}")
    built = [
        with_tta(
            create_model(spec["arch"], spec["num_classes"], spec["mean"], spec["std"], **spec["model_args"]),
            spec.get("tta", "none"),
        )
        for spec in members
    ]
    return ImageClassifier(Ensemble(built), mean, std)


# What a network's constructor (or torch inside it) raises on an argument value it refuses: width 8.5 reaches torch
# as "out_channels must be divisible by groups", which says nothing of the setting it came from (``argument_error``).
BUILD_ERRORS = (TypeError, ValueError, RuntimeError, AssertionError)


def argument_error(name: str, kwargs: dict, exc: Exception) -> str:
    """What to tell the user when a constructor raised ``exc`` (one of ``BUILD_ERRORS``) on ``kwargs``: the
    arguments whose value is not of its default's kind (a number or a switch given as text), or else all of them,
    and the error itself."""
    params = inspect.signature(MODELS.get(name)).parameters
    suspects = []
    for key, value in kwargs.items():
        default = params[key].default if key in params else None
        if isinstance(default, (bool, int, float)) and not isinstance(value, (bool, int, float)):
            kind = "true or false" if isinstance(default, bool) else "a number"
            suspects.append(f"{key}={value!r} is not {kind} (default {default!r})")
        elif isinstance(default, str) and not isinstance(value, str):
            suspects.append(f"{key}={value!r} is not a string (default {default!r})")
    given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    said = exc if str(exc) else f"a bare {type(exc).__name__} in its constructor"
    return f"model {name!r} cannot be built from its arguments ({'; '.join(suspects) or given}): {said}"


def size_refusal(model: nn.Module, side: int) -> Exception | None:
    """What a blank ``side`` x ``side`` image raises in ``model`` (a ViT built for another size, poolings that
    leave nothing), or None where it takes that size: tried before any data is read or anything measured."""
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side))
    except (RuntimeError, ValueError) as exc:
        return exc
    return None


def list_models() -> list[str]:
    return MODELS.names()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
