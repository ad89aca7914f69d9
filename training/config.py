"""Typed training configuration. The defaults are the SE-ResNet18 reference recipe; recipes in
``training/recipes/*.yaml`` override them, and ``key=value`` overrides from the command line go last.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Annotated, Any, ClassVar, Iterator, Literal, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

from inference.errors import UsageError
from inference.fits import DEFAULT_FIT, FitName

from .config_checks import config_problems
from .data.augment import AugmentParams
from .data.mix import MixParams
from .data.prune import PruneParams
from .dataset_cache import DEFAULT_CACHE_DIR
from .models.ensemble import ENSEMBLE_ARCH

log = logging.getLogger(__name__)


# the type of an error whose message says the value given (or needs not), so none is appended to it
_SAID_WHOLE = "said_whole"


def _kinds(annotation: Any) -> set[Any]:
    """The types a field's annotation takes, its items' too: ``list[Annotated[int, ...]]`` takes list and int,
    ``Literal["a"]`` str."""
    kinds = {kind for kind in (annotation, get_origin(annotation)) if isinstance(kind, type)}
    for arg in get_args(annotation):
        kinds |= _kinds(arg) if not isinstance(arg, (str, int, float)) else {type(arg)}
    return kinds


def _text_only(annotation: Any) -> bool:
    """Whether a field takes text and nothing else (or null): ``str``, ``str | None``, not a ``Literal``."""
    return annotation is str or set(get_args(annotation)) == {str, type(None)}


def _scalars(value: Any) -> Iterator[Any]:
    """The values a YAML value holds that are no list or mapping, a mapping's keys too."""
    if isinstance(value, dict):
        yield from (scalar for pair in value.items() for item in pair for scalar in _scalars(item))
    elif isinstance(value, (list, tuple)):
        yield from (scalar for item in value for scalar in _scalars(item))
    else:
        yield value


