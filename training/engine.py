"""The training loop: one run folder holds the config, history, curves and best/last checkpoints."""

from __future__ import annotations

import gc
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from inference.files import write_text_atomic
from inference.messages import exception_summary

from . import distributed
from .checkpoint import (
    BEST_FILE,
    CONFIG_FILE,
    EDITED_CONFIG,
    LAST_FILE,
    SUMMARY_FILE,
    CheckpointError,
    claimed_run,
    clear_run,
    load_training_state,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import (
    NUMERICS_KEYS,
    PLACEMENT_KEYS,
    Config,
    ConfigError,
    build_config,
    config_differences,
    did_you_mean,
    save_config,
    validate_config,
    with_placement,
)
from .data import DatasetError, ImageArrays, load_split, load_train_val
from .data.augment import to_unit
from .data.loader import TensorLoader
from .data.mix import mixed_cross_entropy
from .data.targets import DistilledTargets, PrunedTargets, Targets, hard_labels, part_of
from .distill import distill_loss, load_or_compute, teacher_file
from .inference import autocast, cross_entropy, predict_logits, resolve_bf16, topk_accuracy
from .lookahead import Lookahead
from .models import (
    ImageClassifier,
    UnknownArgument,
    argument_error,
    count_parameters,
    create_model,
    size_refusal,
)
from .models.whitening import dirac_init_, whitening_layers
from .muon import filters_by_normalisation
from .optim import build_optimizer, build_scheduler
from .plots import CurveInfo, plot_training_curves
from .run_length import check_run_length

log = logging.getLogger("training")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r}: this project trains and evaluates on cpu or cuda (or auto)")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: this machine has no usable CUDA GPU; use cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device


