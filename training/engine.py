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

from . import distributed
from .checkpoint import BEST_FILE, CONFIG_FILE, LAST_FILE, SUMMARY_FILE, claimed_run, clear_run, save_checkpoint
from .config import Config
from .config_yaml import save_config
from .data.loader import TensorLoader
from .data.mix import mixed_cross_entropy
from .data.targets import DistilledTargets, PrunedTargets, Targets, hard_labels, part_of
from .distill import distill_loss
from .inference import autocast, cross_entropy, predict_logits, topk_accuracy
from .models import count_parameters
from .models.whitening import whitening_layers
from .preflight import check_out_of_the_data
from .summary import finished_summary, patience_exhausted, run_summary, write_progress
from .trainer_state import TrainerState

log = logging.getLogger("training")


def evaluate(model: nn.Module, loader: TensorLoader, bf16: bool) -> dict[str, float | None]:
    logits, labels = predict_logits(model, loader, bf16)
    return {
        "val_loss": cross_entropy(logits, labels),
        "val_top1": topk_accuracy(logits, labels, 1),
        "val_top5": topk_accuracy(logits, labels, 5) if logits.shape[1] > 5 else None,  # else 100% by definition
    }


class Trainer(TrainerState):
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
