"""The model card's figures as a markdown table, read from the manifest, so that the card says what was measured.

`python -m export card NAME [NAME ...]` prints one column per model; the prose around it (recipe, training time,
CPU) is written by hand in models/README.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

from inference.manifest import ModelEntry
from inference.messages import markdown_cell


def temperature_text(temperature: float) -> str:
    """A fitted temperature as the card and rederive's lines say it: to the 4 decimals of the calibration summary
    (``T=1.5195``), not Python's 17 digits."""
    return f"{temperature:.4f}"


def _count(n: int) -> str:
    """A count as ``python -m export list`` says it (``counted``): thousands apart (``5,000``)."""
    return f"{n:,}"


def _validation_images(e: ModelEntry) -> str:
    samples = e.metrics.get("val_samples")
    return "n/a" if samples is None else _count(samples)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _before_after(metric: str, digits: int = 4) -> Callable[[ModelEntry], str]:
    def row(e: ModelEntry) -> str:
        c = e.metrics.get("calibration")
        if not c:
            return "n/a"
        return f"{c['before'][metric]:.{digits}f} -> {c['after'][metric]:.{digits}f}"

    return row


def _parity(e: ModelEntry) -> str:
    p = e.metrics.get("parity") or {}
    if not p:
        return "n/a"
    against = "its FP32 graph" if e.source.get("derived_from") else "PyTorch"
    agreement = p.get("top1_agreement")
    agreement_text = "" if agreement is None or math.isnan(agreement) else f", {100 * agreement:.2f}% same top-1"
    return f"{p['accuracy_diff_points']:+.2f} points against {against}{agreement_text}"


def _speed(e: ModelEntry) -> str:
    speed = (e.metrics.get("parity") or {}).get("onnx_images_per_s")
    return "n/a" if speed is None else f"{speed:,.0f}"


def _members(e: ModelEntry) -> list[dict]:
    return e.source.get("members") or []


def _architecture(e: ModelEntry) -> str:
    members = _members(e)
    return e.arch if not members else f"{e.arch} of " + " + ".join(m["arch"] for m in members)


def _tta(e: ModelEntry) -> str:
    """The graph's own averaging, and each ensemble member's inside it."""
    own = str(e.source.get("tta", "none"))
    members = _members(e)
    if not any(m.get("tta", "none") != "none" for m in members):
        return own
    inside = ", ".join(f"{m['arch']} {m.get('tta', 'none')}" for m in members)
    return inside if own == "none" else f"{own} over ({inside})"


def _temperature(e: ModelEntry) -> str:
    return temperature_text(e.calibration.temperature) if e.calibration.method == "temperature" else "none"


SHOWN_CLASSES = 10  # CIFAR-100's hundred names would fill the card: the first ten, then a count


def _classes(e: ModelEntry) -> str:
    """What the model tells apart, as its answers spell it: a model trained on a folder of one's own is known by
    its classes."""
    names = ", ".join(e.classes[:SHOWN_CLASSES])
    more = f" and {_count(len(e.classes) - SHOWN_CLASSES)} more" if len(e.classes) > SHOWN_CLASSES else ""
    return f"{_count(len(e.classes))}: {names}{more}"


ROWS: list[tuple[str, Callable[[ModelEntry], str]]] = [
    ("classes", _classes),
    ("input (pixels)", lambda e: f"{e.input.size[0]}x{e.input.size[1]} {e.input.color}"),
    ("architecture", _architecture),
    ("precision", lambda e: e.precision),
    ("test-time augmentation (in the graph)", _tta),
    ("fit for photos of another shape", lambda e: e.input.fit),
    ("recipe", lambda e: str(e.source.get("recipe") or "n/a")),
    ("validation images", _validation_images),
    ("validation top-1", lambda e: _pct(e.metrics.get("val_top1"))),
    ("validation top-5", lambda e: _pct(e.metrics.get("val_top5")) if len(e.classes) > 5 else "n/a"),
    ("parity", _parity),
    ("temperature", _temperature),
    ("ECE before -> after", _before_after("ece")),
    ("NLL before -> after", _before_after("nll")),
    ("ONNX Runtime images/s during verification (CPU, batch 256)", _speed),
]


def card_table(entries: list[ModelEntry], models_dir: str | Path) -> str:
    models_dir = Path(models_dir)
    rows = [*ROWS, ("file size", lambda e: f"{(models_dir / e.file).stat().st_size / 2**20:.1f} MiB")]
    lines = ["| | " + " | ".join(f"`{e.name}`" for e in entries) + " |", "|---" * (len(entries) + 1) + "|"]
    lines += [f"| {title} | " + " | ".join(_cell(cell, e) for e in entries) + " |" for title, cell in rows]
    return "\n".join(lines)


def _cell(cell: Callable[[ModelEntry], str], entry: ModelEntry) -> str:
    """A card's figures are free-form in the manifest's schema: one edited by hand (a calibration without its
    "before") is shown as such, not the whole table lost to "error: before"."""
    try:
        return markdown_cell(cell(entry))
    except (KeyError, TypeError, ValueError, AttributeError):
        return "n/a (not as export writes it)"