# A channel that (nearly) never changes carries nothing to normalise: dividing by its std would only blow up
# the rounding noise, or divide by zero, and the run would diverge at any learning rate.
MIN_CHANNEL_STD = 1e-3


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, on the [0, 1] scale (std 1 for a constant channel)."""
    flat = images.reshape(-1, 3).astype(np.float64) / 255.0
    std = [s if s >= MIN_CHANNEL_STD else 1.0 for s in flat.std(0).round(4).tolist()]
    return flat.mean(0).round(4).tolist(), std


def load_data(config: Config) -> tuple[ImageArrays, ImageArrays | None]:
    d = config.data
    if d.val_size == 0:
        log.warning(
            "data.val_size 0: no validation split, so the best epoch is ranked by training accuracy and the run "
            "cannot be exported (python -m export checks the graph against the checkpoint on held-out images)"
        )
        return load_split(d.dataset, d.root, "all", cache_dir=d.cache_dir, image_size=d.image_size, fit=d.fit), None
    return load_train_val(
        d.dataset, d.root, d.val_size, d.split_seed, cache_dir=d.cache_dir, image_size=d.image_size, fit=d.fit
    )


# What a run's checkpoint records of its data that the same data gives again (``Trainer._check_same_data``).
DATA_KEYS = ("classes", "mean", "std", "input_size", "data_fingerprint")


def check_trainable(train: ImageArrays, val: ImageArrays | None, root: str) -> None:
    """Refuse data no classifier can learn from; warn where the validation split takes most of it."""
    if len(train.classes) < 2:
        raise DatasetError(
            f"{root} holds {len(train.classes)} class ({', '.join(train.classes)}): a classifier needs images in at "
            "least two class folders"
        )
    if val is not None and len(val) > len(train):
        log.warning(
            "the validation split (val_size %d) is larger than what is left to train on (%d images): lower "
            "data.val_size for a dataset of this size",
            len(val),
            len(train),
        )


# Airbench fits its whitening on 5,000 training images: the 2x2-patch covariance (12 x 12) is settled
# long before that, and all 45,000 would hold about 2 GB of patches.
WHITENING_IMAGES = 5000


def as_float(images: np.ndarray) -> torch.Tensor:
    """uint8 images [N, H, W, C] as the model takes them: float [N, C, H, W] in 0-1."""
    return to_unit(torch.from_numpy(images).permute(0, 3, 1, 2))


def whitening_sample(images: np.ndarray, how: str, seed: int) -> np.ndarray:
    """The images a whitening layer is fitted on (``TrainConfig.whiten_sample``). Its own generator, so the
    sample takes nothing from the random streams that initialise and train the model."""
    if how == "first" or len(images) <= WHITENING_IMAGES:
        return images[:WHITENING_IMAGES]
    chosen = np.random.default_rng(seed).choice(len(images), WHITENING_IMAGES, replace=False)
    return images[np.sort(chosen)]


@torch.no_grad()
def prepare_model(model: ImageClassifier, config: Config, train_images: np.ndarray) -> None:
    """The data- and option-dependent initialisation that ``create_model`` cannot do: fit patch-whitening
    layers on the training split (as the model will see it: normalised), Dirac init, BatchNorm momentum."""
    layers = whitening_layers(model)
    if layers:
        sample = as_float(whitening_sample(train_images, config.train.whiten_sample, config.train.seed))
        for layer in layers:
            layer.fit(model.normalize(sample))
    if config.model.dirac_init:
        dirac_init_(model.backbone)
    if config.model.bn_momentum is not None:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = config.model.bn_momentum


# Every epoch leaves out what does not fill a last whole batch; past this share of the images, said.
DROPPED_SHARE_WARNED = 0.10


def evaluate(model: nn.Module, loader: TensorLoader, bf16: bool) -> dict[str, float | None]:
    logits, labels = predict_logits(model, loader, bf16)
    return {
        "val_loss": cross_entropy(logits, labels),
        "val_top1": topk_accuracy(logits, labels, 1),
        "val_top5": topk_accuracy(logits, labels, 5) if logits.shape[1] > 5 else None,  # else 100% by definition
    }


def buildable_config(recipe: str, overrides: list[str], what: str) -> Config:
    """``build_config``'s configuration, its network built and given one image (a --set key that is no field
    becomes a model argument, which only building the network refuses); a refusal names ``what`` (an ensemble
    member, an ablation variant), so that it comes before anything trains and says which."""
    try:
        config = build_config(recipe, overrides, what)
        check_network_takes_its_input(config)
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from exc
    return config


def check_run_lengths(configs: list[Config], names: list[str]) -> None:
    """The refusals of each run that need its training images (data no classifier can learn from, a batch larger
    than the split, a lookahead period longer than the run; ``run_length``), made before the first of several
    runs trains rather than after the ones before it. Each distinct data setting is read once; a folder
    dataset's cache then serves the run's own read. One process: ensembles and ablations refuse torchrun."""
    read: dict[str, int] = {}
    for config, name in zip(configs, names):
        key = json.dumps(config.data.model_dump(mode="json"), sort_keys=True)
        try:
            if key not in read:
                train_data, val_data = load_data(config)
                check_trainable(train_data, val_data, config.data.root)
                read[key] = len(train_data)
            check_run_length(config, read[key])
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
        except DatasetError as exc:
            raise DatasetError(f"{name}: {exc}") from None


def check_network_takes_its_input(config: Config) -> None:
    """Build the network once and pass it a blank image of ``data.image_size``, before any data is read: a
    network that cannot take that size (a ViT built for another, a stack of poolings too deep for it) is refused
    now, naming the setting, rather than at the first batch after the data has loaded."""
    name, args, size = config.model.name, config.model.args, config.data.image_size
    try:
        model = create_model(name, 2, **args).eval()
    except UnknownArgument as exc:
        # a bare --set key that is no setting lands here: a mistyped setting (epohcs) as much as a model argument
        raise ConfigError(f"{exc}{did_you_mean(exc.unknown, exc.taken)}") from exc
    except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
        # a value the network or torch refuses says nothing of the setting it came from (width 8.5 reaches torch
        # as "out_channels must be divisible by groups"): name the model and its arguments with it
        said = exc if str(exc) else Exception(f"a bare {type(exc).__name__} in its constructor")
        raise ConfigError(argument_error(name, args, said)) from exc
    for side in sorted({size, *config.augment.progressive_sizes.values()}):
        setting = "data.image_size" if side == size else "augment.progressive_sizes"
        refused = size_refusal(model, side)
        if refused is not None:
            raise ConfigError(f"model {name!r} cannot take {side}x{side} images ({setting}): {refused}") from refused
    check_options_suit_the_network(model, config)


def check_options_suit_the_network(model: ImageClassifier, config: Config) -> None:
    """Options that only some networks can take, tried on a throwaway build of the network before any data is read:
    each refuses, naming its setting, where it would change nothing (whiten_bias_epochs is only warned of)."""
    size = config.data.image_size
    if config.optim.name == "muon":
        filters_by_normalisation(model, torch.zeros(2, 3, size, size))
    if config.model.dirac_init:
        dirac_init_(model.backbone)
    if config.train.whiten_bias_epochs is not None and not whitening_layers(model):
        # said, not refused: an ablation's baseline turns the whitening of a recipe that sets it off
        log.warning(
            "train.whiten_bias_epochs %d is unused: model %r has no patch-whitening layer whose bias it would train",
            config.train.whiten_bias_epochs,
            config.model.name,
        )


def recorded_data(config: Config) -> dict[str, Any]:
    """What a run's checkpoint records of where its data comes from and how it is split, known from the config
    before any image is read (an ensemble recipe checks its members' against each other with it)."""
    d = config.data
    return {"fit": d.fit, "dataset": d.dataset, "data_root": d.root, "val_size": d.val_size, "split_seed": d.split_seed}


class Trainer:
    def __init__(
        self, config: Config, out_dir: str | Path, resuming: bool = False, started_on: dict[str, Any] | None = None
    ) -> None:
        """``resuming``: the run folder holds a run under way, which goes on with the teacher's logits it started
        with (``distill.load_or_compute``). ``started_on``: the meta of the checkpoint it goes on from, whose data
        the data read now must be (``restore`` checks it too, for a caller that gives none)."""
        self.config, self.out_dir = config, Path(out_dir)
        check_network_takes_its_input(config)
        if config.train.distill_from:
            teacher_file(config.train.distill_from, self.out_dir)
        self.device = resolve_device(config.train.device)
        self.dist = distributed.setup(self.device.type)
        if config.train.prune_ratio and self.dist.enabled:
            # each process would see its own images' losses only, and draw its plans from a different mean
            raise ConfigError("train.prune_ratio works in one process only: set it to 0 to train on several")
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        t = config.train
        if t.threads:
            torch.set_num_threads(t.threads)
        torch.manual_seed(t.seed + self.dist.rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        train_data, val_data = load_data(config)
        check_trainable(train_data, val_data, config.data.root)
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
        self.bf16 = resolve_bf16(t.bf16, self.device)
        # before the teacher's pass over the images (minutes): a run too short for its settings, or a resume on
        # data that changed, is refused first; that pass would also replace the teacher's logits the run keeps
        if started_on is not None:
            self._check_same_data(started_on)
        check_run_length(config, len(train_data), self.dist.world_size)
        per_process = len(train_data) // self.dist.world_size
        teacher = None
        if t.distill_from:
            # rank 0 runs the teacher and keeps its logits in the run folder; the other ranks read them back
            # after it instead of each repeating the pass (minutes). A rank on another node, which does not
            # see that folder, computes them itself.
            if not self.dist.is_main:
                distributed.barrier(self.dist)
            teacher, self.meta["teacher"] = load_or_compute(
                t.distill_from,
                self.out_dir,
                self.meta,
                train_data.images,
                batch_size=t.eval_batch_size,
                device=self.device,
                bf16=self.bf16,
                mirror=config.augment.flip,
                save=self.dist.is_main,
                resuming=resuming,
            )
            if self.dist.is_main:
                distributed.barrier(self.dist)
        self.model = create_model(config.model.name, len(self.classes), mean, std, **config.model.args)
        prepare_model(self.model, config, train_data.images)
        self.model = self.model.to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
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
        seen = len(self.train_loader) * t.batch_size
        if not t.max_batches_per_epoch and per_process - seen > DROPPED_SHARE_WARNED * per_process:
            log.warning(
                "each epoch trains on %d of the %d training images per process (whole batches of %d; the rest, "
                "other images each epoch, wait for the next): a batch_size dividing %d more evenly would use them",
                seen,
                per_process,
                t.batch_size,
                per_process,
            )
        self.val_loader = (
            TensorLoader(val_data, t.eval_batch_size, self.device, channels_last=t.channels_last)
            if val_data is not None and self.dist.is_main
            else None
        )
        example = as_float(train_data.images[:2]).to(self.device)
        self.optimizer = build_optimizer(self.model, config.optim, example)
        self.scheduler = build_scheduler(self.optimizer, len(self.train_loader), t.epochs, config.schedule)
        self.forward_model: nn.Module = self.model
        if self.dist.enabled:
            self.forward_model = nn.parallel.DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                # DDP expects a gradient for every parameter that trained when it was built; a whitening bias
                # that freezes mid-run would leave it waiting for one, unless it looks for unused parameters.
                find_unused_parameters=t.whiten_bias_epochs is not None and bool(whitening_layers(self.model)),
            )
        # After DDP's wrap, which gives every rank rank 0's weights: copies taken before it hold each rank's own
        # initial weights, and the lookahead steps would pull the ranks apart.
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
            if t.ema_decay > 0
            else None
        )
        self.lookahead = (
            Lookahead(self.model, t.lookahead_every, t.lookahead_decay, len(self.train_loader) * t.epochs)
            if t.lookahead_every
            else None
        )
        if t.compile:
            # typed as returning a callable: given a Module, torch.compile returns an OptimizedModule, a Module
            self.forward_model = torch.compile(self.forward_model)  # type: ignore[assignment]
        self.history: list[dict[str, Any]]
        self.epoch, self.history, self.best = 0, [], {"val_top1": -1.0, "epoch": -1}
        self.bad_epochs = 0
        # Every rank's random state at the end of the last epoch; only rank 0 saves, so all ranks send theirs.
        self.rng_states: list[dict] | None = None

    # -- state --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema else None,
            "ema_n_averaged": int(self.ema.n_averaged.item()) if self.ema else 0,
            "lookahead": self.lookahead.state_dict() if self.lookahead else None,
            "pruning": self.train_loader.pruning.state_dict() if self.train_loader.pruning else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # Gathered by every rank at the end of each epoch; only the main rank saves, so none is gathered here.
            "rng_ranks": self.rng_states or [distributed.rng_state()],
            "config": self.config.model_dump(mode="json"),
            "meta": self.meta,
            "torch_version": str(torch.__version__),
        }

    def restore(self, ckpt: dict[str, Any]) -> None:
        self._check_same_data(ckpt.get("meta") or {})
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
            self.ema.n_averaged.fill_(ckpt["ema_n_averaged"])
        if self.lookahead and ckpt.get("lookahead"):
            self.lookahead.load_state_dict(ckpt["lookahead"])
        if self.train_loader.pruning and ckpt.get("pruning"):
            self.train_loader.pruning.load_state_dict(ckpt["pruning"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])

    def _check_same_data(self, saved: dict[str, Any]) -> None:
        """A run continues only on the data it started on: classes added or renamed would shift every label (or
        not fit the network's head), and images added, removed or edited change the normalisation it keeps."""
        changed = [key for key in DATA_KEYS if key in saved and saved[key] != self.meta[key]]
        if changed:
            said = "; ".join(
                "other images, or another split of them"
                if key == "data_fingerprint"
                else f"{key} {saved[key]} -> {self.meta[key]}"
                for key in changed
            )
            raise ConfigError(
                f"{self.out_dir} was trained on other data than {self.meta['data_root']} holds now ({said}): it "
                "cannot be continued; restore the data, or start a new run in another folder"
            )

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
        for begin in range(0, len(x), size):
            part = slice(begin, begin + size)
            target = part_of(y, part)
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
            self.forward_model = self.model
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
        return score > self.best["val_top1"] + self.config.train.early_stop_min_delta

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
        new_best = self._improves(score) or self.best["epoch"] < 0
        if new_best:
            self.best = self._best_entry(score, record)
            self.bad_epochs = 0
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


