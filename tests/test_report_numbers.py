"""What a report's figures and numbers show at the edges: class names matplotlib would read as math, titles of long
names side by side, the reliability legend of a small split, Grad-CAM's scaling, and a temperature no data can
measure."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.text import Text
from torch import nn

from training.data import ImageArrays
from training.reports import figures
from training.reports.calibration import fit_temperature
from training.reports.gradcam import GradCAM
from training.reports.gradcam_figure import render_gradcam
from training.reports.metrics import reliability_bins, softmax
from training.reports.report_calibration import fit_caveat


def _keep_figures(monkeypatch) -> list:
    """Each figure a plot function saves, laid out as ``save_figure`` lays it out, with the pairs of its axes
    titles whose drawn boxes run into each other (``overlapping``), then saved for real."""
    kept, save = [], figures._save

    def keep(fig, path, tight: bool = False) -> None:
        if tight:
            fig.tight_layout()
        renderer = fig.canvas.get_renderer()
        boxes = [(ax.title.get_text(), ax.title.get_window_extent(renderer)) for ax in fig.axes if ax.title.get_text()]
        fig.overlapping = [
            (a, b) for i, (a, one) in enumerate(boxes) for b, other in boxes[i + 1 :] if one.overlaps(other)
        ]
        kept.append(fig)
        save(fig, path, tight)

    monkeypatch.setattr(figures, "_save", keep)
    return kept


DOLLAR_NAMES = ["$\\foo$", "$5 or $10", "ok"]


def test_class_names_with_dollar_signs_are_drawn_as_written_not_as_math(tmp_path, monkeypatch):
    """A folder named ``$\\foo$`` stopped the report (ParseFatalException: Unknown symbol); ``$5 or $10`` was drawn
    as an italic ``5 or``."""
    kept = _keep_figures(monkeypatch)
    cm = np.array([[2, 1, 0], [0, 3, 0], [1, 0, 2]])
    images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    labels, preds = np.array([0, 1, 2]), np.array([1, 2, 0])
    figures.plot_confusion_matrix(cm, DOLLAR_NAMES, tmp_path / "cm.png", subtitle="run $a$/best.pt")
    figures.plot_per_class_accuracy([2 / 3, 1.0, 2 / 3], DOLLAR_NAMES, tmp_path / "acc.png")
    figures.plot_misclassified(images, labels, preds, np.full(3, 0.9), DOLLAR_NAMES, tmp_path / "m.png")
    figures.plot_gradcam(images, np.zeros((3, 32, 32)), DOLLAR_NAMES, [True] * 3, tmp_path / "g.png")
    assert len(kept) == 4 and all((tmp_path / name).is_file() for name in ("cm.png", "acc.png", "m.png", "g.png"))
    dollars = [text for fig in kept for text in fig.findobj(Text) if "$" in text.get_text()]
    assert len(dollars) >= 8 and not any(text.get_parse_math() for text in dollars)


def _long_names(count: int) -> list[str]:
    return [f"a rather long class name number {i:02d}" for i in range(count)]  # each cut to 24 characters


def test_titles_of_the_most_confident_mistakes_do_not_run_into_each_other(tmp_path, monkeypatch):
    kept = _keep_figures(monkeypatch)
    names = _long_names(12)
    labels = np.arange(12)
    figures.plot_misclassified(
        np.zeros((12, 32, 32, 3), dtype=np.uint8),
        labels,
        (labels + 1) % 12,
        np.full(12, 0.97),
        names,
        tmp_path / "m.png",
    )
    (fig,) = kept
    assert not fig.overlapping, fig.overlapping


class _Brightness(nn.Module):
    """Logit 0 is the mean of the red channel, every other its negative: Grad-CAM of class 0 is the red channel
    itself (the gradient of a mean is uniform), of the others nothing (no positive evidence anywhere)."""

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.red = nn.Conv2d(3, 1, 1, bias=False)
        self.fc = nn.Linear(1, classes, bias=False)
        with torch.no_grad():
            self.red.weight.copy_(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1))
            self.fc.weight.copy_(torch.tensor([[1.0]] + [[-1.0]] * (classes - 1)))

    @property
    def cam_layer(self) -> nn.Module:
        return self.red

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.red(x).mean((2, 3)))


def test_a_grad_cam_map_is_all_zeros_only_where_there_is_no_positive_evidence():
    """Evidence spread evenly over the image was drawn as none (all zeros, the scaling's division by zero); a map is
    otherwise stretched from its minimum to its maximum, as the figure says."""
    uniform = torch.full((1, 3, 16, 16), 0.5)
    cam = GradCAM(_Brightness())
    (even,) = cam(uniform, np.array([0]))
    assert cam.map_size == (16, 16) and cam.stride == (1.0, 1.0)
    assert (even == 1).all()
    (none,) = GradCAM(_Brightness())(uniform, np.array([1]))
    assert not none.any()
    square = uniform.clone()
    square[..., 4:8, 4:8] = 1.0
    (stretched,) = GradCAM(_Brightness())(square, np.array([0]))
    np.testing.assert_allclose(stretched, (square[0, 0].numpy() - 0.5) / 0.5, atol=1e-6)


def test_the_grad_cam_figure_keeps_long_names_apart_and_says_where_a_map_has_no_positive_evidence(
    tmp_path, monkeypatch
):
    """Mistakes titled ``true -> predicted`` on one line ran into the next panel's title; a map with no positive
    evidence was an unexplained all-blue overlay; the heading said each map was scaled to its maximum, where it is
    stretched from its minimum (the bluest part is the weakest evidence, not none)."""
    kept = _keep_figures(monkeypatch)
    names = _long_names(4)
    images = np.full((8, 16, 16, 3), 128, dtype=np.uint8)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    preds = np.array([0, 1, 2, 3, 1, 2, 3, 0])  # four right, four wrong
    # what render_gradcam reads of a ModelSource
    source: Any = SimpleNamespace(model=_Brightness(4), device=torch.device("cpu"), arch="brightness")
    shown = render_gradcam(
        source,
        ImageArrays(images, labels, names),
        preds,
        np.full(8, 0.9),
        names,
        tmp_path / "g.png",
    )
    assert len(shown) == 8
    (fig,) = kept
    assert not fig.overlapping, fig.overlapping
    assert "each scaled from its own minimum to its maximum" in fig._suptitle.get_text()
    titles = [ax.title.get_text() for ax in fig.axes if ax.title.get_text()]
    # only class 0 has evidence (the red channel)
    evidence = {i: preds[i] == 0 for i in shown}
    said = ["no positive evidence" in title for title in titles]
    assert said == [not evidence[i] for i in shown] and any(said) and not all(said)


def test_the_reliability_legend_explains_the_hatched_gap_where_every_bin_has_few_samples(tmp_path, monkeypatch):
    """A split of a dozen images fills no bin to 20 samples: the hatched gap was drawn, its legend entry not."""
    kept = _keep_figures(monkeypatch)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (12, 3))
    bins = reliability_bins(softmax(logits), rng.integers(0, 3, 12))
    assert max(bins["count"]) < figures.MIN_BIN_SAMPLES
    figures.plot_reliability([("before", bins), ("after", bins)], tmp_path / "r.png")
    (fig,) = kept
    (legend,) = fig.legends
    labels = [text.get_text() for text in legend.get_texts()]
    assert "gap to the bin's mean confidence" in labels and len(labels) == len(set(labels))


def test_a_temperature_is_not_fitted_to_logits_equal_across_classes(caplog):
    """A collapsed network gives every class one logit: the likelihood is flat in T and the search stopped anywhere
    (11.46 for logits of 3), reported as a fitted T without a word."""
    logits = np.full((10, 4), 3.0)
    labels = np.arange(10) % 4
    with caplog.at_level(logging.WARNING, logger="training.reports"):
        temperature = fit_temperature(logits, labels)
    assert temperature == 1.0
    assert "same logit" in caplog.text
    caveat = fit_caveat(logits, labels, temperature)
    assert "same logit" in caveat and "top of its range" not in caveat
    # logits that differ on one image only are measured as usual
    logits[0, 0] = 5.0
    assert fit_temperature(logits, labels, warn=False) != pytest.approx(1.0)
