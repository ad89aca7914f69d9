"""Typed training configuration. The defaults are the SE-ResNet18 reference recipe; recipes in
``training/recipes/*.yaml`` override them, and ``key=value`` overrides from the command line go last.
"""

from __future__ import annotations

import difflib
import logging
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Iterator, Literal, Sequence, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, PydanticKnownError

from inference.errors import UsageError
from inference.files import write_text_atomic
from inference.fits import DEFAULT_FIT, FitName
from inference.messages import and_listed, counted, exception_summary, validation_problems

from .data.augment import AugmentParams
from .data.mix import MixParams
from .data.prune import PruneParams
from .dataset_cache import DEFAULT_CACHE_DIR
from .models.ensemble import ENSEMBLE_ARCH

RECIPES_DIR = Path(__file__).parent / "recipes"
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


# The settings of optim and schedule that only some optimizers or schedules read (training/optim.py), by the one
# chosen; every one of them reads the others. One given but not read is said (``unused_settings``).
OPTIM_READS: dict[str, frozenset[str]] = {
    "sgd": frozenset({"momentum", "nesterov"}),
    "adamw": frozenset({"betas"}),
    "muon": frozenset({"momentum", "nesterov", "muon_lr", "muon_momentum", "muon_ns_steps"}),
}
SCHEDULE_READS: dict[str, frozenset[str]] = {
    "cosine": frozenset({"warmup_epochs", "final_lr_fraction"}),
    "linear": frozenset({"warmup_epochs", "final_lr_fraction"}),
    "multistep": frozenset({"warmup_epochs", "milestones", "gamma"}),
    "step": frozenset({"warmup_epochs", "step_size", "gamma"}),
    "constant": frozenset({"warmup_epochs"}),
    # no warmup: it starts at initial_lr_fraction and rises to its peak instead
    "triangular": frozenset({"initial_lr_fraction", "peak_fraction", "final_lr_fraction"}),
}


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