def write_progress(out_dir: Path, history: list[dict[str, Any]], config: dict[str, Any]) -> None:
    """history.json and the curves of a run that has trained ``history`` (``config``: its configuration, as its
    checkpoint keeps it)."""
    write_text_atomic(out_dir / "history.json", json.dumps(history, indent=2))
    plot_training_curves(
        history,
        out_dir / "training_curves.png",
        CurveInfo.from_config(config),
        f"{config['model']['name']} · run {out_dir.name}",
    )


def run_summary(out_dir: Path, standing: dict[str, Any], stopped_early: bool, validated: bool) -> dict[str, Any]:
    """What summary.json says of a run standing where ``standing`` (a checkpoint, or its keys) says. Without a
    validation split the epochs are ranked by training accuracy; the checkpoint keeps that score under
    ``val_top1`` for the code that ranks, but a summary must not call it a validation figure."""
    best = standing["best"]
    return {
        "run": str(out_dir),
        "epochs_run": standing["epoch"],
        "best": best if validated else {"train_acc": best["val_top1"], "epoch": best["epoch"]},
        "stopped_early": stopped_early,
        "train_time_s": sum(h["train_time_s"] for h in standing["history"]),
    }


def finished_summary(
    out_dir: Path, config: Config, standing: dict[str, Any], validated: bool, main: bool
) -> dict[str, Any] | None:
    """The summary of a run with nothing left to train (its epochs trained, or stopped early), said as such; None
    where epochs are left. A run that stopped early has finished: resuming it must not train on, nor rewrite its
    files."""
    stop = patience_exhausted(config, standing.get("bad_epochs", 0))
    epochs = config.train.epochs
    if standing["epoch"] < epochs and not stop:
        return None
    if stop:
        log.info("%s stopped early (no better epoch for its patience): nothing left to train", out_dir)
    else:
        trained = f"{epochs} epoch{'s' if epochs != 1 else ''}"
        log.info("%s has trained its %s: nothing left to train (more: resume --epochs)", out_dir, trained)
    summary = run_summary(out_dir, standing, stop, validated)
    if main and not (out_dir / SUMMARY_FILE).is_file():
        # stopped between its last checkpoint and its summary: what ablate and ensembles read is written
        write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(summary, indent=2))
    return summary


