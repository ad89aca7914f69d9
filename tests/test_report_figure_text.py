"""The figures' own text, read off the drawn figure objects: tick labels and titles as a reader sees them."""

from __future__ import annotations

import numpy as np
import pytest

from training import plots
from training.plots import CurveInfo
from training.reports import figures

HISTORY = [
    {"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_acc": 0.5, "val_top1": 0.5, "lr": 0.1 / e}
    for e in (1, 2, 3)
]


@pytest.fixture(autouse=True)
def _closed_figures():
    """The kept figures are closed after each test, as the real save closes its own: pyplot holds them otherwise."""
    yield
    plots.plt.close("all")


def _drawn(monkeypatch, module, name: str) -> list:
    """Swaps ``module.name`` (the figure's save) for one that lays the figure out and draws it as the save would,
    still inside the plot's ``literal_text``, and keeps it."""
    drawn: list = []

    def draw(fig, path, tight: bool = False, **kwargs) -> None:
        if tight:
            fig.tight_layout()
        fig.canvas.draw()
        drawn.append(fig)

    monkeypatch.setattr(module, name, draw)
    return drawn


def test_the_reliability_sample_counts_are_ticked_in_plain_powers_of_ten(tmp_path, monkeypatch):
    """Math text is off in the report figures (class names with dollar signs are drawn as written), and the log
    axis' labels are math text: they read ``$\\mathdefault{10^{1}}$`` and, that wide, pushed the panels apart."""
    drawn = _drawn(monkeypatch, figures, "_save")
    edges = np.linspace(0, 1, 16)
    counts = [0, 0, 0, 2, 5, 9, 14, 30, 40, 60, 80, 120, 300, 900, 8000]
    bins = {
        "edges": edges.tolist(),
        "count": counts,
        "accuracy": np.clip(edges[:-1] + 0.03, 0, 1).tolist(),
        "confidence": (edges[:-1] + 1 / 30).tolist(),
    }
    figures.plot_reliability([("before ($5 class)", bins), ("after", bins)], tmp_path / "r.png")
    (fig,) = drawn
    counts_axes = [ax for ax in fig.axes if ax.get_ylabel() == "samples (log)"]
    assert len(counts_axes) == 2
    for ax in counts_axes:
        shown = [label.get_text() for label in ax.get_yticklabels() if label.get_text()]
        assert shown and not [text for text in shown if "$" in text or "mathdefault" in text], shown
        low, high = ax.get_ylim()
        in_view = [label.get_text() for label in ax.get_yticklabels() if low <= label.get_position()[1] <= high]
        assert in_view == ["10\u2070", "10\u00b2", "10\u2074"], in_view
        assert not [label.get_text() for label in ax.get_yticklabels(minor=True) if label.get_text()]
    # the user's text is still drawn as written
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["before ($5 class)", "after"]


def test_a_small_splits_sample_counts_are_plain_text_too(tmp_path, monkeypatch):
    drawn = _drawn(monkeypatch, figures, "_save")
    edges = np.linspace(0, 1, 11)
    bins = {"edges": edges.tolist(), "count": [0] * 5 + [1, 2, 3, 0, 4], "accuracy": [0.5] * 10}
    bins["confidence"] = (edges[:-1] + 0.05).tolist()
    figures.plot_reliability([("tiny", bins)], tmp_path / "r.png")
    (ax,) = [ax for ax in drawn[0].axes if ax.get_ylabel() == "samples (log)"]
    shown = [label.get_text() for label in ax.get_yticklabels() + ax.get_yticklabels(minor=True)]
    assert {"10\u2070", "10\u00b9"} <= set(shown) and not [text for text in shown if "$" in text], shown


def _titles_fit(fig) -> list[str]:
    """The titles that run past their panel's sides (which is where they ran into the next one's)."""
    renderer = fig.canvas.get_renderer()
    over = []
    for ax in fig.axes:
        box, title = ax.get_window_extent(renderer), ax.title
        if title.get_text():
            extent = title.get_window_extent(renderer)
            if extent.x0 < box.x0 - 1 or extent.x1 > box.x1 + 1:
                over.append(title.get_text())
    return over


@pytest.mark.parametrize("optimizer", ["muon", "sgd", None])
def test_the_curves_titles_fit_their_panels(tmp_path, monkeypatch, optimizer):
    """A Muon run's learning-rate title, one line of 80 characters, ran past its 5-inch panel and the figure's edge
    ("... Muon's filters: muon_lr, sam") and into the accuracy panel's title."""
    drawn = _drawn(monkeypatch, plots, "save_figure")
    plots.plot_training_curves(HISTORY, tmp_path / "curves.png", CurveInfo(0.1, "EMA", optimizer), "resnet9 · run a")
    (fig,) = drawn
    assert _titles_fit(fig) == []
    assert "muon_lr" in fig.axes[2].get_title() if optimizer == "muon" else "Muon" not in fig.axes[2].get_title()
    figure_box = fig.bbox
    assert all(figure_box.x0 <= ax.title.get_window_extent().x0 for ax in fig.axes)
    assert all(ax.title.get_window_extent().x1 <= figure_box.x1 for ax in fig.axes)


