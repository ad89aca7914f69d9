"""Figures, rendered headless with matplotlib's Agg backend."""

from __future__ import annotations

import functools
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402

from inference.files import write_atomic  # noqa: E402

log = logging.getLogger(__name__)

# Said once per figure where matplotlib warns once per character its font lacks (CJK names in a title or legend).
NO_GLYPHS = "the plotting font has no glyphs for some characters of its titles or labels (drawn as boxes)"
_SAID_NO_GLYPHS: set[Path] = set()  # the figures this process has said it of


@dataclass(frozen=True)
class CurveInfo:
    """What a run's history measures, from its configuration; None: not known (a file without its config)."""

    label_smoothing: float | None = None
    # the weights validation ran on when they are not the trained ones: "EMA" (lookahead writes its slow
    # weights into the network itself, which validation then runs as it is)
    eval_weights: str | None = None
    optimizer: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> CurveInfo:
        if not config:
            return cls()
        train, optim = config.get("train") or {}, config.get("optim") or {}
        return cls(train.get("label_smoothing", 0.0), "EMA" if train.get("ema_decay") else None, optim.get("name"))

    def train_loss_label(self) -> str:
        # A smoothed training loss has a floor well above 0 and is not the validation loss's quantity.
        if self.label_smoothing is None:
            return "train (label-smoothed if its recipe smooths)"
        if self.label_smoothing:
            return f"train (label-smoothed {self.label_smoothing:g}: not comparable)"
        return "train"

    def validation_label(self, what: str) -> str:
        return f"{what} ({self.eval_weights} weights)" if self.eval_weights else what

    def lr_title(self) -> str:
        # the history keeps the first parameter group's rate; Muon's filters follow the same schedule at muon_lr.
        # Two lines: one runs past its 5-inch panel into the accuracy panel's title.
        if self.optimizer == "muon":
            return "learning rate (end of epoch; first parameter group;\nMuon's filters: muon_lr, same schedule)"
        return "learning rate (end of epoch)"


def save_figure(fig, path: Path, tight: bool = False, no_glyphs: str = NO_GLYPHS, **savefig_kwargs: Any) -> None:
    """Save and close ``fig``, through a temporary file renamed over ``path``: a save stopped midway (Ctrl-C, a
    full disk) leaves the figure there before whole, not a truncated PNG (a run's curves are redrawn every
    epoch, a reused report folder's figures replaced). ``tight``: lay it out first (``tight_layout`` draws the
    text, so its warnings are caught too). Characters the font lacks are one warning, ``no_glyphs``."""
    path = Path(path)
    _drawable_texts(fig)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if tight:
                fig.tight_layout()
            write_atomic(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".") or "png", **savefig_kwargs))
        finally:
            plt.close(fig)
    missing = False
    for warning in caught:
        if "missing from font" in str(warning.message):
            missing = True
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if missing and path.absolute() not in _SAID_NO_GLYPHS:  # a run's curves are redrawn every epoch: said once
        _SAID_NO_GLYPHS.add(path.absolute())
        log.warning("%s: %s", path.name, no_glyphs)