def train(config: Config, out_dir: str | Path) -> dict[str, Any]:
    check_out_of_the_data(config, Path(out_dir))
    with claimed_run(out_dir):
        return Trainer(config, out_dir).fit()


def inside_the_data(dataset: str, root: str | Path, out: Path) -> bool:
    """Whether ``out`` is (or is inside) the image folder of a folder dataset: a PNG written there (a run's
    training_curves.png, a report's figures) would be read back as an image, making its folder a class of its
    own (or an image of one) for every later run on that data."""
    root = Path(root)
    # CIFAR's readers take their batch files by name; an archive cannot be written into; absent data is said later
    if dataset != "folder" or not root.is_dir():
        return False
    out, root = out.resolve(), root.resolve()
    return out == root or root in out.parents


def check_out_of_the_data(config: Config, out_dir: Path) -> None:
    """Refuse a run folder inside the image folder it trains on (``inside_the_data``)."""
    if inside_the_data(config.data.dataset, config.data.root, out_dir):
        raise ConfigError(
            f"--out {out_dir} is inside the dataset {config.data.root} (data.root): the run's training_curves.png "
            "would be read as an image of it by later runs; train into a folder outside it"
        )


def patience_exhausted(config: Config, bad_epochs: int) -> bool:
    """Whether early stopping has ended the run: as many epochs without a better one as its patience."""
    patience = config.train.early_stop_patience
    return bool(patience and bad_epochs >= patience)


