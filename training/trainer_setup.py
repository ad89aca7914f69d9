"""A run's parts, built from its configuration before its first epoch: the processes, the data and what its
checkpoints record of it, the teacher's logits, the network, its loaders, optimizer and weight averages. Apart from
the loop (``engine.Trainer``), which only uses them, so that how a run is built and how it trains change apart."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import distributed
from .config import Config, ConfigError
from .data import ImageArrays
from .data.loader import TensorLoader
from .device import numerics_of, resolve_device
from .distill import load_or_compute, teacher_file
from .ema import WeightEMA
from .inference import resolve_bf16
from .lookahead import Lookahead
from .model_init import as_float, prepare_model
from .models import create_model
from .models.whitening import whitening_layers
from .optim import build_optimizer, build_scheduler
from .preflight import check_network_takes_its_input
from .run_data import channel_stats, check_same_data, check_trainable, load_data, recorded_data
from .run_length import check_resumed_run_length, check_run_length

log = logging.getLogger("training")

# Every epoch leaves out what does not fill a last whole batch; past this share of the images, said.
DROPPED_SHARE_WARNED = 0.10


class TrainerSetup:
    """A run's parts, ready for its first epoch; ``TrainerState`` saves and restores them, ``Trainer`` trains them."""

    # the network, or the DDP and torch.compile wrappers around it that the batches go through
    forward_model: nn.Module
    # the DDP wrapper under torchrun, whose no_sync a micro-batch runs in (torch.compile's wrapper has none)
    ddp: nn.parallel.DistributedDataParallel | None

    def __init__(
        self, config: Config, out_dir: str | Path, resuming: bool = False, started_on: dict[str, Any] | None = None
    ) -> None:
        """``resuming``: the run folder holds a run under way, which goes on with the teacher's logits it started
        with (``distill.load_or_compute``). ``started_on``: the meta of the checkpoint it goes on from, whose data
        the data read now must be (``restore`` checks it too, for a caller that gives none)."""
        self.config, self.out_dir = config, Path(out_dir)
        check_network_takes_its_input(config)
        # at weight 0 the teacher is unused (the config's warning says so): its pass over the images is minutes
        teacher_source = config.train.distill_from if config.train.distill_weight > 0 else None
        if teacher_source:
            teacher_file(teacher_source, self.out_dir)
        self._set_up_processes(resumed=started_on is not None)
        # before the teacher's pass over the images (minutes): a resume on data that changed, or a run too short
        # for its settings, is refused first; that pass would also replace the teacher's logits the run keeps
        train_data, val_data = self._read_data(started_on)
        self.bf16 = resolve_bf16(config.train.bf16, self.device)
        if started_on is not None:
            check_resumed_run_length(config, len(train_data), self.dist.world_size)
        else:
            check_run_length(config, len(train_data), self.dist.world_size)
        teacher = None
        if teacher_source:
            teacher = self._teacher_logits(teacher_source, train_data, resuming)
        self._build_model(train_data)
        self._build_loaders(train_data, val_data, teacher)
        self._build_optimizer(train_data)
        self._wrap_for_processes()
        self._build_averaging()
        if config.train.compile:
            # typed as returning a callable: given a Module, torch.compile returns an OptimizedModule, a Module
            self.forward_model = torch.compile(self.forward_model)  # type: ignore[assignment]
        self.history: list[dict[str, Any]]
        self.epoch, self.history, self.best = 0, [], {"val_top1": -1.0, "epoch": -1}
        self.bad_epochs = 0
        # the score that last reset the patience count: an improvement counts only above it by min_delta, and it
        # moves only then, so gains smaller than min_delta each still add up to one (Keras's EarlyStopping)
        self.patience_top1 = -1.0
        # Every rank's random state at the end of the last epoch; only rank 0 saves, so all ranks send theirs.
        self.rng_states: list[dict] | None = None

    def _set_up_processes(self, resumed: bool = False) -> None:
        """The device, the process group under torchrun, threads, the seed and the CUDA math settings.
        ``resumed``: the run goes on from a checkpoint, with the settings it started with."""
        config = self.config
        self.device = resolve_device(config.train.device)
        self.dist = distributed.setup(self.device.type)
        if config.train.prune_ratio and self.dist.enabled:
            # each process would see its own images' losses only, and draw its plans from a different mean
            raise ConfigError(
                "train.prune_ratio works in one process only: "
                + ("resume it in one process" if resumed else "set it to 0 to train on several")
            )
        self.device = distributed.process_device(self.device)
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        # what the settings resolved to (auto's device, torch's own thread count): a resume compares them, not the
        # settings, to tell whether the run goes on with the same arithmetic
        self.numerics = numerics_of(self.device, t.threads)
        torch.manual_seed(t.seed + self.dist.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    def _read_data(self, started_on: dict[str, Any] | None) -> tuple[ImageArrays, ImageArrays | None]:
        """The training and validation splits, refused where no classifier can learn from them, and the meta the
        run's checkpoints record of them and of the network. ``started_on``: the meta of the checkpoint a resume
        goes on from, whose data they must be."""
        config = self.config
        train_data, val_data = load_data(config, self.dist.world_size, started_on, self.out_dir)
        self.classes = train_data.classes
        mean, std = channel_stats(train_data.images)
        self.meta: dict[str, Any] = {
            "arch": config.model.name,
            "model_args": dict(config.model.args),
            "num_classes": len(self.classes),
            "classes": self.classes,
            "mean": mean,
            "std": std,
            "input_size": int(train_data.images.shape[1]),  # what it trained on, which export's graph takes
            **recorded_data(config),
            "recipe": config.recipe,
            # the images and their split, which a resume from another data.root must find again: the mean and
            # std above barely move when a few images change, and one image more reshuffles the split
            "data_fingerprint": ":".join(part.fingerprint() for part in (train_data, val_data) if part is not None),
        }
        if started_on is not None:
            check_same_data(self.out_dir, started_on, self.meta)
        check_trainable(train_data, val_data, config.data.root)
        return train_data, val_data

    def _teacher_logits(self, source: str, train_data: ImageArrays, resuming: bool) -> torch.Tensor:
        """The logits of the teacher ``source`` (``train.distill_from``) for the training images; the meta records
        the teacher."""
        t = self.config.train
        # rank 0 runs the teacher and keeps its logits in the run folder; the other ranks read them back
        # after it instead of each repeating the pass (minutes). A rank on another node, which does not
        # see that folder, computes them itself. A pass over a large dataset can outlast the process group's
        # timeout, so these waits have their own bound.
        distributed.prepare_one_off_waits(self.dist)
        if not self.dist.is_main:
            distributed.wait_out_one_off_work(self.dist)
        teacher, self.meta["teacher"] = load_or_compute(
            source,
            self.out_dir,
            self.meta,
            train_data.images,
            batch_size=t.eval_batch_size,
            device=self.device,
            bf16=self.bf16,
            mirror=self.config.augment.flip,
            save=self.dist.is_main,
            resuming=resuming,
        )
        if self.dist.is_main:
            distributed.wait_out_one_off_work(self.dist)
        # and rank 0 for a rank on another node, whose own pass DDP's first collective would wait for
        distributed.wait_out_one_off_work(self.dist)
        return teacher

    def _build_model(self, train_data: ImageArrays) -> None:
        """The network, normalising by the training split's statistics and initialised from its images."""
        config = self.config
        mean, std = self.meta["mean"], self.meta["std"]
        self.model = create_model(config.model.name, len(self.classes), mean, std, **config.model.args)
        prepare_model(self.model, config, train_data.images)
        self.model = self.model.to(self.device)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def _build_loaders(
        self, train_data: ImageArrays, val_data: ImageArrays | None, teacher: torch.Tensor | None
    ) -> None:
        """Each process's training batches, and the validation batches, which rank 0 alone evaluates."""
        config, t = self.config, self.config.train
        self.train_loader = TensorLoader(
            train_data,
            t.batch_size,
            self.device,
            train=True,
            augment=config.augment.params(),
            mix=config.augment.mix(),
            seed=t.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            channels_last=t.channels_last,
            max_batches=t.max_batches_per_epoch,
            teacher=teacher,
            prune=t.prune_params(),
        )
        per_process = len(train_data) // self.dist.world_size
        seen = len(self.train_loader) * t.batch_size
        if not t.max_batches_per_epoch and per_process - seen > DROPPED_SHARE_WARNED * per_process:
            log.warning(
                "each epoch trains on %d of the %d training images%s (whole batches of %d; the rest, other images "
                "each epoch, wait for the next): a batch_size dividing %d more evenly would use them",
                seen,
                per_process,
                " per process" if self.dist.world_size > 1 else "",
                t.batch_size,
                per_process,
            )
        self.val_loader = (
            TensorLoader(val_data, t.eval_batch_size, self.device, channels_last=t.channels_last)
            if val_data is not None and self.dist.is_main
            else None
        )

    def _build_optimizer(self, train_data: ImageArrays) -> None:
        """The optimizer (Muon traces which filters feed a normalisation layer on two images) and its per-step
        schedule."""
        example = as_float(train_data.images[:2]).to(self.device)
        self.optimizer = build_optimizer(self.model, self.config.optim, example)
        self.scheduler = build_scheduler(
            self.optimizer, len(self.train_loader), self.config.train.epochs, self.config.schedule
        )

    def _wrap_for_processes(self) -> None:
        """The module the batches go through: the network itself, or its DDP wrapper under torchrun."""
        t = self.config.train
        self.forward_model, self.ddp = self.model, None
        if self.dist.enabled:
            self.forward_model = self.ddp = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # DDP expects a gradient for every parameter that trained when it was built; a whitening bias
                # that freezes mid-run would leave it waiting for one, unless it looks for unused parameters.
                find_unused_parameters=t.whiten_bias_epochs is not None and bool(whitening_layers(self.model)),
            )

    def _build_averaging(self) -> None:
        """The weights' averages: EMA, and lookahead's slow copy."""
        t = self.config.train
        # After DDP's wrap, which gives every rank rank 0's weights: copies taken before it hold each rank's own
        # initial weights, and the lookahead steps would pull the ranks apart.
        self.ema = WeightEMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.lookahead = (
            Lookahead(self.model, t.lookahead_every, t.lookahead_decay, len(self.train_loader) * t.epochs)
            if t.lookahead_every
            else None
        )
