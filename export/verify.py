"""Re-verify a shipped model: its manifest entry is not hashed, so it is checked against the card inside its
file, then the file's accuracy against its checkpoint (or the FP32 graph it was re-derived from, or the figure
recorded at export) and its calibration are measured again. Also what rederive and recover read a listed model
through (``listed_model``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from inference.errors import UsageError
from inference.manifest import (
    MANIFEST_NAME,
    ManifestError,
    ModelEntry,
    card_disagreements,
    file_problems,
    load_manifest,
    sha256_file,
)
from inference.messages import counted, validation_problems
from inference.runtime import OnnxClassifier, read_card, softmax
from training.checkpoint import checkpoint_file, load_checkpoint_and_sha256, model_from_checkpoint
from training.dataset_cache import DEFAULT_CACHE_DIR
from training.inference import with_tta

from .parity import Parity, judge, onnx_logits, parity_against, torch_logits
from .pipeline import graph_calibration_report
from .reference import ReferenceCache
from .sources import DataSource, from_project, source_at, validation_split

log = logging.getLogger("export")


class RecordedSource(DataSource):
    """What verify, rederive and recover read of a card's source besides its data."""

    val_fingerprint: str | None = None
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    tta: str = "none"
    model_args: dict[str, Any] | None = None
    recipe: str | None = None
    members: list[dict[str, Any]] | None = None  # an ensemble's checkpoints
    teacher: dict[str, Any] | None = None  # what a distilled model learnt from
    derived_from: dict[str, Any] | None = None  # the FP32 graph a rederived model was converted from


