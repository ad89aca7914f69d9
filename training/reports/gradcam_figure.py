"""A report's Grad-CAM figure: the most confident right samples of distinct classes, then the most confident
mistakes, each under the heat map of its predicted class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import ImageArrays
from ..data.augment import to_unit
from . import figures
from .gradcam import GradCAM
from .sources import ModelSource

GRADCAM_PER_GROUP = 4


# the arrow's direction is said in the figure, which is often shared without report.md's caption
GRADCAM_TITLES = "green: right, predicted (confidence); red: wrong, true -> predicted (confidence)"


def _gradcam_samples(labels: np.ndarray, preds: np.ndarray, confidence: np.ndarray, per_group: int) -> list[int]:
    """The most confident correct samples of distinct classes, then the most confident mistakes."""
    correct_idx = np.flatnonzero(preds == labels)
    chosen, seen = [], set()
    for i in correct_idx[np.argsort(-confidence[correct_idx], kind="stable")]:
        if labels[i] not in seen:
            chosen.append(int(i))
            seen.add(labels[i])
        if len(chosen) == per_group:
            break
    wrong_idx = np.flatnonzero(preds != labels)
    chosen += [int(i) for i in wrong_idx[np.argsort(-confidence[wrong_idx], kind="stable")][:per_group]]
    return chosen


def render_gradcam(
    source: ModelSource,
    data: ImageArrays,
    preds: np.ndarray,
    confidence: np.ndarray,
    classes: list[str],
    path: Path,
    per_group: int = GRADCAM_PER_GROUP,
    tta: str = "none",
    subtitle: str | None = None,
) -> list[int]:
    indices = _gradcam_samples(data.labels, preds, confidence, per_group)
    if not indices:
        figures.plot_gradcam(np.zeros((0,)), np.zeros((0,)), [], [], path, subtitle=subtitle)
        return []
    images = data.images[indices]
    batch = to_unit(torch.from_numpy(images).permute(0, 3, 1, 2)).to(source.device)
    cam = GradCAM(source.model)  # NoSpatialMap where the model has no spatial layer: the caller skips the figure
    cams = cam(batch, torch.from_numpy(preds[indices]))
    assert cam.map_size is not None and cam.stride is not None  # set by the call
    (height, width), (row_step, col_step) = cam.map_size, cam.stride
    # the overlay is smooth at the image's size; say how coarse the map under it is, and what it is not
    # stretched from its own minimum: the bluest part of a map is its weakest evidence, not necessarily none
    note = [f"{height}x{width} map of the last stage, upsampled; each scaled from its own minimum to its maximum"]
    covered = round(height * row_step), round(width * col_step)
    if covered != tuple(batch.shape[-2:]):  # a map its pooling floored: its cells sit where they read, not stretched
        note[0] = (
            f"{height}x{width} map of the last stage, cells {row_step:g} px apart, upsampled over its "
            f"{covered[0]}x{covered[1]} px; each scaled from its own minimum to its maximum"
        )
    if source.arch == "ensemble":
        note.append("first member's layer" + (f", its unaugmented view of {cam.views}" if cam.views > 1 else ""))
    if tta != "none":
        note.append("from the image alone, predictions from the TTA views")
    titles: list[str] = []
    correct: list[bool] = []
    names = figures.short_labels(classes)
    for i in indices:
        ok = bool(preds[i] == data.labels[i])
        correct.append(ok)
        true, predicted = names[data.labels[i]], names[preds[i]]
        # a mistake on two lines: on one, two long names ran into the next panel's title
        title = f"{predicted} ({confidence[i]:.2f})" if ok else f"{true} ->\n{predicted} ({confidence[i]:.2f})"
        if not cams[len(titles)].any():  # drawn all blue, which alone reads as evidence spread thin everywhere
            title += "\nno positive evidence"
        titles.append(title)
    figures.plot_gradcam(
        images, cams, titles, correct, path, subtitle=subtitle, map_note="; ".join(note), titles_note=GRADCAM_TITLES
    )
    return indices