class Section(BaseModel):
    # an infinite learning rate or decay passes every bound (inf > 0) and ends the run at its first step
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    # what to give where a field is given empty, if not "a value"
    _empty_says: ClassVar[dict[str, str]] = {}
    # fields for which empty is a setting of its own, taken as given
    _empty_means: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*", mode="before")
    @classmethod
    def _as_written(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML values that pydantic would take as something other than what was written, or refuse naming
        another value: refused saying what to write."""
        if info.field_name not in cls.model_fields:
            return value
        kinds = _kinds(cls.model_fields[info.field_name].annotation)
        # `--set distill_from=$TEACHER` with TEACHER unset would train with no teacher, without a word
        if isinstance(value, str) and not value.strip() and info.field_name not in cls._empty_means:
            # a run under way keeps what it ran with: there an empty value that may be null was none (no teacher)
            if (info.context or {}).get("started") and type(None) in kinds:
                return None
            wanted = "a value, or null for none" if type(None) in kinds else "a value"
            raise PydanticCustomError(_SAID_WHOLE, f"is empty: give {cls._empty_says.get(info.field_name, wanted)}")
        # pydantic says only "Input should be a valid integer", never that the null given was the mistake
        if value is None and type(None) not in kinds:
            raise PydanticCustomError(
                _SAID_WHOLE, "is null: give a value (null unsets only a setting that may be unset)"
            )
        # a path or name YAML reads as a number (data.root=2024): pydantic would name the type, not the remedy
        if _text_only(cls.model_fields[info.field_name].annotation) and type(value) in (int, float):
            raise PydanticCustomError(
                _SAID_WHOLE, f"must be text, not the number {value!r}: quote it, as YAML reads it bare as a number"
            )
        if bool in kinds or Any in kinds or not any(isinstance(x, bool) for x in _scalars(value)):
            return value
        yaml_bool = "YAML reads a bare yes, no, on, off, true or false as a boolean"
        # pydantic reads true as 1 for an int field: epochs=true would train one epoch, milestones=[on, off] be [1, 0]
        if kinds & {int, float} and isinstance(value, bool):
            raise PydanticCustomError(_SAID_WHOLE, f"must be a number, not {str(value).lower()}")
        if kinds & {int, float}:
            raise PydanticCustomError(_SAID_WHOLE, f"must hold numbers; {yaml_bool} (got {{value}})", {"value": value})
        if str in kinds:  # device=on: pydantic would say "got True" of a word the user never wrote
            raise PydanticCustomError(_SAID_WHOLE, f"must be text, not {str(value).lower()}: {yaml_bool}; quote it")
        return value


DecayRate = Annotated[float, Field(ge=0, lt=1)]  # a decay rate: 1 would never forget, above it diverge

# numpy's and torch's generators take seeds of 0 up to 64 bits (torch adds the process's rank).
MAX_SEED = 2**63


class DataConfig(Section):
    dataset: str = "folder"
    root: str = "../shared/data/cifar10-train-jpg.tar.gz"
    val_size: int = Field(5000, ge=0)
    split_seed: int = Field(42, ge=0, lt=MAX_SEED)
    image_size: int = Field(32, ge=8)
    # How a folder dataset's images of another shape are fitted to image_size (inference.fits); the
    # export records it on the model's card, so serving fits photos the same way.
    fit: FitName = DEFAULT_FIT
    cache_dir: str = DEFAULT_CACHE_DIR

    # "" would read the current folder, all of it
    _empty_says = {"root": "the image folder or archive to read (data.root=PATH)"}
    # cache_dir= keeps no cache of a folder's decoded images (docs/own-dataset.md)
    _empty_means = frozenset({"cache_dir"})

    @field_validator("root", "cache_dir")
    @classmethod
    def _home(cls, path: str) -> str:
        # --set data.root=~/photos reaches us unexpanded: the shell expands ~ only at the start of a word
        return os.path.expanduser(path)


def _finite(value: Any) -> Any:
    """A model argument as given, refused if it is or holds a number that is not finite: the network would take it
    (a dropout of nan) and fail later, if at all, blamed on something else (the image size)."""
    if not all(math.isfinite(x) for x in _scalars(value) if isinstance(x, float)):
        if isinstance(value, float):
            raise PydanticKnownError("finite_number")
        raise PydanticCustomError(_SAID_WHOLE, "must hold finite numbers (got {value})", {"value": value})
    return value


# no type: each network takes its own arguments, which its constructor checks
ModelArgument = Annotated[Any, AfterValidator(_finite)]


class ModelConfig(Section):
    name: str = "se_resnet18"
    # Constructor arguments of the registered model (dropout, use_se, reduction, width, ...).
    args: dict[str, ModelArgument] = Field(default_factory=lambda: {"dropout": 0.5})
    # Training-time options that work on any registered model (they change initial values and buffers'
    # update rates, not the network, so a checkpoint still rebuilds from name and args alone).
    dirac_init: bool = False  # identity-initialise every ungrouped odd-kernel convolution (Jordan 2024)
    bn_momentum: float | None = Field(None, gt=0, le=1)  # every BatchNorm's momentum; airbench's fast 0.4

    @model_validator(mode="before")
    @classmethod
    def _own_arguments(cls, data: Any) -> Any:
        # the default args are the reference SE-ResNet18's: a recipe naming another network without args would
        # train it at dropout 0.5 unasked, or be refused for a dropout it never gave (airbench94 takes none)
        default = cls.model_fields["name"].default
        if isinstance(data, dict) and "args" not in data and data.get("name", default) != default:
            return {**data, "args": {}}
        return data

    @field_validator("name")
    @classmethod
    def _trainable(cls, name: str) -> str:
        if name == ENSEMBLE_ARCH:
            raise ValueError(
                "an ensemble is not trained: train its members, then join their checkpoints with "
                "`python -m training ensemble RUN RUN ... --out FILE`"
            )
        return name


AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    "none": dict(crop_padding=0, flip=False, cutout=0, color_jitter=0.0, mixup_alpha=0.0, cutmix_alpha=0.0),
    "basic": dict(crop_padding=4, flip=True, cutout=0, color_jitter=0.0, mixup_alpha=0.0, cutmix_alpha=0.0),
    "full": dict(crop_padding=4, flip=True, cutout=16, color_jitter=0.0, mixup_alpha=0.0, cutmix_alpha=0.0),
}


class AugmentConfig(Section):
    crop_padding: int = Field(4, ge=0)
    pad_mode: Literal["zeros", "reflect"] = "zeros"
    flip: bool = True
    alternate_flip: bool = False  # with flip: every image mirrored in every other epoch instead of at random
    vertical_flip: bool = False
    cutout: int = Field(0, ge=0)
    color_jitter: float = Field(0.0, ge=0, le=1)
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    mix_prob: float = Field(1.0, ge=0, le=1)
    # Progressive resizing (fast.ai's DAWNBench entries, FFCV): {first epoch counting from 1: size}; early
    # epochs train on downscaled images, which cost about size^2 as much, and the last ones at data.image_size.
    progressive_sizes: dict[int, int] = Field(default_factory=dict)

    @field_validator("progressive_sizes")
    @classmethod
    def _sizes(cls, sizes: dict[int, int]) -> dict[int, int]:
        for epoch, size in sizes.items():
            if epoch < 1:
                raise ValueError(f"epoch {epoch}: epochs count from 1")
            if size < 8:
                raise ValueError(f"size {size} at epoch {epoch}: the networks here need at least 8 pixels a side")
        return dict(sorted(sizes.items()))

    def params(self) -> AugmentParams:
        return AugmentParams(
            self.crop_padding,
            self.flip,
            self.cutout,
            self.color_jitter,
            self.vertical_flip,
            self.alternate_flip,
            self.pad_mode,
            tuple(self.progressive_sizes.items()),
        )

    def mix(self) -> MixParams:
        return MixParams(self.mixup_alpha, self.cutmix_alpha, self.mix_prob)


class OptimConfig(Section):
    name: Literal["sgd", "adamw", "muon"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    betas: tuple[DecayRate, DecayRate] = (0.9, 0.999)
    weight_decay: float = Field(5e-2, ge=0)
    # Decaying BatchNorm scales and biases only shrinks them; off by default as in most modern recipes.
    decay_norm_and_bias: bool = False
    # BatchNorm parameters train at lr x this, with weight decay / this so their decay per step is unchanged:
    # airbench's 64 lets the shifts move as fast as the scale-free BatchNorm needs.
    norm_lr_scale: float = Field(1.0, gt=0)
    # "muon" (training/muon.py): convolution filters take orthogonalised momentum steps at these settings
    # (airbench94_muon's 0.24, 0.6 and 3); every other parameter takes Nesterov SGD at lr, as with "sgd".
    muon_lr: float = Field(0.24, gt=0)
    muon_momentum: float = Field(0.6, ge=0, lt=1)
    muon_ns_steps: int = Field(3, ge=1)


class ScheduleConfig(Section):
    # "triangular": from initial_lr_fraction at step 0 up to 1 at peak_fraction of the run, then linearly
    # down to final_lr_fraction, sized to the epoch count (airbench: 0.2, 0.2, 0).
    name: Literal["cosine", "multistep", "step", "linear", "constant", "triangular"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    milestones: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [60, 120, 160])
    gamma: float = Field(0.2, gt=0)  # a negative one would turn the steps uphill
    step_size: int = Field(30, ge=1)  # for "step": multiply by gamma every step_size epochs
    final_lr_fraction: float = Field(0.0, ge=0)
    initial_lr_fraction: float = Field(0.2, ge=0)
    peak_fraction: float = Field(0.2, gt=0, lt=1)


# The devices a run trains or a model is evaluated on (train.device, training's --device), spelled as torch does.
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:(0|[1-9][0-9]*))?")


def device_remedy(name: str) -> str | None:
    """What to write instead of ``name``, a device none of ``DEVICE_NAMES`` names; None for one they name."""
    if _DEVICE.fullmatch(name):
        return None
    if re.fullmatch(r"\s*[0-9]+\s*", name):  # not str.isdigit, which takes '²' that int() refuses
        return f"GPU {int(name)} is named cuda:{int(name)}; use {DEVICE_NAMES}"
    return f"use {DEVICE_NAMES}"


class TrainConfig(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    # Forward/backward in chunks of this size, one optimizer step per batch: a large-batch recipe at the speed
    # of small batches on a CPU, whose caches favour them (BatchNorm then normalises per chunk).
    micro_batch_size: int | None = Field(None, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=MAX_SEED)
    device: str = "auto"  # auto (CUDA where there is one), cpu, cuda or cuda:N
    # "auto": bf16 autocast only where the hardware does bf16 (CUDA, or a CPU with AVX512-BF16 or AMX);
    # elsewhere emulated bf16 is many times slower than float32.
    bf16: bool | Literal["auto"] = "auto"
    channels_last: bool = True
    compile: bool = False
    ema_decay: float = Field(0.0, ge=0, lt=1)
    # Lookahead (airbench): every k steps the slow weights move toward the fast ones and the fast ones restart
    # from them; the slow weights' decay rises as lookahead_decay**k * progress**3, and they are the result.
    lookahead_every: int = Field(0, ge=0)
    lookahead_decay: float = Field(0.95, gt=0, lt=1)
    # A patch-whitening layer's bias trains for this many epochs, then freezes (its weights never train).
    whiten_bias_epochs: int | None = Field(None, ge=0)
    # Knowledge distillation: a trained checkpoint or run folder (an ensemble's too) whose logits on each
    # training image join its label as a target: (1 - weight) x cross-entropy + weight x T^2 x KL at T.
    distill_from: str | None = None
    distill_weight: float = Field(0.5, ge=0, le=1)
    # 1, not the textbook 4: label smoothing and ensembles' averaged probabilities already make this project's
    # teachers under-confident, and softening them further taught less (docs/fast-training.md, "Knowledge distillation")
    distill_temperature: float = Field(1.0, gt=0)
    # Dynamic data pruning (InfoBatch, training/data/prune.py): each epoch skips this share of the images whose
    # last loss was below the mean, and weighs the kept ones among them up by as much; 0 trains on every image.
    prune_ratio: float = Field(0.0, ge=0, lt=1)
    # The share of the run's epochs that prune; the rest, at the end, train on every image (the paper's 0.875).
    prune_until: float = Field(0.875, gt=0, le=1)
    # Which training images the whitening is fitted on: "random", a seeded sample of the split (as the paper's
    # shuffled CIFAR gives); "first", the split's first ones, which for a folder dataset (sorted by class) are
    # one or two classes: the runs documented before this option existed.
    whiten_sample: Literal["random", "first"] = "random"
    # last.pt (where a resume starts) and the curves are written every this many epochs, at the run's end, and with
    # every new best.pt (so best.pt is never ahead of last.pt). 1 on a CPU, where an epoch takes minutes; on a GPU
    # an epoch of a small network takes seconds, and the save and the curves are a tenth of it
    # (bench/bench_checkpoint.py).
    checkpoint_every: int = Field(1, ge=1)
    early_stop_patience: int = Field(0, ge=0)  # epochs without improvement before stopping; 0 = never
    # how much val top-1 must rise to count as an improvement for the patience above (best.pt takes any rise)
    early_stop_min_delta: float = Field(0.0, ge=0)
    max_batches_per_epoch: int | None = Field(None, ge=1)  # for smoke tests and benchmarks
    threads: int | None = Field(None, ge=1)

    def prune_params(self) -> PruneParams:
        return PruneParams(self.prune_ratio, int(self.prune_until * self.epochs))

    @field_validator("distill_from")
    @classmethod
    def _teacher_home(cls, path: str | None) -> str | None:
        return None if path is None else os.path.expanduser(path)

    @field_validator("device", mode="before")
    @classmethod
    def _gpu_number(cls, value: Any) -> Any:
        # device=0, as CUDA_VISIBLE_DEVICES numbers GPUs: told how to name that GPU, not to quote the number
        return str(value) if type(value) is int else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        remedy = device_remedy(value)
        if remedy:
            raise PydanticCustomError(_SAID_WHOLE, f"unknown device {value!r}: {remedy}")
        return value


class Config(Section):
    recipe: str = "se_resnet18"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _schedule_fits_the_run(self, info: ValidationInfo) -> Config:
        problems = config_problems(self)
        # A run already under way keeps the config it started with: refusing it would strand its checkpoints.
        if problems and (info.context or {}).get("started"):
            for problem in problems:
                log.warning("%s", problem)
        elif problems:
            raise ValueError("; ".join(problems))
        return self


# The sections of typed fields: a mapping given for one is merged into the recipe's. model is not among them: its
# args are the chosen network's own keyword arguments, which a mapping replaces whole.
MERGED_SECTIONS = ("data", "augment", "optim", "schedule", "train")


class ConfigError(UsageError):
    """A recipe or setting the run cannot take: the user's to correct."""
