"""Knowledge distillation (Hinton, Vinyals & Dean, 2015) from a trained checkpoint, an ensemble's included.

The teacher's logits for every training image are computed once, before the first epoch, on the image and its
mirror image averaged (the student sees both under flip augmentation, and a crop's few pixels of translation
change no label), and kept in the run folder: every epoch then costs what it costs without a teacher, and a
resumed run reads the same targets back instead of recomputing them.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from inference.errors import UsageError
from inference.manifest import sha256_file

from .checkpoint import (
    BEST_FILE,
    LAST_FILE,
    checkpoint_file,
    load_checkpoint,
    missing_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from .data.augment import to_unit
from .data.targets import DistilledTargets
from .ensemble import same_root
from .inference import autocast

log = logging.getLogger(__name__)

TEACHER_FILE = "teacher_logits.pt"


class TeacherError(UsageError):
    """A teacher that cannot teach this run: other classes, another input size, or other validation images."""


def distill_loss(
    logits: torch.Tensor,
    target: DistilledTargets,
    label_smoothing: float,
    weight: float,
    temperature: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """(1 - weight) x the labels' cross-entropy + weight x T^2 x KL(teacher || student), both softened by T: the
    T^2 keeps the soft term's gradients on the scale of the hard one's as T changes (Hinton et al., section 2).
    The batch's mean, or each image's with ``reduction="none"``."""
    hard = F.cross_entropy(logits, target.labels, label_smoothing=label_smoothing, reduction=reduction)
    soft = F.kl_div(
        F.log_softmax(logits / temperature, dim=1),
        F.log_softmax(target.teacher.float() / temperature, dim=1),
        reduction="none",
        log_target=True,
    ).sum(1)
    if reduction == "mean":
        soft = soft.mean()
    return (1 - weight) * hard + weight * temperature**2 * soft


def check_teacher(teacher: dict[str, Any], student: dict[str, Any], path: Path) -> None:
    """The teacher must answer with the student's classes, take its input, and never have trained on the
    student's validation images: distilling those would carry their labels into the student and inflate every
    figure measured on them."""
    t = teacher
    if list(t["classes"]) != list(student["classes"]):
        raise TeacherError(f"teacher {path} has classes {t['classes']}, the student's data {student['classes']}")
    if t["input_size"] != student["input_size"]:
        raise TeacherError(
            f"teacher {path} takes {t['input_size']}-pixel images, the student trains on {student['input_size']}"
        )
    split = ("val_size", "split_seed")
    fingerprint = t.get("data_fingerprint")
    # A checkpoint from before runs recorded one, or an ensemble whose members read the images with other fits,
    # has no fingerprint: its split is then named by the data's root, size and seed alone.
    same = (
        fingerprint == student["data_fingerprint"]
        if fingerprint is not None
        else all(t.get(k) == student[k] for k in split) and same_root(t.get("data_root"), student["data_root"])
    )
    if not same:
        raise TeacherError(
            f"teacher {path} was trained on other images or another split of them (val_size {t.get('val_size')}, "
            f"split_seed {t.get('split_seed')}, data {t.get('data_root')!r}; the student: val_size "
            f"{student['val_size']}, split_seed {student['split_seed']}, data {student['data_root']!r}): it may have "
            "learnt the student's validation images, so only a teacher trained on the same split can teach it"
        )
    if fingerprint is None:
        log.warning(
            "teacher %s records no fingerprint of its images: its split is taken to be the student's from the "
            "data's path, val_size and split_seed",
            path,
        )


def teacher_logits(
    model: torch.nn.Module,
    images: np.ndarray,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    mirror: bool,
) -> torch.Tensor:
    """float32 [N, classes]: the teacher's logits for uint8 images [N, H, W, C], averaged with those of the mirror
    images when ``mirror``."""
    model = model.to(device).eval()
    out = []
    with torch.inference_mode():
        for begin in tqdm(range(0, len(images), batch_size), desc="teacher", unit="batch", leave=False):
            x = to_unit(torch.from_numpy(images[begin : begin + batch_size]).to(device).permute(0, 3, 1, 2))
            views = [x, x.flip(3)] if mirror else [x]
            with autocast(device, bf16):
                logits = torch.stack([model(view).float() for view in views]).mean(0)
            out.append(logits.cpu())
    return torch.cat(out)


def _kept(path: Path) -> dict[str, Any] | None:
    """The teacher's logits a run folder keeps, or None where there are none or they cannot be read (they are
    then computed again: nothing of the run is lost)."""
    if not path.is_file():
        return None
    try:
        kept = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, KeyError, IndexError, OSError) as exc:
        log.warning("%s cannot be read (%s): the teacher's logits are computed again", path, type(exc).__name__)
        return None
    if not isinstance(kept, dict) or not {"logits", "sha256", "teacher"} <= kept.keys():
        log.warning("%s is not a file of teacher logits: they are computed again", path)
        return None
    return kept


def _kept_from(kept: dict[str, Any]) -> str | None:
    """The checkpoint file kept logits were computed from, as their record names it."""
    record = kept["teacher"]
    checkpoint = record.get("checkpoint") if isinstance(record, dict) else None
    return checkpoint if isinstance(checkpoint, str) else None


def teacher_file(source: str, run_dir: Path) -> Path:
    """The teacher's checkpoint file. Called before the dataset is read (minutes for a large one), so that a
    teacher that cannot be used is refused at once: an ONNX file, or a missing checkpoint where the run folder
    keeps no logits of it to continue on, or a checkpoint the run itself writes."""
    path = checkpoint_file(source)
    if path.name in (BEST_FILE, LAST_FILE) and path.resolve().parent == run_dir.resolve():
        # the run replaces them as it trains: a resume would find the student there and learn from itself
        raise TeacherError(
            f"teacher {path} is a checkpoint this run writes over: copy it out of {run_dir} and distill from the "
            "copy, or train into another folder"
        )
    if path.suffix.lower() == ".onnx":
        raise TeacherError(
            f"teacher {path} is an exported ONNX model: distillation takes the training checkpoint or run folder "
            "it was exported from (an ensemble's: `python -m training ensemble RUN RUN --out FILE`)"
        )
    if not path.is_file() and not (run_dir / TEACHER_FILE).is_file():
        raise FileNotFoundError(f"train.distill_from: {missing_checkpoint(path)}")
    return path


def load_or_compute(
    source: str,
    run_dir: Path,
    student: dict[str, Any],
    images: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    mirror: bool,
    save: bool = True,
    resuming: bool = False,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The teacher's logits for the training images, from the run folder when this teacher already gave them
    (a resume), else computed and saved there; with a record of the teacher for the student's meta.
    ``resuming``: a run under way, which continues on the logits it started with even where the teacher's file
    has changed since (trained on, replaced), so that it goes on as it would have."""
    path = teacher_file(source, run_dir)
    cached_path = run_dir / TEACHER_FILE
    cached = _kept(cached_path)
    sha = sha256_file(path) if path.is_file() else None
    key = {"data_fingerprint": student["data_fingerprint"], "mirror": mirror}
    if cached is not None and all(cached.get(k) == v for k, v in key.items()):
        kept_from = _kept_from(cached)
        if sha is None and not resuming and (kept_from is None or Path(kept_from).absolute() != path.absolute()):
            # a new run (--force) whose teacher is mistyped or gone: the old run's logits are another teacher's
            raise FileNotFoundError(
                f"train.distill_from: {missing_checkpoint(path)}; the logits kept in {cached_path} are another "
                f"teacher's ({kept_from}), which only a resume of the run they were computed for goes on with"
            )
        if sha is None:
            log.warning("teacher %s is gone: the run continues on its logits kept in %s", path, cached_path)
        elif sha != cached["sha256"] and resuming:
            log.warning(
                "teacher %s has changed since the run started: the run continues on the logits it started with, "
                "kept in %s",
                path,
                cached_path,
            )
        if sha in (None, cached["sha256"]) or resuming:
            return cached["logits"], cached["teacher"]
    ckpt = load_checkpoint(path)  # a missing or unreadable teacher is named here
    check_teacher(ckpt["meta"], student, path)
    model = model_from_checkpoint(ckpt)
    if device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    log.info("teacher %s: logits for %d training images%s", path, len(images), " and their mirrors" if mirror else "")
    logits = teacher_logits(model, images, batch_size, device, bf16, mirror)
    best = ckpt.get("best") or {}
    record = {
        "checkpoint": str(path),
        "sha256": sha,
        "arch": ckpt["meta"]["arch"],
        "recipe": ckpt["meta"].get("recipe"),
        "val_top1": best.get("val_top1"),
    }
    if save:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint({**key, "sha256": sha, "teacher": record, "logits": logits}, cached_path)
    return logits, record
