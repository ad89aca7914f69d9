"""Whether a run's settings fit the number of images it trains on: the refusals that need nothing but the
configuration and that number, made by the run itself (``engine.Trainer``) and, for every run of an ensemble
recipe or an ablation, before the first of them trains (``preflight.check_run_lengths``); and the one refusal
that says every such problem found at once (``refuse``)."""

from __future__ import annotations

from collections.abc import Sequence

from inference.errors import UsageError
from inference.messages import counted

from .config import Config, ConfigError
from .data import DatasetError
from .data.loader import training_batches
from .lookahead import LookaheadError, check_lookahead


class SettingsRefused(ConfigError):
    """Several problems found before a run trains, each on a line of its own under one heading: fixed one at a
    time, each start would wait for the data to load again only to meet the next."""

    def __init__(self, problems: Sequence[UsageError]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} problems found before training; fix them all, then start again:"
            + "".join(f"\n  - {problem}" for problem in self.problems)
        )


def refuse(problems: Sequence[UsageError]) -> None:
    """Raise the problems found, if any: one as it is (its type and words), several as one ``SettingsRefused``
    (whose own problems, from an earlier check, are listed among the others)."""
    flat = [
        p for problem in problems for p in (problem.problems if isinstance(problem, SettingsRefused) else [problem])
    ]
    if len(flat) == 1:
        raise flat[0]
    if flat:
        raise SettingsRefused(flat)


def named(name: str, problem: UsageError) -> UsageError:
    """``problem`` said as ``name``'s (an ensemble member, an ablation variant), of the same kind."""
    return (DatasetError if isinstance(problem, DatasetError) else ConfigError)(f"{name}: {problem}")


def run_length_problems(config: Config, images: int, world_size: int = 1, split: str = "") -> list[ConfigError]:
    """The problems of a run of ``config`` over ``images`` training images shared by ``world_size`` processes: no
    whole batch an epoch, a lookahead period longer than the run. ``split``: how that number comes about where
    it is not the split the run's settings make (``data.val_size 3 would leave``), said after it."""
    t = config.train
    steps = training_batches(images, t.batch_size, world_size, t.max_batches_per_epoch)
    problems: list[ConfigError] = []
    if steps == 0:
        per_process = images // world_size
        share = (
            f"the {counted(per_process, 'training image')} per process"
            if world_size > 1
            else f"the {counted(images, 'training image')}"
        )
        share += f" {split}" if split else ""
        # no whole batch: every epoch would train on nothing, and the schedule would divide by its zero steps
        if not per_process:
            # the processes that each take a whole batch, so that the next start is not refused for the batch
            fitting = images // t.batch_size
            if fitting > 1:
                remedy = f"train on at most {fitting} processes"
            elif fitting:
                remedy = "train in one process"
            elif t.micro_batch_size:
                remedy = f"train in one process; {batch_size_advice(images, t.micro_batch_size)}"
            else:
                remedy = f"train in one process with batch_size at most {images}"
            leave = f"the {counted(images, 'training image')} {'leaves' if images == 1 else 'leave'}"
            return [ConfigError(f"{leave} none to each of {world_size} processes: {remedy}")]
        problems.append(
            ConfigError(
                f"batch_size {t.batch_size} exceeds {share}: {batch_size_advice(per_process, t.micro_batch_size)}"
            )
        )
        # measured with the batch_size suggested, so that the values the lines suggest work together
        steps = training_batches(images, per_process, world_size, t.max_batches_per_epoch)
    if t.lookahead_every:
        try:
            check_lookahead(t.lookahead_every, steps * t.epochs)
        except LookaheadError as exc:
            problems.append(exc)
    return problems


def batch_size_advice(most: int, micro_batch_size: int | None) -> str:
    """What to set batch_size to where it may be at most ``most``: with a micro-batch size, a batch it divides, or
    none, as ``config_problems`` refuses any other and the next start would meet that refusal instead."""
    if not micro_batch_size:
        return f"set batch_size to at most {most}"
    if micro_batch_size > most:
        return (
            f"set batch_size to at most {most} and micro_batch_size=null (one forward per step), as "
            f"micro_batch_size {micro_batch_size} exceeds them too"
        )
    divided = most // micro_batch_size * micro_batch_size
    return (
        f"set batch_size to {divided} (micro_batch_size {micro_batch_size} divides it), or to at most {most} with "
        "micro_batch_size=null (one forward per step)"
    )


def check_run_length(config: Config, images: int, world_size: int = 1) -> None:
    """Refuse (ConfigError) a run of ``config`` over ``images`` training images shared by ``world_size``
    processes that would take no whole batch an epoch, or whose lookahead period is longer than the run: each
    problem found, at once."""
    refuse(run_length_problems(config, images, world_size))


def check_resumed_run_length(config: Config, images: int, world_size: int = 1) -> None:
    """Refuse a resumed run of ``config`` over ``images`` training images shared by ``world_size`` processes that
    would take no whole batch an epoch, or whose lookahead period is longer than the run. On the data and settings
    it started with it took them, so what a resume changes made it too short (more processes, fewer --epochs),
    and that is what the refusal says to change: a resume keeps batch_size and lookahead_every. The number of
    processes or epochs it suggests passes both checks, so that the next start is not refused by the other."""
    t = config.train

    def steps(processes: int) -> int:
        return training_batches(images, t.batch_size, processes, t.max_batches_per_epoch)

    def fits(processes: int) -> bool:
        return steps(processes) > 0 and (not t.lookahead_every or steps(processes) * t.epochs >= t.lookahead_every)

    if fits(world_size):  # what run_length_problems checks: none of them
        return

    def at_most(processes: int) -> str:
        return f"on at most {processes} process{'es' if processes > 1 else ''}"

    def epochs_for(processes: int) -> int:
        return -(-t.lookahead_every // steps(processes))

    fewer = next((n for n in range(world_size - 1, 0, -1) if fits(n)), None)
    on = f"{world_size} processes" if world_size > 1 else "1 process"
    if steps(world_size):  # whole batches, too few steps for the lookahead period
        remedy = f"resume it with --epochs {epochs_for(world_size)} or more" + (
            f", or {at_most(fewer)}" if fewer else ""
        )
        raise ConfigError(
            f"train.lookahead_every {t.lookahead_every} is more than the "
            f"{counted(steps(world_size) * t.epochs, 'optimizer step')} of its "
            f"{counted(t.epochs, 'epoch')} on {on}: the run would end on its initial weights; {remedy}"
        )
    batched = next((n for n in range(world_size - 1, 0, -1) if steps(n)), None)
    if batched is None:  # not one whole batch in one process: only the data it started with would do
        remedy = "resume it on the data it started with"
    elif batched == fewer:
        remedy = f"resume it {at_most(fewer)}"
    else:  # the processes that take a whole batch take too few steps for the lookahead period
        remedy = f"resume it {at_most(batched)} with --epochs {epochs_for(batched)} or more" + (
            f", or {at_most(fewer)}" if fewer else ""
        )
    raise ConfigError(
        f"batch_size {t.batch_size} exceeds the {counted(images // world_size, 'training image')} per "
        f"process on {on}: {remedy}"
    )
