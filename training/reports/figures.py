"""Report figures, rendered headless with matplotlib's Agg backend.

With many classes (CIFAR-100) a full matrix or bar chart is an unreadable wall of labels, so above
``max_classes`` the figures show the worst classes only and say so in their titles.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402
from matplotlib.textpath import TextToPath  # noqa: E402

from ..plots import drawable, literal_text, plain_log_ticks, save_figure  # noqa: E402

MAX_CLASSES = 20
DPI = 110


# A reliability bin with fewer samples than this is drawn faded: its accuracy is mostly noise.
MIN_BIN_SAMPLES = 20


# A class name longer than this is cut in figures (a 200-character name squeezed a confusion matrix to a dot);
# report.md and metrics.json hold it whole.
LABEL_CHARS = 24

NO_GLYPHS = (
    "the plotting font has no glyphs for some characters of the class names (drawn as boxes); report.md's "
    "per-class table names the classes in full"
)


def _widest_line(texts: Sequence[str], fontsize: float) -> float:
    """Width in inches of the widest line of ``texts`` at ``fontsize`` (glyphs the font lacks count as its box)."""
    measure, font = TextToPath(), FontProperties(size=fontsize)
    with warnings.catch_warnings():  # said once when the figure is saved
        warnings.filterwarnings("ignore", "Glyph .* missing from font")
        points = [
            measure.get_text_width_height_descent(drawable(line), font, ismath=False)[0]
            for text in texts
            for line in text.split("\n")
        ]
    return max(points, default=0.0) / 72


def _panel_width(titles: Sequence[str], fontsize: float, least: float) -> float:
    """Width in inches of one image's panel: ``least``, or more where a title would run into its neighbour's."""
    return max(least, _widest_line(titles, fontsize) + 0.15)


def short_label(name: str) -> str:
    return name if len(name) <= LABEL_CHARS else name[: LABEL_CHARS - 1] + "\u2026"


def short_labels(names: Sequence[str]) -> list[str]:
    """Each class's label in figures: cut as ``short_label`` cuts it, and still told apart where two names cut
    alike (``vehicle_large_category_one`` and ``..._two`` read as one class): those keep their start and end, and
    where even those agree, their index."""
    labels = [short_label(name) for name in names]
    head = (LABEL_CHARS - 1) // 2
    for attempt in range(2):
        counts = Counter(labels)
        for i, name in enumerate(names):
            if counts[labels[i]] > 1 and labels[i] != name:
                if attempt == 0:
                    labels[i] = name[:head] + "\u2026" + name[-(LABEL_CHARS - 1 - head) :]
                else:
                    suffix = f" #{i}"
                    labels[i] = name[: LABEL_CHARS - 1 - len(suffix)] + "\u2026" + suffix
    return labels


def _save(fig, path: Path, tight: bool = False) -> None:
    save_figure(fig, path, tight=tight, no_glyphs=NO_GLYPHS, dpi=DPI, bbox_inches="tight")


def _suptitle(fig, *lines: str | None) -> None:
    """The figure's heading: what it shows, then which model, views and images (``subtitle``), so that a
    figure shared alone still says what it is of."""
    text = "\n".join(line for line in lines if line)
    if text:
        fig.suptitle(drawable(text), fontsize=9)  # laid out before it is saved: made drawable now


def worst_classes(accuracy: Sequence[float | None], k: int) -> np.ndarray:
    """Indices of the k classes with the lowest accuracy (classes without samples are skipped), worst first."""
    acc = np.array([np.nan if a is None else a for a in accuracy], dtype=float)
    order = [i for i in np.argsort(acc, kind="stable") if not np.isnan(acc[i])]
    return np.array(order[:k], dtype=int)


@literal_text
def plot_confusion_matrix(
    cm: np.ndarray, classes: Sequence[str], path: Path, max_classes: int = MAX_CLASSES, subtitle: str | None = None
) -> None:
    """Row-normalised confusion matrix (each row: where that true class's samples went)."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    classes = short_labels(classes)
    # a row of zeros reads as a class never predicted right; a class without images here is not that
    true_labels = [label if rows[i, 0] else f"{label} (no images)" for i, label in enumerate(classes)]
    if n > max_classes:
        accuracy = [norm[i, i] if rows[i, 0] else None for i in range(n)]
        keep = worst_classes(accuracy, max_classes)
        sub = norm[np.ix_(keep, keep)]
        # Mass that went to classes outside the shown set, so every row still sums to 1.
        other = 1.0 - sub.sum(axis=1, keepdims=True)
        matrix = np.hstack([sub, other])
        row_labels = [true_labels[i] for i in keep]
        col_labels = [classes[i] for i in keep] + ["(other)"]
        title = f"confusion matrix: the {len(keep)} worst of {n} classes (row-normalised)"
    else:
        matrix, row_labels, col_labels = norm, true_labels, list(classes)
        title = "confusion matrix (row-normalised)"
    size = max(6.0, 0.45 * len(col_labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if len(col_labels) <= 25:
        fontsize = 8 if len(col_labels) <= 12 else 6
        for (i, j), value in np.ndenumerate(matrix):
            if value >= 0.005:
                ax.text(
                    j,
                    i,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if value > 0.5 else "black",
                )
    _suptitle(fig, subtitle)
    _save(fig, path)


@literal_text
def plot_per_class_accuracy(
    accuracy: Sequence[float | None],
    classes: Sequence[str],
    path: Path,
    max_classes: int = MAX_CLASSES,
    subtitle: str | None = None,
) -> None:
    """Bars of per-class accuracy with the mean over all classes as a line."""
    valid = [a for a in accuracy if a is not None]
    mean = float(np.mean(valid)) if valid else 0.0
    n = len(classes)
    if n > max_classes:
        keep = worst_classes(accuracy, max_classes)
        title = f"per-class accuracy: the {len(keep)} worst of {n} classes"
    else:
        keep = np.arange(n, dtype=int)
        title = "per-class accuracy"
    # a class without images keeps its place, marked as such: left out, it would look like a class the model lacks
    measured = [(position, i) for position, i in enumerate(keep) if accuracy[i] is not None]
    values = [100 * accuracy[i] for _, i in measured]
    all_labels = short_labels(classes)
    labels = [all_labels[i] for i in keep]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(keep) + 2), 4.5))
    colors = ["tab:red" if v < 100 * mean else "tab:blue" for v in values]
    bars = ax.bar([position for position, _ in measured], values, color=colors)
    for position, i in enumerate(keep):
        if accuracy[i] is None:
            ax.text(position, 2, "no\nimages", ha="center", va="bottom", fontsize=7, color="grey")
    ax.set_xlim(-0.6, len(keep) - 0.4)  # a slot without a bar at either end is not cut off
    # the labels sit on a white box above the mean line, which would otherwise strike through those near it
    labels_ = ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1, zorder=3)
    for label in labels_:
        label.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85})
    ax.axhline(100 * mean, color="black", linestyle="--", linewidth=1, zorder=2)
    ax.annotate(
        f"mean of {len(valid)}\nclasses: {100 * mean:.1f}%",
        xy=(1, 100 * mean),
        xycoords=("axes fraction", "data"),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
    )
    ax.set_xticks(range(len(keep)), labels, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title + " (red: below the mean)")
    ax.grid(axis="y", alpha=0.3)
    _suptitle(fig, subtitle)
    _save(fig, path)


