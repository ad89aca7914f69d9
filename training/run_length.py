"""Whether a run's settings fit the number of images it trains on: the refusals that need nothing but the
configuration and that number, made by the run itself (``engine.Trainer``) and, for every run of an ensemble
recipe or an ablation, before the first of them trains (``preflight.check_run_lengths``)."""

from __future__ import annotations

from .config import Config, ConfigError
from .data.loader import training_batches
from .lookahead import check_lookahead


def check_run_length(config: Config, images: int, world_size: int = 1) -> None:
    """Refuse (ConfigError) a run of ``config`` over ``images`` training images shared by ``world_size``
    processes that would take no whole batch an epoch, or whose lookahead period is longer than the run."""
    t = config.train
    steps = training_batches(images, t.batch_size, world_size, t.max_batches_per_epoch)
    if steps == 0:
        per_process = images // world_size
        share = f"the {per_process} training images per process" if world_size > 1 else f"the {images} training images"
        # no whole batch: every epoch would train on nothing, and the schedule would divide by its zero steps
        raise ConfigError(
            f"batch_size {t.batch_size} exceeds {share}: set batch_size to at most {per_process}"
            if per_process
            else f"the {images} training images leave none to each of {world_size} processes: train on fewer"
        )
    if t.lookahead_every:
        check_lookahead(t.lookahead_every, steps * t.epochs)