def drawable(text: str) -> str:
    """``text`` with each undecodable byte of a file name (a surrogate escape) as U+FFFD: matplotlib's font
    code takes no surrogates, and would stop the training of a run folder so named at the first epoch's curves."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _drawable_texts(fig) -> None:
    for text in fig.findobj(Text):
        shown = text.get_text()
        if shown != drawable(shown):
            text.set_text(drawable(shown))


_SUPERSCRIPT = str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079")


def _power_of_ten(value: float, _position: int | None = None) -> str:
    exponent = round(math.log10(value)) if value > 0 else 0
    if value > 0 and math.isclose(value, 10.0**exponent):
        return "10" + str(exponent).translate(_SUPERSCRIPT)
    return f"{value:g}"  # a range within one decade, which the log locator ticks linearly


def plain_log_ticks(axis: Axis) -> None:
    """Labels a log-scale axis' decades 10\u2070, 10\u00b9 ... in plain text (superscript characters) and its minor
    ticks not at all. matplotlib's own labels are math text, which ``literal_text`` would draw as written
    (``$\\mathdefault{10^{1}}$``), labels wide enough to push a figure's panels apart. Call it after
    ``set_yscale("log")``, which sets the formatters anew."""
    axis.set_major_formatter(FuncFormatter(_power_of_ten))
    axis.set_minor_formatter(NullFormatter())


_Plot = TypeVar("_Plot", bound=Callable)


def literal_text(plot: _Plot) -> _Plot:
    """Draws every text of the figure as written. matplotlib reads a text between two dollar signs as math: a class
    or run named ``$5 or $10`` would come out as an italic ``5 or``, and one named ``$\\foo$`` (no such symbol)
    stops the figure, and with it the report or the training run, with a ParseFatalException. The figure is made
    and saved inside: tick labels are created as it is drawn. matplotlib's log-axis labels are math text too: such an
    axis takes ``plain_log_ticks``."""

    @functools.wraps(plot)
    def literal(*args, **kwargs):
        with plt.rc_context({"text.parse_math": False}):
            return plot(*args, **kwargs)

    return literal  # type: ignore[return-value]


@literal_text
def plot_training_curves(
    history: list[dict], path: Path, info: CurveInfo | None = None, subtitle: str | None = None
) -> None:
    if not history:
        return
    info = info or CurveInfo()
    epochs = [h["epoch"] for h in history]
    # a line through one point draws nothing, and the curves of a run's first epoch (redrawn each epoch) have one
    # point: it is marked, on an axis ticked at that epoch rather than in fractions of one
    style = {"marker": "o"} if len(history) == 1 else {}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label=info.train_loss_label(), **style)
    if history[0].get("val_loss") is not None:
        axes[0].plot(epochs, [h["val_loss"] for h in history], label=info.validation_label("validation"), **style)
    axes[0].set_title("loss")
    # the training figures are running means over the epoch's augmented batches, as the weights changed
    axes[1].plot(epochs, [100 * h["train_acc"] for h in history], label="train (running mean, augmented)", **style)
    if history[0].get("val_top1") is not None:
        axes[1].plot(
            epochs,
            [100 * h["val_top1"] for h in history],
            label=info.validation_label("validation top-1, no TTA"),
            **style,
        )
    axes[1].set_title("accuracy (%)")
    axes[2].plot(epochs, [h["lr"] for h in history], **style)
    axes[2].set_title(info.lr_title(), fontsize="medium")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(history) == 1:
            ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right" if len(history) > 1 else "best", fontsize="small")  # a lone point may sit there
    axes[1].legend(fontsize="small")
    if subtitle:
        fig.suptitle(subtitle, fontsize=10)
    save_figure(fig, path, tight=True, dpi=100)


# A run's name longer than this is cut in the middle in the compared curves' legends, which an 80-character run
# folder would widen past their panels. compare.md names the runs in full.
RUN_NAME_CHARS = 40


def _middle_cut(name: str, chars: int) -> str:
    if len(name) <= chars:
        return name
    tail = max(chars - 1, 0) // 2
    # name[-0:] is the whole name: a width of 1 or 2 keeps no end
    return name[: max(chars - 1 - tail, 0)] + "\u2026" + name[len(name) - tail :]


def short_run_names(names: Sequence[str], chars: int = RUN_NAME_CHARS) -> dict[str, str]:
    """Each run's name as a legend shows it: one over ``chars`` characters keeps its start and end (where a run's
    folder and its checkpoint are named) around an ellipsis, more of both where two names would read alike."""
    distinct = list(dict.fromkeys(names))
    for width in range(chars, max(map(len, distinct), default=0)):
        shown = {name: _middle_cut(name, width) for name in distinct}
        if len(set(shown.values())) == len(distinct):
            return shown
    return {name: name for name in distinct}


@literal_text
def plot_compared_curves(
    histories: dict[str, list[dict]], path: Path, infos: dict[str, CurveInfo] | None = None
) -> None:
    """Two or more training runs on shared axes: validation top-1 and training loss by epoch."""
    infos = infos or {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    shown = short_run_names(list(histories))
    for name, history in histories.items():
        epochs = [h["epoch"] for h in history]
        info = infos.get(name, CurveInfo())
        if history and history[0].get("val_top1") is not None:
            axes[0].plot(
                epochs, [100 * h["val_top1"] for h in history], marker=".", label=info.validation_label(shown[name])
            )
        smoothing = info.label_smoothing
        label = shown[name] if smoothing is None else f"{shown[name]}, label smoothing {smoothing:g}"
        axes[1].plot(epochs, [h["train_loss"] for h in history], marker=".", label=label)
    axes[0].set_title("validation top-1 (%), no TTA")
    axes[1].set_title("training loss (with each recipe's label smoothing)")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path, tight=True, dpi=100)