def sized_to_the_run(config: Config) -> list[str]:
    """What is spread over the whole run, and so changes shape mid-run when its epoch count does. A warmup
    is not: it lasts warmup_epochs whatever the total."""
    sized = []
    if config.schedule.name in ("cosine", "linear", "triangular"):
        sized.append(f"the {config.schedule.name} learning-rate schedule")
    if config.train.lookahead_every:
        sized.append("lookahead's decay ramp")
    if config.train.prune_params().enabled:
        sized.append("InfoBatch pruning's epochs (train.prune_until of them)")
    return sized


def best_to_go_on_from(run: Path) -> str | None:
    """Advice for a run without a usable last.pt (damaged, or missing: killed between writing best.pt and last.pt
    in its first epoch), where its best.pt is whole and holds the training state; None where it is not."""
    try:
        best = load_training_state(run / BEST_FILE)  # not a network alone (an ensemble, a recovered one)
    except (ValueError, FileNotFoundError):
        return None
    over = "over" if (run / LAST_FILE).exists() else "to"
    return f"Its {BEST_FILE} (epoch {best['epoch']}) holds the whole training state too: copy it {over} {LAST_FILE}"


def _last_or_advice(run: Path) -> dict[str, Any]:
    """The run's last.pt; where it is damaged or missing, the error says what is left to go on from."""
    try:
        return load_training_state(run / LAST_FILE)
    except (ValueError, FileNotFoundError) as exc:
        if isinstance(exc.__cause__, PermissionError):  # the file may be whole: copying over it would lose it
            raise
        advice = best_to_go_on_from(run)
        if advice is None:
            raise
        raise ConfigError(f"{exc}. {advice} to continue from that epoch, or start over with `train --force`") from exc


