"""The training loop: one run folder holds the config, history, curves and best/last checkpoints."""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from inference.files import write_text_atomic
from inference.messages import exception_summary

from . import distributed
from .checkpoint import (
    BEST_FILE,
    CONFIG_FILE,
    LAST_FILE,
    SUMMARY_FILE,
    CheckpointError,
    claimed_run,
    clear_run,
    save_checkpoint,
)
from .config import Config, ConfigError, save_config
from .data import ImageArrays
from .data.loader import TensorLoader
from .data.mix import mixed_cross_entropy
from .data.targets import DistilledTargets, PrunedTargets, Targets, hard_labels, part_of
from .device import numerics_of, resolve_device
from .distill import distill_loss, load_or_compute, teacher_file
from .ema import WeightEMA
from .inference import autocast, cross_entropy, predict_logits, resolve_bf16, topk_accuracy
from .lookahead import Lookahead
from .model_init import as_float, prepare_model
from .models import count_parameters, create_model
from .models.whitening import whitening_layers
from .optim import build_optimizer, build_scheduler
from .preflight import check_network_takes_its_input, check_out_of_the_data
from .run_data import channel_stats, check_same_data, check_trainable, load_data, recorded_data
from .run_length import check_resumed_run_length, check_run_length
from .summary import finished_summary, patience_exhausted, run_summary, write_progress

log = logging.getLogger("training")

# Every epoch leaves out what does not fill a last whole batch; past this share of the images, said.
DROPPED_SHARE_WARNED = 0.10


def evaluate(model: nn.Module, loader: TensorLoader, bf16: bool) -> dict[str, float | None]:
    logits, labels = predict_logits(model, loader, bf16)
    return {
        "val_loss": cross_entropy(logits, labels),
        "val_top1": topk_accuracy(logits, labels, 1),
        "val_top5": topk_accuracy(logits, labels, 5) if logits.shape[1] > 5 else None,  # else 100% by definition
    }


