"""What a run's checkpoint holds of it, and how a resume puts that back: apart from the setup and the loop, so the
keys a run writes and those a resume reads sit side by side (a checkpoint written by one version is read by the
next)."""

from __future__ import annotations

import logging
from typing import Any

import torch

from inference.messages import exception_summary

from . import distributed
from .checkpoint import LAST_FILE, CheckpointError
from .run_data import check_same_data
from .trainer_setup import TrainerSetup

log = logging.getLogger("training")


class TrainerState(TrainerSetup):
    """A run's parts as its checkpoint holds them (``state``), and put back from one (``restore``)."""

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