def test_the_compared_curves_titles_fit_their_panels(tmp_path, monkeypatch):
    drawn = _drawn(monkeypatch, plots, "save_figure")
    infos = {"A muon": CurveInfo(0.1, "EMA", "muon"), "B sgd": CurveInfo(0.0, None, "sgd")}
    plots.plot_compared_curves({"A muon": HISTORY, "B sgd": HISTORY}, tmp_path / "compared.png", infos)
    assert _titles_fit(drawn[0]) == []


def test_no_figure_draws_math_text_markup(tmp_path, monkeypatch):
    """Every figure drawn with math text off: none of its texts (ticks included) is matplotlib's math markup."""
    from matplotlib.text import Text

    drawn = _drawn(monkeypatch, figures, "_save")
    drawn_curves = _drawn(monkeypatch, plots, "save_figure")
    classes = ["cat", "dog", "$5 bird"]
    figures.plot_confusion_matrix(np.eye(3) * 5 + 1, classes, tmp_path / "cm.png")
    figures.plot_per_class_accuracy([0.9, 0.5, None], classes, tmp_path / "acc.png")
    images = np.zeros((4, 8, 8, 3))
    figures.plot_misclassified(
        images, np.array([0, 1, 2, 0]), np.array([1, 1, 0, 2]), np.array([0.9, 0.8, 0.7, 0.6]), classes, tmp_path / "m"
    )
    figures.plot_gradcam(images, np.zeros((4, 8, 8)), ["a", "b", "c", "d"], [True] * 4, tmp_path / "g.png")
    plots.plot_training_curves(HISTORY, tmp_path / "curves.png", CurveInfo(0.0, None, "muon"))
    assert len(drawn) == 4 and len(drawn_curves) == 1
    for fig in drawn + drawn_curves:
        texts = [text.get_text() for text in fig.findobj(Text)]
        assert not [text for text in texts if "mathdefault" in text], texts


def _legend_labels(fig) -> list[list[str]]:
    return [[text.get_text() for text in ax.get_legend().get_texts()] for ax in fig.axes]


def test_long_run_names_are_cut_in_the_compared_curves_legends(tmp_path, monkeypatch):
    """``compare`` names each run by its path: one of 80 characters and more widened both legends past their
    panels. Cut in the middle, a label keeps the run folder's start, the checkpoint's name and its notes."""
    drawn = _drawn(monkeypatch, plots, "save_figure")
    a = "A runs/2026-12-07_resnet9_cifar10_muon_lr0.02_wd5e-4_ema0.999_bs512_seed1/checkpoints/best.pt"
    b = "B runs/short/last.pt"
    infos = {a: CurveInfo(0.1, "EMA", "muon"), b: CurveInfo(0.0, None, "sgd")}
    plots.plot_compared_curves({a: HISTORY, b: HISTORY}, tmp_path / "compared.png", infos)
    (accuracy, loss) = _legend_labels(drawn[0])
    assert accuracy[1] == b and loss[1] == f"{b}, label smoothing 0"
    for label, note in ((accuracy[0], " (EMA weights)"), (loss[0], ", label smoothing 0.1")):
        assert label.endswith(note), label
        name = label[: -len(note)]
        assert len(name) <= 40 and "\u2026" in name, label
        assert a.startswith(name.split("\u2026")[0]) and a.endswith(name.split("\u2026")[1]), label


def test_run_names_cut_alike_are_still_told_apart(tmp_path, monkeypatch):
    """Two runs named alike but for their middle (the seed) keep enough of it to read as two."""
    drawn = _drawn(monkeypatch, plots, "save_figure")
    names = [f"runs/2026-12-07_resnet9_cifar10_muon_lr0.02_seed{seed}_wd5e-4_ema0.999_bs512/best.pt" for seed in (1, 2)]
    plots.plot_compared_curves(dict.fromkeys(names, HISTORY), tmp_path / "compared.png")
    for labels in _legend_labels(drawn[0]):
        assert len(set(labels)) == 2 and all("\u2026" in label for label in labels), labels
        assert all(len(label) < len(names[0]) for label in labels), labels


@pytest.mark.parametrize(("chars", "shown"), [(1, "\u2026"), (2, "a\u2026"), (3, "a\u2026f")])
def test_a_run_name_cut_to_a_few_characters_is_no_longer_than_asked(chars, shown):
    """A width under 3 kept no end, so ``name[-0:]`` put the whole name after the ellipsis: longer than uncut."""
    assert plots.short_run_names(["abcdef"], chars=chars) == {"abcdef": shown}
