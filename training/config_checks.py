"""Settings that each pass validation but together make part of a run pointless: refused as a Config validates
(``config_problems``), or warned of as a recipe is built (``unused_settings``). Apart from the sections' fields,
since each check reads the whole configuration.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from inference.messages import and_listed, counted

if TYPE_CHECKING:  # for types only: training.config imports this module, whose config_problems validate a Config
    from .config import Config, OptimConfig, ScheduleConfig


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