class Trainer:
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

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_n_averaged": self.ema.updates if self.ema else 0,
            "lookahead": self.lookahead.state_dict() if self.lookahead else None,
            "pruning": self.train_loader.pruning.state_dict() if self.train_loader.pruning else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "patience_top1": self.patience_top1,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # Gathered by every rank at the end of each epoch; only the main rank saves, so none is gathered here.
            "rng_ranks": self.rng_states or [distributed.rng_state()],
            "config": self.config.model_dump(mode="json"),
            "meta": self.meta,
            "numerics": self.numerics,
            "torch_version": str(torch.__version__),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        check_same_data(self.out_dir, ckpt.get("meta") or {}, self.meta)
        try:
            self._load_states(ckpt)
        except torch.cuda.OutOfMemoryError:  # the device's limit, not the file's fault
            raise
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            # its configuration builds the network and optimizer: a state that does not fit them was written by
            # another version of the network's code, or copied in from another run
            said = exception_summary(exc, after="ImageClassifier:", limit=160)
            raise CheckpointError(
                f"{self.out_dir / LAST_FILE} does not fit the {self.config.model.name} network and "
                f"{self.config.optim.name} optimizer its configuration builds ({said}): it cannot be continued; "
                "start a new run in another folder"
            ) from exc
        self.epoch, self.history, self.best = ckpt["epoch"], list(ckpt["history"]), dict(ckpt["best"])
        self.bad_epochs = ckpt.get("bad_epochs", 0)
        # a checkpoint written before the reference was kept: best's score was the reference then
        self.patience_top1 = ckpt.get("patience_top1", self.best["val_top1"])
        saved_by = len(ckpt.get("rng_ranks") or [])
        if saved_by and saved_by != self.dist.world_size:
            self._continue_schedule_at(self.epoch)
        self._restore_rng(ckpt)

    def _continue_schedule_at(self, epoch: int) -> None:
        """A run resumed on another number of processes takes another number of steps per epoch: its schedule,
        counted in steps, goes on from the same epoch, not from the same count of steps, which lies twice as far
        (or half as far) into the run."""
        step = epoch * len(self.train_loader)
        self.scheduler.last_epoch = step
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(step)

    def _load_states(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        if self.ema and ckpt.get("ema"):
            self.ema.module.load_state_dict(ckpt["ema"])
            self.ema.restore_updates(ckpt["ema_n_averaged"])
        if self.lookahead and ckpt.get("lookahead"):
            self.lookahead.load_state_dict(ckpt["lookahead"])
        if self.train_loader.pruning and ckpt.get("pruning"):
            self.train_loader.pruning.load_state_dict(ckpt["pruning"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])

    def _restore_rng(self, ckpt: dict[str, Any]) -> None:
        ranks = ckpt.get("rng_ranks") or []
        if len(ranks) == self.dist.world_size:
            own = ranks[self.dist.rank]
            torch.set_rng_state(own["cpu"])
            if own.get("cuda") is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state(own["cuda"])
            return
        if ranks:
            log.warning(
                "%s was saved by %d processes and resumes on %d: the schedule goes on from the same epoch, but the "
                "batches (their size and images) and dropout's draws (every rank continues rank 0's random stream) "
                "differ from the uninterrupted run's",
                self.out_dir,
                len(ranks),
                self.dist.world_size,
            )
        torch.set_rng_state(ckpt["rng_cpu"])
        if ckpt.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng_cuda"])

    # -- loop ---------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        t, loader = self.config.train, self.train_loader
        loader.set_epoch(self.epoch)
        if t.whiten_bias_epochs is not None:
            for layer in whitening_layers(self.model):
                layer.bias.requires_grad_(self.epoch < t.whiten_bias_epochs)
        self.forward_model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen, start = 0, time.perf_counter()
        bar = tqdm(
            loader, desc=f"epoch {self.epoch + 1}/{t.epochs}", unit="batch", leave=False, disable=not self.dist.is_main
        )
        with bar:  # closed on Ctrl-C too, so the message that follows starts on a line of its own
            for x, y in bar:
                self.optimizer.zero_grad(set_to_none=True)
                # the backward pass exchanges gradients with the other processes: one gone is said in a line
                with distributed.peers_watched(self.dist, peer_errors_only=True):
                    logits, loss = self._forward_backward(x, y)
                self.optimizer.step()
                self.scheduler.step()
                if self.lookahead:
                    self.lookahead.step(self.model, self.scheduler.last_epoch)
                if self.ema:
                    self.ema.update_parameters(self.model)
                hard = hard_labels(y)
                # Accumulate on-device: a .item() per step would sync the GPU every batch.
                loss_sum += loss.detach() * len(hard)
                correct += (logits.argmax(1) == hard).sum()
                seen += len(hard)
                if bar.n % 10 == 0:
                    bar.set_postfix(img_s=f"{seen * self.dist.world_size / (time.perf_counter() - start):.0f}")
        if self.lookahead and self.epoch + 1 == t.epochs:
            self.lookahead.finish(self.model)
        # every rank's images, not rank 0's alone: the history and the best epoch of a run without a validation
        # split are read from these; and every rank stops together on a loss that is not finite
        loss_total, correct_total, seen_total = distributed.summed([loss_sum.item(), correct.item(), seen], self.dist)
        if not math.isfinite(loss_total):
            raise FloatingPointError(f"training loss is not finite at epoch {self.epoch + 1}: lower the learning rate")
        elapsed = time.perf_counter() - start
        record = {
            "train_loss": loss_total / seen_total,
            "train_acc": correct_total / seen_total,
            "train_time_s": elapsed,
            "train_images_per_s": seen_total / elapsed,
            "lr": self.scheduler.get_last_lr()[0],
        }
        if loader.pruning is not None:
            # the share of the epoch's batches' images it trained on
            record["train_kept"] = seen_total / (len(loader) * t.batch_size * self.dist.world_size)
        return record

    def _forward_backward(self, x: torch.Tensor, y: Targets) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients of the batch's mean loss, in micro-batches when ``micro_batch_size`` is set: the same
        update as one big batch (BatchNorm statistics aside, which then come from each micro-batch). A pruned
        batch's loss is its images' weighted sum over the batch's size before pruning, and each image's loss
        is recorded for the next epochs' pruning."""
        size = self.config.train.micro_batch_size or len(x)
        logits, loss_sum = [], torch.zeros((), device=x.device)
        starts = range(0, len(x), size)
        for begin in starts:
            part = slice(begin, begin + size)
            target = part_of(y, part)
            with self._exchange_unless(begin != starts[-1]):
                with autocast(self.device, self.bf16):
                    out = self.forward_model(x[part])
                    if isinstance(target, PrunedTargets):
                        losses = self._loss(out.float(), target.target, reduction="none")
                        self.train_loader.record_losses(target.index, losses.detach())
                        loss = (losses * target.weight).sum() / target.full
                    else:
                        loss = self._loss(out.float(), target) * (len(out) / len(x))
                loss.backward()
            logits.append(out.detach())
            loss_sum += loss.detach()
        return torch.cat(logits), loss_sum

    def _exchange_unless(self, accumulating: bool) -> AbstractContextManager:
        """Where the forward and backward passes of a micro-batch run: under DDP, a micro-batch before the last
        keeps its gradients to itself (``no_sync``), and the last one's backward exchanges their sum, once per step
        instead of once per micro-batch. Every rank makes that one exchange per step (and DDP's one broadcast of
        rank 0's BatchNorm statistics, at the step's first forward) however many micro-batches it runs, so the
        ranks' collectives keep in step even where their batches split differently."""
        return self.ddp.no_sync() if self.ddp is not None and accumulating else nullcontext()

    def _loss(self, logits: torch.Tensor, target: Targets, reduction: str = "mean") -> torch.Tensor:
        t = self.config.train
        if isinstance(target, DistilledTargets):
            return distill_loss(
                logits, target, t.label_smoothing, t.distill_weight, t.distill_temperature, reduction=reduction
            )
        assert not isinstance(target, PrunedTargets)
        return mixed_cross_entropy(logits, target, t.label_smoothing, reduction=reduction)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema else self.model

    def fit(self) -> dict[str, Any]:
        t = self.config.train
        main = self.dist.is_main
        finished = finished_summary(self.out_dir, self.config, self._standing(), self.val_loader is not None, main)
        if finished is not None:
            self._leave_process_group()
            return finished
        stop = False
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.epoch == 0:  # a new run (--force over an old one): none of the old one's files may remain
                clear_run(self.out_dir)
            else:  # a finished run given more epochs: its summary would say it finished until it has again
                (self.out_dir / SUMMARY_FILE).unlink(missing_ok=True)
            save_config(self.config, self.out_dir / CONFIG_FILE)
            log.info(
                "%s: %s parameters, %d training images, device %s",
                self.config.model.name,
                f"{count_parameters(self.model):,}",
                len(self.train_loader.labels),
                self.device,
            )
        epochs_bar = tqdm(total=t.epochs, initial=self.epoch, desc="training", unit="epoch", disable=not main)
        with epochs_bar:
            while self.epoch < t.epochs and not stop:
                record: dict[str, float | None] = {"epoch": self.epoch + 1, **self.train_epoch()}
                self.epoch += 1
                self.rng_states = distributed.gather_rng_states(self.dist)
                if main:
                    record.update(self._evaluate())
                    stop = self._end_epoch(record)
                    epochs_bar.update(1)
                    epochs_bar.set_postfix(self._progress(record))
                stop = distributed.broadcast_flag(stop, self.dist)
        if stop and self.lookahead and self.epoch < t.epochs:
            self._finish_early()
        distributed.barrier(self.dist)
        summary = self._summary(stop)
        if main:
            write_text_atomic(self.out_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
        self._leave_process_group()
        return summary

    def _leave_process_group(self) -> None:
        """The DDP wrapper goes before the process group: it holds the group, whose gloo threads would otherwise be
        left to the interpreter's exit, where a rank once aborted ("terminate called without an active
        exception")."""
        if self.dist.enabled:
            self.forward_model, self.ddp = self.model, None
            gc.collect()
        distributed.cleanup(self.dist)

    def _progress(self, record: dict[str, Any]) -> dict[str, str]:
        if self.val_loader is None:
            return {"train_acc": f"{record['train_acc']:.4f}", "best": f"{self.best['val_top1']:.4f}"}
        return {"val_top1": f"{record['val_top1']:.4f}", "best": f"{self.best['val_top1']:.4f}"}

    def _standing(self) -> dict[str, Any]:
        """Where the run stands, in its checkpoint's keys (``run_summary``, ``finished_summary``)."""
        return {"epoch": self.epoch, "history": self.history, "best": self.best, "bad_epochs": self.bad_epochs}

    def _summary(self, stopped_early: bool) -> dict[str, Any]:
        return run_summary(self.out_dir, self._standing(), stopped_early, self.val_loader is not None)

    def _evaluate(self) -> dict[str, float | None]:
        if self.val_loader is None:
            return {}
        start = time.perf_counter()
        return {**evaluate(self.eval_model, self.val_loader, self.bf16), "eval_time_s": time.perf_counter() - start}

    def _patience_exhausted(self) -> bool:
        return patience_exhausted(self.config, self.bad_epochs)

    def _improves(self, score: float) -> bool:
        """Whether ``score`` makes its epoch the best (best.pt): any higher score does, whatever min_delta."""
        return score > self.best["val_top1"]

    def _resets_patience(self, score: float) -> bool:
        return score > self.patience_top1 + self.config.train.early_stop_min_delta

    def _finish_early(self) -> None:
        """Lookahead's result is its slow weights, which the last epoch only takes when the run goes the
        whole way: take them now, and record what they score as the last epoch's (last.pt, and best.pt if
        they beat it). The patience count stays exhausted, so a resume still finds the run finished."""
        assert self.lookahead is not None  # only a run with lookahead finishes early this way
        self.lookahead.finish(self.model)
        if not self.dist.is_main:
            return
        record = {**self.history[-1], **self._evaluate()}
        self.history[-1] = record
        improved = self.val_loader is not None and self._improves(record["val_top1"])
        if improved:
            self.best = self._best_entry(record["val_top1"], record)
        self._save(improved)

    def _best_entry(self, score: float, record: dict[str, Any]) -> dict[str, Any]:
        return {
            "val_top1": score,
            "epoch": record["epoch"],
            "val_top5": record.get("val_top5"),
            "val_loss": record.get("val_loss"),
        }

    def _end_epoch(self, record: dict[str, Any]) -> bool:
        self.history.append(record)
        score = record.get("val_top1", record["train_acc"])
        first = self.best["epoch"] < 0
        new_best = self._improves(score) or first
        if new_best:
            self.best = self._best_entry(score, record)
        if self._resets_patience(score) or first:
            self.patience_top1, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        stop = self._patience_exhausted()
        t = self.config.train
        # A stop with lookahead's finish still to come is saved by _finish_early: saved here, a run stopped before
        # that would resume as finished (its patience spent) on weights that never took their slow copy.
        finishing = stop and self.lookahead is not None and self.epoch < t.epochs
        due = not finishing and (new_best or stop or self.epoch >= t.epochs or self.epoch % t.checkpoint_every == 0)
        if due:
            self._save(new_best)
        else:  # what a resume restores lives in last.pt; history.json only shows the epochs as they pass
            self._write_history()
        return stop

    def _write_history(self) -> None:
        write_text_atomic(self.out_dir / "history.json", json.dumps(self.history, indent=2))

    def _save(self, new_best: bool) -> None:
        state = self.state()
        # best.pt first: last.pt is where a resume starts, so once it is written the epoch counts as done and
        # a best.pt not yet written would never be.
        if new_best:
            save_checkpoint(state, self.out_dir / BEST_FILE)
        save_checkpoint(state, self.out_dir / LAST_FILE)
        write_progress(self.out_dir, self.history, state["config"])


def train(config: Config, out_dir: str | Path) -> dict[str, Any]:
    check_out_of_the_data(config, Path(out_dir))
    with claimed_run(out_dir):
        return Trainer(config, out_dir).fit()