def newest_state(run: Path, last: dict[str, Any]) -> dict[str, Any]:
    """``last``, or the run's best.pt where that holds a later epoch of the same run: best.pt is written first, so a
    stop (Ctrl-C, a kill, a full disk) between the two leaves it ahead. Going on from it keeps that epoch rather
    than training it again, which on a GPU or another machine gives other numbers: best.pt would then hold an
    epoch that the run's history and summary do not. last.pt is written over with it, so the two agree again.
    A best.pt of another run (one of the two copied in) is refused: the run would go on beside a best.pt that
    evaluate and export read as its own."""
    try:
        best = load_training_state(run / BEST_FILE)
    except FileNotFoundError:  # written at the run's first best epoch
        return last
    except ValueError as exc:  # damaged, or a network alone: written again at the run's next best epoch
        log.warning(
            "%s; the run goes on from %s and writes %s again at its next best epoch (until then evaluate and export "
            "have no best.pt to read)",
            exc,
            LAST_FILE,
            BEST_FILE,
        )
        return last
    if best["epoch"] > last["epoch"] and same_run(last, best):
        log.warning(
            "%s (epoch %d) is ahead of %s (epoch %d): the run was stopped between writing the two; it goes on from %s",
            run / BEST_FILE,
            best["epoch"],
            run / LAST_FILE,
            last["epoch"],
            BEST_FILE,
        )
        if distributed.is_main_process():  # the one writer of the run folder, as in training
            save_checkpoint(best, run / LAST_FILE)
            write_progress(run, best["history"], best["config"])  # a finished run writes them no more
        return best
    if not same_run(best, last):
        raise CheckpointError(
            f"{run / BEST_FILE} (epoch {best['epoch']}, {best['meta']['arch']}) and {run / LAST_FILE} (epoch "
            f"{last['epoch']}, {last['meta']['arch']}) are of two different runs: one was copied in from another "
            f"folder; move the one that is not this run's out of {run}, then resume"
        )
    return last


def same_run(earlier: dict[str, Any], later: dict[str, Any]) -> bool:
    """Whether checkpoint ``later`` continues the run of ``earlier``: its history goes on from that one's, on the
    same data and settings (but for where it runs and an epoch count a resume changed)."""
    done = len(earlier["history"])
    # as text: a NaN loss is not equal to itself
    if json.dumps(later["history"][:done], sort_keys=True) != json.dumps(earlier["history"], sort_keys=True):
        return False
    before, after = _run_settings(earlier), _run_settings(later)
    # a setting only one of them names came with another version of this code, which wrote it at its default
    return all(before[key] == after[key] for key in before.keys() & after.keys())