def _message_figure(text: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    ax.axis("off")
    _save(fig, path)


@literal_text
def plot_misclassified(
    images: np.ndarray,
    labels: np.ndarray,
    preds: np.ndarray,
    confidence: np.ndarray,
    classes: Sequence[str],
    path: Path,
    count: int = 24,
    columns: int = 6,
    subtitle: str | None = None,
    confidence_note: str = "softmax probability of the predicted class",
) -> list[int]:
    """The most confident mistakes, most confident first; returns the sample indices shown.
    ``confidence_note`` says what the confidence is (before or after the model's temperature)."""
    wrong = np.flatnonzero(preds != labels)
    if len(wrong) == 0:
        _message_figure("no misclassified samples", path)
        return []
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    rows = -(-len(shown) // columns)
    cols = min(columns, len(shown))
    names = short_labels(classes)
    titles = [f"true: {names[labels[i]]}\npred: {names[preds[i]]} ({confidence[i]:.2f})" for i in shown]
    fig, axes = plt.subplots(rows, cols, figsize=(_panel_width(titles, 8, 2.1) * cols, 2.45 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i, title in zip(axes.flat, shown, titles):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(title, fontsize=8, color="darkred")
    _suptitle(fig, f"most confident mistakes (confidence: {confidence_note})", subtitle)
    _save(fig, path, tight=True)
    return [int(i) for i in shown]


@literal_text
def plot_gradcam(
    images: np.ndarray,
    cams: np.ndarray,
    titles: Sequence[str],
    correct: Sequence[bool],
    path: Path,
    columns: int = 4,
    subtitle: str | None = None,
    map_note: str = "last conv stage",
    titles_note: str | None = None,
) -> None:
    """Each sample as its image above its Grad-CAM overlay; correct samples first, titles in green, mistakes in
    red. ``map_note`` says where the maps come from and how coarse they are, which the upsampled overlay hides;
    ``titles_note`` how to read the titles."""
    n = len(images)
    if n == 0:
        _message_figure("no samples for Grad-CAM", path)
        return
    cols = min(columns, n)
    groups = -(-n // cols)
    fig, axes = plt.subplots(
        2 * groups, cols, figsize=(_panel_width(titles, 8, 2.3) * cols, 4.4 * groups), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        row, col = 2 * (k // cols), k % cols
        axes[row, col].imshow(images[k], interpolation="nearest")
        axes[row, col].set_title(titles[k], fontsize=8, color="darkgreen" if correct[k] else "darkred")
        axes[row + 1, col].imshow(images[k], interpolation="bilinear")
        axes[row + 1, col].imshow(cams[k], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
    _suptitle(fig, f"Grad-CAM for the predicted class (red = most evidence; {map_note})", titles_note, subtitle)
    _save(fig, path, tight=True)


@literal_text
def plot_reliability(panels: Sequence[tuple[str, dict]], path: Path, subtitle: str | None = None) -> None:
    """Reliability diagrams side by side, one per (title, ``metrics.reliability_bins`` result): accuracy per
    confidence bin against the diagonal of perfect calibration, the hatched red part of a bar the gap between
    the bin's accuracy and its mean confidence. Under each, the samples per bin (log scale: most samples sit in
    the top bin); a bin of fewer than ``MIN_BIN_SAMPLES`` is drawn faded, its accuracy being mostly noise."""
    fig, axes = plt.subplots(
        2,
        len(panels),
        figsize=(4.6 * len(panels), 5.8),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [3.2, 1]},
    )
    for column, (title, bins) in enumerate(panels):
        ax, counts_ax = axes[0, column], axes[1, column]
        edges = np.asarray(bins["edges"])
        width = edges[1] - edges[0]
        centres = edges[:-1] + width / 2
        counts = np.asarray(bins["count"], dtype=int)
        for sparse in (False, True):
            shown = [i for i, n in enumerate(counts) if n and (n < MIN_BIN_SAMPLES) == sparse]
            if not shown:
                continue
            accuracy = np.array([bins["accuracy"][i] for i in shown])
            confidence = np.array([bins["confidence"][i] for i in shown])
            alpha = 0.3 if sparse else 1.0
            ax.bar(
                centres[shown],
                accuracy,
                width=width,
                color="tab:blue",
                edgecolor="black",
                linewidth=0.5,
                alpha=alpha,
                label=f"accuracy, bins under {MIN_BIN_SAMPLES} samples faded" if sparse else "accuracy",
            )
            ax.bar(
                centres[shown],
                np.abs(confidence - accuracy),
                bottom=np.minimum(accuracy, confidence),
                width=width,
                fill=False,
                hatch="//",
                edgecolor="tab:red",
                linewidth=0.5,
                alpha=alpha,
                label="gap to the bin's mean confidence",  # one entry: the legend keeps the first of a label
            )
        ax.plot([0, 1], [0, 1], color="black", linestyle="--", linewidth=1, label="perfect calibration")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy in the bin")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        filled = counts > 0
        counts_ax.bar(centres[filled], counts[filled], width=width, color="grey", edgecolor="black", linewidth=0.5)
        counts_ax.set_yscale("log")
        plain_log_ticks(counts_ax.yaxis)
        counts_ax.set_ylim(0.7, max(10, counts.max()) * 2)
        counts_ax.set_ylabel("samples (log)")
        counts_ax.set_xlabel("top-1 confidence")
        counts_ax.grid(alpha=0.3)
    # one legend for all panels, below them, where it covers no bar
    handles, labels = {}, []
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    _suptitle(fig, subtitle)
    with warnings.catch_warnings():  # the same text is drawn again when saved, which says what the font lacks
        warnings.filterwarnings("ignore", "Glyph .* missing from font")
        fig.tight_layout()
    fig.legend(
        [handles[label] for label in labels],
        labels,
        loc="lower center",
        ncol=2,
        fontsize=8,
        bbox_to_anchor=(0.5, -0.06),
    )
    _save(fig, path)