def micro_batch_advice(batch_size: int, micro_batch_size: int) -> str:
    """The micro-batch sizes to choose from for ``batch_size``: its divisors nearest ``micro_batch_size`` on either
    side, and null for one forward per step. Neither 1 (BatchNorm cannot normalise one image) nor the batch itself
    (which null says) is offered."""
    # in pairs up to the square root: a batch_size of a billion given by mistake is refused at once
    paired = [(d, batch_size // d) for d in range(1, math.isqrt(batch_size) + 1) if batch_size % d == 0]
    divisors = sorted({d for pair in paired for d in pair} - {1, batch_size})
    near = [d for d in divisors if d < micro_batch_size][-1:] + [d for d in divisors if d > micro_batch_size][:1]
    null = "micro_batch_size=null for one forward per step"
    if not near:
        return f"set {null}"
    which = "the divisors" if len(near) > 1 else "the divisor"
    said = " or ".join(map(str, near))
    return f"set micro_batch_size to {said} ({which} of {batch_size} nearest {micro_batch_size}), or {null}"


def config_problems(config: Config) -> list[str]:
    """Settings that each pass validation but together make part of the run pointless."""
    s, t, epochs = config.schedule, config.train, config.train.epochs
    problems = []
    if t.micro_batch_size and t.batch_size % t.micro_batch_size:
        # Every step would end on a small remainder chunk, whose BatchNorm statistics are those of a few images.
        problems.append(
            f"train.micro_batch_size {t.micro_batch_size} does not divide train.batch_size {t.batch_size}: "
            f"{micro_batch_advice(t.batch_size, t.micro_batch_size)}"
        )
    problems += _progressive_problems(config)
    a, size = config.augment, config.data.image_size
    if a.crop_padding >= size:
        # a shift of the whole side or more can move the image out of its crop (an all-black one with zeros), and
        # reflect padding cannot pad more than the side less one: the first batch failed with torch's error
        problems.append(
            f"augment.crop_padding {a.crop_padding} is not below data.image_size {size}: lower it (4 is usual at 32)"
        )
    if a.cutout > size:
        # past the side, some images are blacked out whole, and at 2 x side - 1 every one is
        problems.append(
            f"augment.cutout {a.cutout} is larger than data.image_size {size}: lower it (half the side is usual)"
        )
    if t.distill_from and config.augment.mix().enabled:
        # a mixed image's teacher target would be the mix of two images' logits, which this trainer does not form
        problems.append(
            "train.distill_from does not combine with Mixup or CutMix: set mixup_alpha and cutmix_alpha to 0"
        )
    if t.prune_ratio and not t.prune_params().enabled:
        # the first epoch has no losses to prune by, and the epochs from prune_until on train on every image
        problems.append(
            f"train.prune_ratio {t.prune_ratio:g} with train.prune_until {t.prune_until:g} of "
            f"{counted(epochs, 'epoch')}: no epoch would prune; raise prune_until or the epochs, or set prune_ratio "
            "to 0"
        )
    late = [m for m in s.milestones if m >= epochs]
    if s.name == "multistep" and late:
        problems.append(
            f"schedule.milestones {late} are not below train.epochs {epochs}: the learning rate would never drop there"
        )
    if s.name == "step" and s.step_size >= epochs:
        problems.append(
            f"schedule.step_size {s.step_size} is not below train.epochs {epochs}: the learning rate would never "
            "drop; lower step_size"
        )
    # the triangular schedule has no warmup: it starts at initial_lr_fraction instead
    if s.name != "triangular" and s.warmup_epochs >= epochs:
        problems.append(
            f"schedule.warmup_epochs {s.warmup_epochs:g} is not below train.epochs {epochs}: the run would end "
            f"before its warmup does; set warmup_epochs below {epochs} (0 for none) or epochs above "
            f"{s.warmup_epochs:g}"
        )
    return problems


def _progressive_problems(config: Config) -> list[str]:
    sizes, full, epochs = config.augment.progressive_sizes, config.data.image_size, config.train.epochs
    if not sizes:
        return []
    problems = []
    if any(size > full for size in sizes.values()):
        problems.append(
            f"augment.progressive_sizes {sizes} go above data.image_size {full}: progressive resizing only downscales"
        )
    late = [epoch for epoch in sizes if epoch > epochs]
    if late:
        problems.append(f"augment.progressive_sizes start epochs {late} after the run's last, {epochs}")
    if list(sizes.values())[-1] < full:
        # BatchNorm statistics and the filters' scale must end on the size the model is evaluated and served at.
        problems.append(
            f"augment.progressive_sizes {sizes} end below data.image_size {full}: add {{EPOCH: {full}}} so the "
            "last epochs train at the size the model is evaluated at"
        )
    return problems


class ConfigError(UsageError):
    """A recipe or setting the run cannot take: the user's to correct."""


class YamlMistake(yaml.constructor.ConstructorError):
    """YAML that parses, but not as its writer meant: said as the mistake, not as "not YAML"."""

    @property
    def line(self) -> int | None:
        """The line of the text the mistake is on, which a file's refusal names (a 60-line recipe); None where
        the mistake names its own lines (a key given twice)."""
        return self.problem_mark.line + 1 if self.problem_mark is not None else None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, on one line with its line number (yaml's own text spans several, with a
    snippet of the text): a mistake as itself, a syntax error as "not YAML"."""
    if isinstance(exc, YamlMistake):  # YAML that parses, but not as meant: "not YAML" would be false
        return f"line {exc.line}: {exc.problem}" if exc.line is not None else str(exc.problem)
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        # a context other than "while parsing ..." is the first half of the sentence: "expected a single document in
        # the stream, but found another document", "found duplicate anchor 'a'; first occurrence, second occurrence"
        said = f"{exc.context}, {exc.problem}" if exc.context and not exc.context.startswith("while ") else exc.problem
        return f"not YAML: {said} at line {exc.problem_mark.line + 1}"
    return f"not YAML: {exception_summary(exc)}"


class _Loader(yaml.SafeLoader):
    """YAML as recipes and overrides are read: YAML 1.1 (yes, no, on and off are booleans) with YAML 1.2's
    numbers (below), since a string reaches a model argument as it is."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError) as exc:  # a tag's own constructor: 2001-13-45 as a date, !!bool maybe
            if isinstance(exc, yaml.YAMLError):
                raise
            tag = node.tag.rpartition(":")[2]
            why = f" ({exception_summary(exc)})" if not isinstance(exc, KeyError) else ""  # a KeyError says the key
            raise YamlMistake(
                None, None, f"{node.value!r} is no {tag}{why}: quote it to give it as text", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # !!map or !!set on text or a list: its items are no pairs
            tag = node.tag.rpartition(":")[2]
            raise YamlMistake(
                None,
                None,
                f"!!{tag} takes a mapping {{...}}, not a {node.id}: quote it to give it as text",
                node.start_mark,
            )
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then a key of base: an override, meant
                continue
            _check_colon_spaced(node, key_node, value_node)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # the base class refuses an unhashable key; a null one names no setting
            if key in seen:
                # yaml keeps the last silently: a second `train:` section dropped the first's epochs unnoticed
                lines = sorted({seen[key].start_mark.line + 1, key_node.start_mark.line + 1})
                where = f" (line{'s' if len(lines) > 1 else ''} {' and '.join(map(str, lines))})"
                raise YamlMistake(
                    None, None, f"{key!r} is given twice{where}: the second would replace the first; keep one"
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _check_colon_spaced(node: yaml.MappingNode, key: yaml.Node, value: yaml.Node) -> None:
    """``{width:8}`` is a key "width:8" with no value (``{1:16}``, the base-60 number 76): YAML's colon needs a
    space after it. Refused here, where the text is known, not as a model argument or setting nobody wrote."""
    plain_key = isinstance(key, yaml.ScalarNode) and key.style is None and ":" in key.value
    no_value = isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null" and value.value == ""
    if node.flow_style and plain_key and no_value:
        name, _, given = key.value.partition(":")
        raise YamlMistake(
            None,
            None,
            f"{key.value!r} is a key without a value: put a space after its colon, {{{name}: {given}}}",
            key.start_mark,
        )


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
# YAML 1.1 reads epochs=1:30 as the base-60 number 90, epochs=010 as the octal 8, and -.5 and 1e3 as strings: each
# silently not what its writer meant. Numbers here are read as YAML 1.2 and Python write them: 010 is ten, 0o10
# eight, 0x10 sixteen; a signed .5, 1e3 and 5e-3 are floats; 1:30 is text, which a number setting refuses.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    digits = text.lstrip("+-")
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
    try:
        value = int(digits[2:] if base != 10 else digits, base)
    except ValueError:  # an explicit !!int tag on text that is no number
        raise YamlMistake(None, None, f"{text!r} is not an integer", node.start_mark) from None
    return -value if text.startswith("-") else value


_Loader.add_constructor(_INT, _construct_int)


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    # an explicit !!timestamp on text that is no date: the base constructor fails on it with an AttributeError
    if not loader.timestamp_regexp.match(text):
        raise YamlMistake(None, None, f"{text!r} is no timestamp: quote it to give it as text", node.start_mark)
    return loader.construct_yaml_timestamp(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def read_yaml(text: str) -> Any:
    """YAML as recipes, --set values and hand-edited config.yaml files are read (``_Loader``)."""
    return yaml.load(text, Loader=_Loader)


# The top-level key that makes a recipe an ensemble recipe (training/ensemble_recipe.py): members, not a network.
ENSEMBLE_KEY = "ensemble"


def _recipe_files() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def is_ensemble_recipe(name_or_path: str) -> bool:
    return ENSEMBLE_KEY in _read_recipe(name_or_path)


def list_recipes() -> list[str]:
    """The built-in recipes that train one network."""
    return [name for name in _recipe_files() if not is_ensemble_recipe(name)]


def list_ensemble_recipes() -> list[str]:
    """The built-in recipes that train several networks and join them (training/ensemble_recipe.py)."""
    return [name for name in _recipe_files() if is_ensemble_recipe(name)]


def _read_recipe(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    # a folder (training/recipes, a tab completion stopped short) is not "no recipe"; a built-in's name still wins
    # over a folder of that name in the current one (a run folder)
    if path.is_dir() and name_or_path not in _recipe_files():
        inside = sorted(p.name for p in path.glob("*.y*ml"))
        shown = f" (in it: {', '.join(inside[:8])}{' ...' if len(inside) > 8 else ''})" if inside else ""
        raise ConfigError(f"recipe {name_or_path} is a folder: give a recipe's YAML file{shown} or a built-in name")
    if not path.suffix:
        path = RECIPES_DIR / f"{name_or_path}.yaml"
    if Path(name_or_path).suffix and not path.is_file():  # a file the user named
        where = "is a folder" if path.is_dir() else "does not exist"
        if where == "does not exist" and name_or_path == path.name and path.stem in _recipe_files():
            raise ConfigError(f"recipe file {name_or_path} {where}; the built-in recipe is --recipe {path.stem}")
        raise ConfigError(f"recipe file {name_or_path} {where}; built-in recipes: {', '.join(_recipe_files())}")
    if not path.is_file():
        if Path(f"{name_or_path}.yaml").is_file():  # a path to a recipe without its suffix (a tab completion)
            raise ConfigError(f"no recipe {name_or_path!r}: a recipe file is named whole, --recipe {name_or_path}.yaml")
        close = [name for name in _recipe_files() if name.startswith(f"{name_or_path}_") or name_or_path in name]
        # resnet9_half_cup, resnet9-half-cpu: a typo, which no name holds whole
        close = close or difflib.get_close_matches(name_or_path.replace("-", "_"), _recipe_files(), n=1, cutoff=0.8)
        hint = f" (recipes named like it: {', '.join(close)})" if close else ""
        raise ConfigError(f"no recipe {name_or_path!r}{hint}; built-in recipes: {', '.join(_recipe_files())}")
    try:
        raw = read_yaml(path.read_text())
    except YamlMistake as exc:
        line = f", line {exc.line}" if exc.line is not None else ""
        raise ConfigError(f"recipe {str(path)!r}{line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        # yaml's own text names the file "<unicode string>" and puts the problem on a line after its context
        said = _left_open(exc) or yaml_problem(exc).removeprefix("not YAML: ")
        raise ConfigError(f"recipe {str(path)!r} is not a YAML file: {said}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"recipe {str(path)!r} is not a YAML file: {exception_summary(exc)}") from exc
    if raw is None:  # an empty file would otherwise train every default (se_resnet18) as if that were asked
        raise ConfigError(f"recipe {str(path)!r} is empty: it names no model and no settings")
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {str(path)!r} is not a mapping of sections")
    raw.setdefault("recipe", path.stem)
    return raw


# what yaml's context names of a thing opened on a line it marks and closed later
_OPENED = ("flow sequence", "flow mapping", "quoted scalar")


def _left_open(exc: yaml.YAMLError) -> str | None:
    """A bracket or quote a recipe leaves open, said with the line it was opened on; None for any other problem.
    yaml finds it at the end of the text, a line past the recipe's last, which is no line to mend."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None or exc.context_mark is None:
        return None
    end = exc.problem_mark
    if not (exc.context and end.buffer and end.index >= len(end.buffer) - 1):
        return None
    what = exc.context.split(" a ", 1)[-1]  # "while parsing a flow sequence"
    if what == "flow node":  # an item awaited after a comma: its mark is the end, not where the bracket opened
        return f"{exc.problem}: a [ or {{ is never closed"
    if what not in _OPENED:  # an alias, anchor or tag cut short by the end is nothing left open
        return None
    return f"{exc.problem}: the {what} begun at line {exc.context_mark.line + 1} is never closed"


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A network recipe's raw settings (an ensemble recipe is refused: it names other recipes, not settings)."""
    raw = _read_recipe(name_or_path)
    if ENSEMBLE_KEY in raw:
        raise ConfigError(
            f"{raw['recipe']!r} is an ensemble recipe (it trains several networks and joins them): train it with "
            f"`python -m training train --recipe {name_or_path}`; its members' recipes are the ones to build"
        )
    for section in ("model", *MERGED_SECTIONS):
        if raw.get(section, {}) is None:  # `train:` with nothing under it: no settings of that section
            del raw[section]
        elif not isinstance(raw.get(section, {}), dict):
            # said here: an override of the section would otherwise be blamed for it ("not a section")
            raise ConfigError(
                f"recipe {name_or_path!r}: {section} is not a mapping of settings (it is {raw[section]!r}); write "
                f"it as {section}: {{key: value, ...}}"
            )
    return raw


def load_ensemble_recipe_raw(name_or_path: str) -> dict[str, Any]:
    raw = _read_recipe(name_or_path)
    if ENSEMBLE_KEY not in raw:
        raise ConfigError(f"{raw['recipe']!r} trains one network, not an ensemble (no {ENSEMBLE_KEY!r} section)")
    return raw


def _parse_value(text: str) -> Any:
    # YAML's scalars give true/false, numbers, lists ([60,120]) and null for free.
    try:
        return read_yaml(text) if text != "" else ""
    except YamlMistake as exc:
        raise ConfigError(f"value {text!r}: {exc.problem}") from exc
    except yaml.reader.ReaderError as exc:
        raise ConfigError(_unreadable_value(text, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"value {text!r} is not YAML ({exception_summary(exc, lines=2)}): quote it, or close its brackets"
        ) from exc


def _unreadable_value(text: str, exc: yaml.reader.ReaderError) -> str:
    """What to say of a value holding a character YAML's reader refuses, which quoting does not mend: bytes that
    are no UTF-8 (a file named in another encoding, which Python passes on as surrogate escapes) or a control
    character."""
    if any("\ud800" <= char <= "\udfff" for char in text):
        return (
            f"value '{_as_bytes(text)}' is not UTF-8 text (a name in another encoding?), and settings are UTF-8: "
            "rename it, or give a link to it whose name is UTF-8 (ln -s)"
        )
    return (
        f"value {text!r} holds the character #x{exc.character:02x}, which YAML takes only as an escape in double "
        "quotes: rename it, or give a link to it under another name (ln -s)"
    )


def _as_bytes(text: str) -> str:
    """``text`` with each undecodable byte (which Python keeps as a surrogate escape) written as ``\\xff``."""
    escaped = all("\udc80" <= char <= "\udcff" for char in text if "\ud800" <= char <= "\udfff")
    return text.encode("utf-8", "surrogateescape" if escaped else "backslashreplace").decode(
        "utf-8", "backslashreplace"
    )


def field_owner(key: str) -> str:
    """Resolve a bare key (``lr``) to its section (``optim.lr``); model arguments are the fallback."""
    owners = [
        name
        for name, f in Config.model_fields.items()
        if isinstance(f.default_factory, type)
        and issubclass(f.default_factory, BaseModel)
        and key in f.default_factory.model_fields
    ]
    if len(owners) > 1:
        raise ConfigError(f"{key!r} is ambiguous ({', '.join(owners)}): write it as section.{key}")
    if owners:
        return f"{owners[0]}.{key}"
    if key in Config.model_fields:
        return key
    return f"model.args.{key}"


# The sections of typed fields: a mapping given for one is merged into the recipe's. model is not among them: its
# args are the chosen network's own keyword arguments, which a mapping replaces whole.
MERGED_SECTIONS = ("data", "augment", "optim", "schedule", "train")


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r} has no key before '='")
    # .epochs, train..epochs: a setting named "" was refused as "no such setting", naming none
    if "" in key.strip().split("."):
        raise ConfigError(
            f"override {item!r}: key {key.strip()!r} has an empty part beside a dot; write section.setting"
        )
    # "lr = 0.1", quoted as one word: the key's spaces would make it a model argument named "lr " (the value's
    # are YAML's to ignore)
    return key.strip(), value


def check_distinct(overrides: list[str]) -> None:
    """One command line's overrides set each key once: a second value is a mistake (an edited, copied command),
    not a choice. A preset or a whole section sets fields without naming them: after one, a field may be set
    again (``augment=basic cutout=8``, a preset tweaked), but not before it (``cutout=8 augment=basic`` would
    undo the cutout without a word). (Layers of overrides, a recipe member's then the command line's, do replace
    earlier values.)"""
    named: dict[str, str] = {}  # field -> the override that named it
    covered: dict[str, str] = {}  # field or section -> the preset or section override that set it unnamed
    for item in overrides:
        fields, implicit = _fields_set(item)
        for field in fields:
            if implicit:
                undone = next((known for known in named if _overlap(known, field)), None)
                if undone is not None:
                    raise ConfigError(
                        f"{item!r} sets {undone} again after {named[undone]!r}, and would undo it: put the "
                        f"preset or section first and the field after it, or keep one"
                    )
                twice = next((known for known in covered if _overlap(known, field)), None)
                if twice is not None and covered[twice] != item:
                    raise ConfigError(f"{field} is set twice ({covered[twice]!r} and {item!r}): keep one")
                covered[field] = item
            elif field in named:
                raise ConfigError(f"{field} is set twice ({named[field]!r} and {item!r}): keep one")
            else:
                named[field] = item


def _fields_set(item: str) -> tuple[set[str], bool]:
    """The dotted fields an override sets, and whether it sets them without naming them: ``augment=basic`` each
    of the preset's (unnamed), ``train={epochs: 5}`` those of the mapping (a merged section: named),
    ``model={...}`` the whole section (unnamed)."""
    key, value = _split_override(item)
    dotted = key if "." in key or key == "augment" else field_owner(key)
    if dotted == "augment" and not value.startswith("{"):
        return {f"augment.{name}" for name in AUGMENT_PRESETS.get(value, {})} or {"augment"}, True
    if value.lstrip().startswith("{"):
        try:
            parsed = _parse_value(value)
        except ConfigError:
            return {dotted}, True  # apply_overrides says what is wrong with it
        if dotted in MERGED_SECTIONS and isinstance(parsed, dict):
            return {f"{dotted}.{name}" for name in parsed}, False  # merged: it sets what it names, {} nothing
        if isinstance(parsed, dict):  # a mapping replaced whole (model, model.args): every field under it
            return {dotted}, True
    return {dotted}, False


def _overlap(a: str, b: str) -> bool:
    """Whether setting ``a`` and ``b`` touches one field: equal, or one a section holding the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, value = _split_override(item)
        if key == "augment" and not value.startswith("{"):
            if value not in AUGMENT_PRESETS:
                raise ConfigError(f"unknown augment preset {value!r}; valid: {', '.join(AUGMENT_PRESETS)}")
            raw["augment"] = {**raw.get("augment", {}), **AUGMENT_PRESETS[value]}
            continue
        path = (key if "." in key else field_owner(key)).split(".")
        _check_inside_a_mapping(key, path)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        parsed = _parse_value(value)
        if len(path) == 1 and not isinstance(parsed, dict):
            _check_not_a_section(key, value, parsed)
        if path[-1] in MERGED_SECTIONS and len(path) == 1 and isinstance(parsed, dict):
            # augment={cutout: 8} sets those fields, as augment.cutout=8 does: replacing the section would drop
            # the recipe's other settings of it without a word (airbench's reflect padding, its alternating flip)
            node[path[-1]] = {**(node.get(path[-1]) or {}), **parsed}
        else:
            node[path[-1]] = parsed
    return raw


def _check_not_a_section(key: str, text: str, value: Any) -> None:
    """``model=resnet9``, ``schedule=cosine``: a section given one value, which pydantic refuses as "Input should be
    a valid dictionary or instance of ModelConfig", naming neither the mistake nor the setting meant."""
    section = Config.model_fields[key].default_factory if key in Config.model_fields else None
    if not (isinstance(section, type) and issubclass(section, BaseModel)):
        return
    named = (
        f"; to choose it by name, {key}.name={text}"
        if "name" in section.model_fields and isinstance(value, str)
        else ""
    )
    raise ConfigError(
        f"cannot set {key}={text}: {key} is a section of settings; set one of them as {key}.SETTING=VALUE{named}"
    )


def _check_inside_a_mapping(key: str, path: list[str]) -> None:
    """``schedule.milestones.0=30``: only a mapping's entries are set one by one; a list's index or a number's
    part would become a mapping of its own, refused as "Input should be a valid list"."""
    section = Config.model_fields[path[0]].default_factory if path[0] in MERGED_SECTIONS else None
    if len(path) < 3 or not (isinstance(section, type) and issubclass(section, BaseModel)):
        return
    if path[1] not in section.model_fields:
        return
    kinds = _kinds(section.model_fields[path[1]].annotation)
    if dict not in kinds:
        whole = "[...]" if kinds & {list, tuple} else "VALUE"
        raise ConfigError(f"cannot set {key!r}: {path[0]}.{path[1]} is set whole, as {path[0]}.{path[1]}={whole}")


def build_config(recipe: str | None = None, overrides: list[str] | None = None, what: str = "") -> Config:
    """``what``: whose configuration it is where a command builds several (an ensemble member, an ablation
    variant), said before each warning."""
    raw = _defaults_unset(load_recipe(recipe)) if recipe else {}
    loaded = raw.get("recipe", Config.model_fields["recipe"].default)
    config = validate_config(apply_overrides(raw, overrides or []))
    if config.recipe != loaded and config.recipe in _recipe_files():
        # recipe= names the run (its folder, its checkpoint's and model card's record), and nothing else
        raise ConfigError(
            f"--set recipe={config.recipe} would only name this run so; it would train {loaded}'s settings. To train "
            f"the recipe {config.recipe}, give --recipe {config.recipe}"
        )
    # said here, where the fields set are the recipe's and the overrides' alone: a config read back from a
    # checkpoint sets every field
    for unused in unused_settings(config):
        log.warning("%s%s", f"{what}: " if what else "", unused)
    return config


_UNSET = object()  # a key that is no setting: kept, to be refused by name


def _defaults_unset(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` without the default values it holds, if it holds every setting: a run's config.yaml given back as
    --recipe (to train that run again) sets every field, and each one its optimizer or schedule does not read would
    be warned of as if chosen (a dozen warnings for an SGD run). A hand-written recipe is taken as written."""
    defaults = Config().model_dump(mode="json")
    sections = {name: raw.get(name) for name in MERGED_SECTIONS}
    if not all(isinstance(given, dict) and given.keys() >= defaults[name].keys() for name, given in sections.items()):
        return raw
    return {
        **raw,
        **{
            name: {field: value for field, value in given.items() if defaults[name].get(field, _UNSET) != value}
            for name, given in sections.items()
            if isinstance(given, dict)
        },
    }


def unused_settings(config: Config) -> list[str]:
    """The settings given (by the recipe or an override) that the chosen optimizer or schedule does not read, which
    would otherwise change nothing without a word. A default is not said: nobody chose it."""
    said = _unused("optim", config.optim, OPTIM_READS, "optimizer")
    o = config.optim
    if o.name == "sgd" and o.nesterov and o.momentum == 0 and {"nesterov", "momentum"} & o.model_fields_set:
        said.append("optim.nesterov true is unused: SGD's Nesterov step needs optim.momentum above 0 (it is 0)")
    a, t = config.augment, config.train
    if a.alternate_flip and not a.flip and "alternate_flip" in a.model_fields_set:
        said.append("augment.alternate_flip true is unused: augment.flip is false, so no image is mirrored")
    if t.lookahead_every == 0 and "lookahead_decay" in t.model_fields_set:
        said.append(f"train.lookahead_decay {t.lookahead_decay} is unused: train.lookahead_every is 0 (no lookahead)")
    if t.early_stop_patience == 0 and "early_stop_min_delta" in t.model_fields_set:
        # it counts the epochs without improvement that early stopping reads; the best epoch ignores it
        said.append(
            f"train.early_stop_min_delta {t.early_stop_min_delta} is unused: train.early_stop_patience is 0 "
            "(no early stopping)"
        )
    if t.early_stop_patience and t.early_stop_min_delta >= 1:
        # a fraction of top-1, as val top-1 is: "1" meant as a point can never be met
        said.append(
            f"train.early_stop_min_delta {t.early_stop_min_delta:g} is a fraction of val top-1 (0.01 is one point): no "
            f"epoch can beat the best by it, so the run stops after its first {t.early_stop_patience} epochs without "
            "one (train.early_stop_patience)"
        )
    if t.lookahead_every and t.ema_decay and {"lookahead_every", "ema_decay"} & t.model_fields_set:
        # the average is what is evaluated and exported; lookahead's final step onto its slow weights comes after
        # the last update of the average, so they reach nothing
        said.append(
            f"train.lookahead_every {t.lookahead_every}: lookahead's result, its slow weights, is unused: "
            f"train.ema_decay {t.ema_decay} makes the network's average the result that is evaluated and exported; "
            "lookahead only restarts the averaged network from them as it trains. Set one of the two to 0"
        )
    if "mix_prob" in a.model_fields_set and not (a.mixup_alpha or a.cutmix_alpha):
        said.append(
            f"augment.mix_prob {a.mix_prob:g} is unused: augment.mixup_alpha and cutmix_alpha are 0 "
            "(no images are mixed)"
        )
    if "pad_mode" in a.model_fields_set and a.pad_mode != "zeros" and a.crop_padding == 0:
        said.append(f"augment.pad_mode {a.pad_mode} is unused: augment.crop_padding is 0 (nothing is padded)")
    if "prune_until" in t.model_fields_set and t.prune_ratio == 0:
        said.append(f"train.prune_until {t.prune_until:g} is unused: train.prune_ratio is 0 (no pruning)")
    if t.distill_from and t.distill_weight == 0:
        # the teacher's pass over the training images (minutes) would feed a loss term weighted 0
        said.append(f"train.distill_from {t.distill_from} is unused: train.distill_weight is 0")
    if not t.distill_from:
        said += [
            f"train.{name} {getattr(t, name)} is unused: train.distill_from names no teacher"
            for name in ("distill_weight", "distill_temperature")
            if name in t.model_fields_set
        ]
    return said + _unused("schedule", config.schedule, SCHEDULE_READS, "schedule")


def _unused(
    prefix: str, section: OptimConfig | ScheduleConfig, reads: dict[str, frozenset[str]], kind: str
) -> list[str]:
    some_read = frozenset().union(*reads.values())
    said = []
    for field in type(section).model_fields:
        if field not in section.model_fields_set or field not in some_read or field in reads[section.name]:
            continue
        value = getattr(section, field)
        shown = str(value).lower() if isinstance(value, bool) else value
        readers = [name for name, fields in reads.items() if field in fields]
        one = len(readers) == 1
        said.append(
            f"{prefix}.{field} {shown} is unused: the {section.name} {kind} does not read it (only "
            f"{and_listed(readers)} {'does' if one else 'do'}); leave it out, or choose "
            f"{readers[0] if one else 'one of those'}"
        )
    return said


def validate_config(raw: dict[str, Any], started: bool = False) -> Config:
    """``raw`` as a Config, or a ConfigError listing every invalid field. ``started``: the config of a run
    under way, whose schedule problems are warned about, not refused."""
    try:
        return Config.model_validate(raw, context={"started": started})
    except ValidationError as exc:
        unknown = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "extra_forbidden"]
        problems = validation_problems(_RangedErrors(exc))
        raise ConfigError(f"invalid configuration: {problems}{did_you_mean(unknown)}") from exc


# pydantic's errors for a number out of a field's bounds or not of its kind: each says one bound at most ("less
# than 1"), or none ("a finite number"), never the range the setting takes
_RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "int_from_float",
        "int_parsing_size",
    }
)
_BOUNDS = {"gt": "<", "ge": "<=", "lt": "<", "le": "<="}


class _RangedErrors:
    """A ValidationError's errors as ``validation_problems`` reads them, each number out of range saying the
    whole range its setting takes and the value given."""

    def __init__(self, exc: ValidationError) -> None:
        self._errors = [_with_range(error) for error in exc.errors(include_url=False)]

    def errors(self, include_url: bool = False) -> list[Any]:
        return self._errors


def _with_range(error: Any) -> Any:
    if error["type"] == _SAID_WHOLE:
        return {**error, "input": None}
    valid = _valid_range(tuple(error["loc"])) if error["type"] in _RANGE_ERRORS else None
    if valid is None:
        return error
    # the value is said here, beside the range, so none is appended after it
    return {**error, "msg": f"{error['msg']} (valid: {valid}; got {error['input']!r:.60})", "input": None}


def _valid_range(loc: tuple[Any, ...]) -> str | None:
    """The values a section's numeric field takes, as ``0 <= value < 1``; None for any other location."""
    if len(loc) != 2 or loc[0] not in Config.model_fields:
        return None
    section = Config.model_fields[loc[0]].default_factory
    if not (isinstance(section, type) and issubclass(section, BaseModel)) or loc[1] not in section.model_fields:
        return None
    field = section.model_fields[loc[1]]
    bounds = {name: getattr(m, name) for m in field.metadata for name in _BOUNDS if hasattr(m, name)}
    if not bounds:
        return None
    shown = {name: f"{bound:g}" if isinstance(bound, float) else str(bound) for name, bound in bounds.items()}
    lower = next((f"{shown[n]} {_BOUNDS[n]} " for n in ("gt", "ge") if n in bounds), "")
    upper = next((f" {_BOUNDS[n]} {shown[n]}" for n in ("lt", "le") if n in bounds), "")
    whole = int in {field.annotation, *get_args(field.annotation)}
    if not upper:  # value >= 1 reads more plainly than 1 <= value
        bound = next(n for n in ("gt", "ge") if n in bounds)
        return f"{'a whole number' if whole else 'a number'} {_BOUNDS[bound].replace('<', '>')} {shown[bound]}"
    return f"{lower}{'whole number' if whole else 'value'}{upper}"


def _setting_names() -> dict[str, list[str]]:
    """Each setting's own name -> its dotted names (``name`` is in three sections)."""
    names: dict[str, list[str]] = {}
    for section, f in Config.model_fields.items():
        if isinstance(f.default_factory, type) and issubclass(f.default_factory, BaseModel):
            for name in f.default_factory.model_fields:
                names.setdefault(name, []).append(f"{section}.{name}")
    return names


def _dotted_settings() -> set[str]:
    """Every setting's dotted name (``train.epochs``)."""
    return {dotted for names in _setting_names().values() for dotted in names}


def close_settings(key: str) -> list[str]:
    """The settings a mistyped key most likely meant, dotted (``epohcs`` and ``optim.epochs`` -> ``train.epochs``),
    those of the section it names first; none for a key like no setting (a model's own argument)."""
    section, _, name = key.rpartition(".")
    if not section and key in Config.model_fields:  # a section's own name: nothing mistyped
        return []
    names = _setting_names()
    close = [dotted for match in difflib.get_close_matches(name, names, n=2, cutoff=0.75) for dotted in names[match]]
    if not section:  # a section mistyped (trian.epochs is refused as the section trian)
        sections = [s for s in Config.model_fields if s != "recipe"]
        # a section's name said long (optimizer, augmentation, dataset) is too far from it for difflib's cutoff
        close += _run_together(name, sections, names) or difflib.get_close_matches(name, sections, n=1, cutoff=0.75)
    own = [dotted for dotted in close if dotted.startswith(f"{section}.")]
    if section == "model" and not own:  # model: {name: wrn_16_4, dropout: 0.1}: a network's own argument
        return [f"model.args.{name}"]
    # dict.fromkeys: a setting both close to the whole key and its rest (modelimage_size) is hinted at once
    return [dotted for dotted in dict.fromkeys(own or close) if dotted != key][:2]


def _run_together(name: str, sections: list[str], names: dict[str, list[str]]) -> list[str]:
    """A section and its setting written as one word (``dataroot``, ``train_epochs``, ``optimizer_lr``): that
    setting where the rest is close to one of the section's, else the one setting of another section it is close to
    (``trainlr``: optim.lr, not train, which has no lr); the section alone where the rest is letters
    (``optimizer``)."""
    for section in (s for s in sections if name.startswith(s)):
        rest = name[len(section) :]
        said = rest.lstrip("_-")
        matches = difflib.get_close_matches(said, names, n=2, cutoff=0.75)
        # the section said long (optimizer_lr, traininglr): the setting is the rest's end, whole
        ends = (said[cut:].lstrip("_-") for cut in range(1, len(said)) if said[:cut].isalpha())
        matches += [end for end in ends if end in names][:1]
        dotted = list(dict.fromkeys(dotted for match in matches for dotted in names[match]))
        meant = [setting for setting in dotted if setting.startswith(f"{section}.")]
        if meant or len(dotted) == 1:
            return (meant or dotted)[:1]
        return [section] if rest.isalpha() else []
    return []


def did_you_mean(keys: list[str], arguments: Sequence[str] = ()) -> str:
    """A hint for the mistyped ``keys`` that are close to a setting (or to one of a model's ``arguments``), to
    append to the error naming them ("" if none is): a typo said only as "no such setting", or as an argument the
    model does not take, leaves the user to search the recipe for the right name."""
    hints = [
        (key, close)
        for key in keys
        if (close := difflib.get_close_matches(key, arguments, n=1, cutoff=0.75) or close_settings(key))
    ]
    if len(keys) == 1 and hints:  # the one key refused: the hint can be for no other
        return f"; did you mean {' or '.join(hints[0][1])}?"
    # several refused: each hint names its key, or it would read as meant for the key said last
    return "".join(f"; {key}: did you mean {' or '.join(close)}?" for key, close in hints)


# Where a run runs, not what it computes: the data's location (the data itself is checked when a run resumes),
# the device and threads, the evaluation batch. A resumed run may take new values for these (a preempted run
# continued on another machine, from another folder); any other change would make it another run.
PLACEMENT_KEYS = ("data.root", "data.cache_dir", "train.device", "train.threads", "train.eval_batch_size")
# Those of them that change the arithmetic (kernels, the order of sums): a run moved so is no longer bit-identical.
NUMERICS_KEYS = ("train.device", "train.threads")


def placement_overrides(overrides: list[str]) -> list[str]:
    """The ``key=value`` overrides among ``overrides`` that set where a run runs."""
    return [item for item in overrides if "=" in item and _full_key(_split_override(item)[0]) in PLACEMENT_KEYS]


def _full_key(key: str) -> str:
    return key if "." in key else field_owner(key)


def config_differences(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """The fields where two configs differ, as ``section.field: a -> b``; ``ignore``: fields left out."""

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict) or not node:
            return {prefix: node}
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    def shown(value: Any) -> Any:
        return '""' if value == "" else value  # an emptied setting (data.cache_dir "", no cache) is said, not blank

    left, right = flat(a.model_dump(mode="json")), flat(b.model_dump(mode="json"))
    return [
        f"{key.rstrip('.')}: {shown(left.get(key, '(unset)'))} -> {shown(right.get(key, '(unset)'))}"
        for key in sorted(left.keys() | right.keys())
        if left.get(key, "(unset)") != right.get(key, "(unset)")
        and key.rstrip(".") not in ignore
        # a mapping emptied (model.args {dropout: 0.5} -> {}): its entries say it, not "model.args: (unset) -> {}"
        and sorted(map(str, (left.get(key, "(unset)"), right.get(key, "(unset)")))) != ["(unset)", "{}"]
    ]


def with_placement(config: Config, overrides: list[str] | None = None, like: Config | None = None) -> Config:
    """``config`` run elsewhere: its ``PLACEMENT_KEYS`` taken from ``like`` and then set by ``overrides``
    (``key=value``, bare keys as ``--set`` takes them). Any other key is refused: it would change the run."""
    raw = config.model_dump(mode="json")
    if like is not None:
        source = like.model_dump(mode="json")
        for key in PLACEMENT_KEYS:
            section, name = key.split(".")
            raw[section][name] = source[section][name]
    for item in overrides or []:
        key, value = _split_override(item)
        if _full_key(key) == "train.epochs":  # the one setting a resume changes, with a flag of its own
            raise ConfigError(
                f"a resumed run's epoch budget is changed with --epochs, not --set: --epochs {value.strip()}"
            )
        meant = [] if _full_key(key) in _dotted_settings() or key.startswith("model.args.") else close_settings(key)
        # a mistyped setting is said as the typo it is, but pointed only to what a resume takes: epohcs to
        # --epochs, and ler (optim.lr) still to another run, not to a setting that --set would refuse next
        if "train.epochs" in meant:
            raise ConfigError(
                f"{key!r} is no setting (did you mean train.epochs?): a resumed run's epoch budget is changed with "
                f"--epochs, not --set: --epochs {value.strip()}"
            )
        if placed := [dotted for dotted in meant if dotted in PLACEMENT_KEYS]:
            raise ConfigError(
                f"{key!r} is no setting (did you mean {' or '.join(placed)}?): a resumed run takes new values only "
                f"for where it runs ({', '.join(PLACEMENT_KEYS)})"
            )
        if _full_key(key) not in PLACEMENT_KEYS:
            guess = f" (no setting; did you mean {' or '.join(meant)}?)" if meant else ""
            raise ConfigError(
                f"a resumed run takes new values only for where it runs ({', '.join(PLACEMENT_KEYS)}): {key!r}"
                f"{guess} would make it another run; start one with `python -m training train`"
            )
    return validate_config(apply_overrides(raw, list(overrides or [])), started=True)


class _Dumper(yaml.SafeDumper):
    """YAML written so that ``read_yaml`` and YAML 1.1's readers (``yaml.safe_load``) read it back as it was: text
    either would read as a number is quoted. SafeDumper alone quotes only what YAML 1.1 reads so, and writes a
    recipe named 0912, or a model argument '1e3', bare, which read_yaml reads as the numbers 912 and 1000.0."""


_Dumper.yaml_implicit_resolvers = {
    first: [
        *yaml.SafeDumper.yaml_implicit_resolvers.get(first, []),
        *(resolver for resolver in _Loader.yaml_implicit_resolvers.get(first, []) if resolver[0] in (_INT, _FLOAT)),
    ]
    for first in {*yaml.SafeDumper.yaml_implicit_resolvers, *_Loader.yaml_implicit_resolvers}
}


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that ``read_yaml`` reads back as it is (config.yaml, an ensemble run's record)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def save_config(config: Config, path: Path) -> None:
    write_text_atomic(path, dump_yaml(config.model_dump(mode="json")))