def _run_settings(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's run trained with, its placement and epoch count left out (``same_run``)."""
    config = ckpt["config"]
    free = {*PLACEMENT_KEYS, "train.epochs"}
    settings = {
        f"{section}.{name}": value
        for section, fields in config.items()
        for name, value in (fields.items() if isinstance(fields, dict) else [("", fields)])
        if f"{section}.{name}" not in free
    }
    return {**settings, "data_fingerprint": (ckpt.get("meta") or {}).get("data_fingerprint")}


def keep_edited_config(out_dir: Path, started: Config) -> None:
    """A run's config.yaml edited by hand does not change a resume, which continues the configuration kept in
    last.pt and writes it back to config.yaml: say so, and keep the edited file beside it, not lose it."""
    path = out_dir / CONFIG_FILE
    try:
        text = path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return
    try:
        edited = config_differences(started, validate_config(yaml.safe_load(text), started=True))
    except (yaml.YAMLError, ConfigError, TypeError) as exc:
        edited = [f"it no longer reads as a configuration ({str(exc).splitlines()[0]})"]
    if not edited:
        return
    write_text_atomic(out_dir / EDITED_CONFIG, text)
    log.warning(
        "%s was edited since the run started (started -> file: %s): a resume continues the configuration it "
        "started with, kept in last.pt, and config.yaml is written back to it; the edited file is kept as %s. "
        "To train with it, start a new run: python -m training train --recipe %s --out NEW_FOLDER",
        path,
        "; ".join(edited),
        out_dir / EDITED_CONFIG,
        out_dir / EDITED_CONFIG,
    )


def resume(
    out_dir: str | Path,
    epochs: int | None = None,
    expected: Config | None = None,
    placement: list[str] | None = None,
) -> dict[str, Any]:
    """Continue a run from its last.pt with the config it was started with (optionally more epochs). With
    ``expected``, a run started with any other config is refused (ConfigError naming the differences), but for
    where it runs (``PLACEMENT_KEYS``), which it takes from ``expected``; ``placement`` sets those alone."""
    with claimed_run(out_dir, make=False):
        return _resume(out_dir, epochs, expected, placement)


def _epochs_advice(out_dir: str | Path, differences: list[str], expected: Config | None) -> str:
    """Where the epoch count alone differs, the command that continues the run for the epochs asked: resume takes
    that one difference, as its own option."""
    if expected is None or not all(difference.startswith("train.epochs:") for difference in differences):
        return ""
    epochs = expected.train.epochs
    return f"; to train it to {epochs} epochs: python -m training resume {out_dir} --epochs {epochs}"


def _resume(
    out_dir: str | Path, epochs: int | None, expected: Config | None, placement: list[str] | None
) -> dict[str, Any]:
    remove_stale_temporaries(out_dir)
    ckpt = newest_state(Path(out_dir), _last_or_advice(Path(out_dir)))
    started = validate_config(ckpt["config"], started=True)
    differences = config_differences(started, expected, ignore=PLACEMENT_KEYS) if expected is not None else []
    if differences:
        raise ConfigError(
            f"{out_dir} holds a run of another configuration, so it cannot be continued with this one "
            f"(started -> asked): {'; '.join(differences)}{_epochs_advice(out_dir, differences, expected)}"
        )
    if distributed.is_main_process():  # rank 0 alone writes the run folder
        keep_edited_config(Path(out_dir), started)
    config = with_placement(started, placement, like=expected)
    moved = config_differences(started, config)
    if moved:
        log.info("the run continues elsewhere (started -> now): %s", "; ".join(moved))
    numerics = [d for d in moved if d.startswith(NUMERICS_KEYS)]
    if numerics:
        log.warning(
            "%s: other kernels or another order of floating-point sums from here on, so the run continues, but "
            "not bit for bit as it would have where it started",
            "; ".join(numerics),
        )
    trained = ckpt["epoch"]
    if epochs is not None and patience_exhausted(started, ckpt.get("bad_epochs", 0)):
        # it would only be reported finished again; its patience is the setting that ended it, which a resume keeps
        patience = started.train.early_stop_patience
        raise ConfigError(
            f"{out_dir} stopped early at epoch {trained} (early_stop_patience {patience}: no better epoch in its "
            f"last {patience}): it has finished, so --epochs {epochs} would train none; to train on, start a new "
            "run in another folder with a larger early_stop_patience"
        )
    if epochs is not None and (epochs < trained or epochs == trained < started.train.epochs):
        # the last case would mark the run finished without its last epoch's work (lookahead's final sync)
        raise ConfigError(
            f"{out_dir} has trained {trained} epochs already: --epochs {epochs} would train none; give more"
        )
    if epochs is not None:
        reshaped = sized_to_the_run(config)
        if epochs != config.train.epochs and reshaped:
            log.warning(
                "changing epochs from %d to %d reshapes %s: the run is no longer the one started",
                config.train.epochs,
                epochs,
                " and ".join(reshaped),
            )
        config = validate_config({**config.model_dump(), "train": {**config.train.model_dump(), "epochs": epochs}})
    # A finished run is said so before the Trainer reads and decodes the data (minutes) only to find nothing to
    # train on it; but one asked to go on from its data elsewhere has that copy checked against its images first
    # (an ensemble's next member trains on it, and its record takes the new place once a member accepts it).
    if not any(difference.startswith("data.root:") for difference in moved):
        finished = finished_summary(
            Path(out_dir), config, ckpt, config.data.val_size > 0, distributed.is_main_process()
        )
        if finished is not None:
            return finished
    trainer = Trainer(config, out_dir, resuming=True, started_on=ckpt.get("meta") or {})
    trainer.restore(ckpt)
    return trainer.fit()