class RecordedParity(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    torch_top1: float | None = None


class RecordedMetrics(BaseModel):
    """What verify reads of a card's figures: its top-1 and the images it was measured on, which the file must
    still score, and the PyTorch top-1 recorded at export, compared with when the checkpoint is gone."""

    model_config = ConfigDict(strict=True, extra="ignore")

    val_top1: float  # ModelCard refuses a card without it
    val_samples: int | None = None
    parity: RecordedParity | None = None


class ListedModel(BaseModel):
    """A listed model: its entry, and what its card records of its data, checkpoint and figures as checked types.
    Verify, rederive and recover read those here, never from the entry's free ``source`` and ``metrics``
    mappings, so a value the types refuse is never read raw."""

    entry: ModelEntry
    source: RecordedSource
    metrics: RecordedMetrics

    @classmethod
    def of(cls, entry: ModelEntry) -> ListedModel:
        """``entry`` with its record checked (ValidationError where a key is missing or of another type)."""
        return cls.model_validate({"entry": entry, "source": entry.source, "metrics": entry.metrics})


def listed_model(models_dir: Path, name: str | None) -> ListedModel:
    """The manifest's entry ``name`` (the default when None), what its card records of its data, checkpoint and
    figures checked (``ListedModel``), and its file checked against its sha256: a missing or altered file of
    another listed model is warned of, and is that model's trouble, not this command's."""
    manifest = load_manifest(models_dir, verify=False)
    entry = manifest.get(name)
    try:
        listed = ListedModel.of(entry)
    except ValidationError as exc:
        raise ManifestError(
            f"invalid manifest {models_dir / MANIFEST_NAME}: model {entry.name!r}: {validation_problems(exc)}"
        ) from None
    problems = file_problems(manifest, models_dir)  # each file hashed once
    if entry.name in problems:
        raise ManifestError(problems.pop(entry.name))
    for problem in problems.values():
        log.warning("%s", problem)
    _check_described(entry, models_dir)
    return listed


# What the graph computes and takes, which the sha256 does not cover (the manifest is not hashed): the service
# refuses to start on an entry that differs from its file's own card, and verify, rederive and recover compute
# with the entry's classes, precision, input and temperature.
_DESCRIBED = ("arch", "classes", "precision", "input", "calibration")


def _check_described(entry: ModelEntry, models_dir: Path) -> None:
    """ManifestError where ``entry`` says of its file what the card inside the file does not: a hand edit would
    otherwise pass verification, or be blamed on the dataset (its classes), and the service then refuse it."""
    card = read_card(models_dir / entry.file)
    differ = card_disagreements(entry, card, _DESCRIBED)
    if differ:
        raise ManifestError(
            f"model {entry.name!r}: its entry in {models_dir / MANIFEST_NAME} differs from the card inside "
            f"{entry.file} in its {', '.join(differ)} (the manifest edited by hand?): restore the entry as the file's "
            "card has it, or export the model again"
        )


def verify_model(
    name: str | None,
    models_dir: str | Path = "models",
    cache_dir: str | None = DEFAULT_CACHE_DIR,
    max_val_images: int | None = None,
    reference_cache: str | Path | None = None,
    data_root: str | None = None,
) -> tuple[Parity, dict]:
    """Re-check a shipped model: hashes of every manifest file, then accuracy against its checkpoint
    (wrapped in the recorded test-time augmentation and temperature), and its calibration: with the
    recorded T, and with a T refitted on its own logits. With ``reference_cache``, the checkpoint's logits
    kept there by its export (same checkpoint bytes, TTA and images) stand in for a new PyTorch pass."""
    models_dir = Path(models_dir)
    listed = listed_model(models_dir, name)
    entry, recorded = listed.entry, listed.source
    source = source_at(
        {**recorded.model_dump(), "data_root": from_project(recorded.data_root, models_dir)}, cache_dir, data_root
    )
    val = validation_split(source, max_val_images, entry.classes, moved=data_root is not None)
    classifier = OnnxClassifier(models_dir / entry.file, device="cpu")
    temperature = entry.calibration.temperature
    checkpoint = checkpoint_file(from_project(recorded.checkpoint or "-", models_dir))
    sha = sha256_file(checkpoint) if checkpoint.is_file() else None
    if sha is not None and recorded.checkpoint_sha256 not in (None, sha):
        # a run folder trained again: comparing with it would report a parity failure that is not the file's
        log.warning("%s is not the checkpoint %s was exported from (its sha256 differs)", checkpoint, entry.name)
        sha = None
    if sha is not None:
        tta = recorded.tta

        def compute() -> tuple[np.ndarray, float]:
            ckpt, loaded_sha = load_checkpoint_and_sha256(checkpoint)
            if loaded_sha != sha:  # replaced since it was checked: its logits would be cached under the other's digest
                raise UsageError(f"{checkpoint} changed while it was being verified (a run still training?): run again")
            return torch_logits(with_tta(model_from_checkpoint(ckpt), tta), val.images)

        reference, speed = ReferenceCache(reference_cache).logits(sha, tta, val.images, compute)
        # the recorded temperature, as the graph applies it after the averaging
        reference = reference / temperature
        parity, logits = parity_against(
            reference, speed, classifier, val.images, val.labels, split_images=source["val_size"]
        )
        return _against_card(parity, listed.metrics), graph_calibration_report(logits, val.labels, temperature)
    graph = _reference_graph(recorded.derived_from, models_dir, entry.file)
    if graph is not None:
        # A graph derived from another (rederive) was measured against that graph: where it is still beside it,
        # unchanged, its logits are the reference, image by image and on any number of images.
        log.info(
            "comparing %s with %s, the FP32 graph it was derived from (%s)",
            entry.name,
            graph.name,
            _no_checkpoint(recorded.checkpoint, checkpoint, models_dir),
        )
        ref_logits, ref_speed = onnx_logits(OnnxClassifier(graph, device="cpu"), val.images)
        if read_card(graph).calibration.method == "none":  # the derived graph appended the division by T
            ref_logits = ref_logits / temperature
        parity, logits = parity_against(
            ref_logits,
            ref_speed,
            classifier,
            val.images,
            val.labels,
            split_images=source["val_size"],
            reference="FP32 graph",
        )
        return _against_card(parity, listed.metrics), graph_calibration_report(logits, val.labels, temperature)
    # Without the checkpoint (a fresh clone), compare with the reference's accuracy recorded at export time: a
    # graph derived from another (rederive) was measured against that graph, not against PyTorch.
    against = "FP32 graph" if recorded.derived_from else "PyTorch"
    torch_top1 = listed.metrics.parity.torch_top1 if listed.metrics.parity else None
    recorded_on = listed.metrics.val_samples
    # refused before the ONNX pass, which takes minutes for a multi-crop FP16 graph on a CPU
    if torch_top1 is None or recorded_on != len(val):
        # an export checked on fewer images (--max-val-images) recorded its figure on those: the same check is
        # the one that can be compared with it
        same = ""
        if torch_top1 is not None and recorded_on:
            same = f": it was recorded on {recorded_on}, pass --max-val-images {recorded_on}"
        looked = _no_checkpoint(recorded.checkpoint, checkpoint, models_dir)
        raise UsageError(
            f"{entry.name}: no checkpoint and no recorded {against} accuracy on the same "
            f"{counted(len(val), 'image')} ({looked}){same}"
        )
    # said once the comparison is sure to run: before a refusal it would tell of a comparison that never starts
    log.warning(
        "comparing %s with the %s accuracy recorded at export: %s",
        entry.name,
        against,
        _no_checkpoint(recorded.checkpoint, checkpoint, models_dir),
    )
    logits, speed = onnx_logits(classifier, val.images)
    parity = judge(
        entry.precision,
        None,
        softmax(logits),
        val.labels,
        torch_top1,
        float("nan"),
        speed,
        against,
        split_images=source["val_size"],
    )
    return _against_card(parity, listed.metrics), graph_calibration_report(logits, val.labels, temperature)


def _reference_graph(derived_from: dict[str, Any] | None, models_dir: Path, own: str) -> Path | None:
    """The FP32 graph a rederived model was converted from, where it still lies in ``models_dir`` with the sha256
    recorded then (the shipped default's INT8 and FP16 files): None where it is gone or another file now, or is
    ``own``, the model's file (the manifest edited by hand: compared with itself, any file would pass)."""
    file, sha = (derived_from or {}).get("file"), (derived_from or {}).get("sha256")
    if not isinstance(file, str) or not isinstance(sha, str) or Path(file).name == Path(own).name:
        return None
    path = models_dir / Path(file).name
    return path if path.is_file() and sha256_file(path) == sha else None


def _no_checkpoint(recorded: str | None, checkpoint: Path, models_dir: Path) -> str:
    """Where verify looked for the card's checkpoint and found none it could use: a relative path is looked for
    from the current folder and from the project's (``from_project``), and named alone it read as the first only."""
    if not recorded:
        return "its card records no checkpoint"
    beside = checkpoint_file(models_dir.resolve().parent / recorded)
    if checkpoint.is_file() or checkpoint.is_absolute() or beside == checkpoint.resolve():
        return f"no usable checkpoint at {checkpoint}"
    return f"no usable checkpoint at {checkpoint} nor at {beside}"


# How far the card's top-1 may be from a new measurement on the same images: the same file gives the same
# answers on one kind of CPU, and INT8 kernels of another (VNNI, AMX) may move a few images of 5,000.
CARD_TOLERANCE_POINTS = 0.3


def _against_card(parity: Parity, card: RecordedMetrics) -> Parity:
    """``parity`` failed too when the card's top-1, which the listing, the card table and /models show, is not
    what the file scores on the same images: the manifest is not hashed, so a figure edited by hand (or left
    from another file) is found only here."""
    claimed, samples = card.val_top1, card.val_samples
    if samples is None or samples != parity.samples:
        return parity
    gap = 100 * (parity.onnx_top1 - claimed)
    if abs(gap) > CARD_TOLERANCE_POINTS + 1e-9:  # 15 images of 5,000 is 0.30000000000000004 points
        these = f"{'this' if samples == 1 else 'these'} {counted(samples, 'image')}"
        parity.failures.append(
            f"the manifest says val_top1 {100 * claimed:.2f}% on {these}, the file scores "
            f"{100 * parity.onnx_top1:.2f}% ({gap:+.2f} points, over {CARD_TOLERANCE_POINTS}): the card's figures "
            "are not this file's; export it again to record them"
        )
    return parity
