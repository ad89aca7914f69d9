"""An ablation's table as Markdown (ablation.md, and what the command prints): every row against the baseline, with
the words that say what each column measures."""

from __future__ import annotations

from typing import Any

from inference.messages import counted, markdown_cell

from .ablate_rows import common_sample_count
from .ablate_variants import run_kind
from .metrics import PAIRED_INTERVAL_METHOD


def _interval_text(interval: dict[str, float] | None) -> str:
    return "" if interval is None else f"{interval['low']:+.2f} .. {interval['high']:+.2f}"


def _epochs_to_text(row: dict[str, Any]) -> str:
    if row["tta"] != "none":
        return ""
    return "not reached" if row["epochs_to_target"] is None else str(row["epochs_to_target"])


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _samples_text(rows: list[dict[str, Any]], kind: str) -> str:
    """The images the rows were evaluated on: one count where they share them, each run's own where not; ``kind``:
    what the ablation calls its runs (``run_kind``)."""
    if len({row["fingerprint"] for row in rows}) == 1:
        return f"({counted(rows[0]['num_samples'], 'image')})"
    variants = [row for row in rows if row["tta"] == "none"]  # a TTA row reads its variant's images
    if common_sample_count(variants) is not None:
        return f"of each {kind}'s own data ({counted(variants[0]['num_samples'], 'image')} each, not the same ones)"
    return (
        f"of each {kind}'s own data ("
        + "; ".join(f"{r['variant']}: {counted(r['num_samples'], 'image')}" for r in variants)
        + ")"
    )


def _unpaired_note(rows: list[dict[str, Any]]) -> str:
    # McNemar's test and the paired interval need one set of images: _paired leaves them out across data
    if len({row["fingerprint"] for row in rows}) == 1:
        return ""
    return (
        " A row evaluated on other images than the row it is tested against has no p or interval: its top-1 "
        "difference mixes the models' change with the images' and is not paired."
    )


def _class_change_text(row: dict[str, Any], change: dict[str, Any] | None) -> str:
    if row["baseline"] or row["per_class_mean_diff_points"] is None:
        return ""
    return "none" if change is None else f"{change['class']} {change['points']:+.1f}"


def _row_label(row: dict[str, Any]) -> str:
    """The row's label, marked as the baseline once: a first step the user already named "baseline" (as
    docs/fast-training.md's ablation does) read "baseline (baseline)"."""
    label = str(row["variant"])
    if not row["baseline"] or label.strip().lower() == "baseline":
        return label
    return f"{label} (baseline)"


def format_table(result: dict[str, Any]) -> str:
    stepped = bool(result.get("steps"))
    kind = run_kind(stepped)
    target = result.get("target_top1")
    lines = [
        f"# Ablation of `{result['recipe']}`",
        "",
        (
            f"Varied: {', '.join(v['key'] + ' = ' + ' / '.join(v['values']) for v in result['vary'])}"
            if result["vary"]
            else "Methods added one by one (each row keeps the settings of the rows above): "
            + "; ".join(
                f"{st['label']}: {' '.join(st['settings'][len(prev['settings']) if prev else 0 :]) or '-'}"
                for prev, st in zip([None] + result.get("steps", [])[:-1], result.get("steps", []))
            )
        )
        + (f"; fixed: {' '.join(result['set'])}" if result["set"] else "")
        + ".",
        f"Each run's best.pt evaluated on the {result['split']} split {_samples_text(result['variants'], kind)}"
        + (", the split best.pt was selected on" if result["split"] == "val" else "")
        + "; the first row is the baseline."
        + _unpaired_note(result["variants"]),
        "Per-class diff is the mean over classes of the per-class accuracy change (points); "
        f"p is McNemar's test vs the baseline; the 95% interval is the paired ({PAIRED_INTERVAL_METHOD}) interval "
        f"of the top-1 difference in points, from the {result['split']} samples alone (the noise between training "
        "runs is not in it)."
        + (
            " The row-above columns test each step against the row before it (for the TTA row: the same "
            "checkpoint without TTA)."
            if stepped
            else ""
        )
        + (
            f" Epochs to {100 * target:g}%: the first epoch whose validation top-1 (each run's history, "
            "without TTA) reached it."
            if target is not None
            else ""
        ),
        "",
        f"| {kind} | top-1 | diff | 95% interval | loss | per-class diff | p vs baseline | "
        + ("gain vs row above | its 95% interval | its p | " if stepped else "")
        + "largest class gain | largest class loss | epochs | "
        + (f"epochs to {100 * target:g}% | " if target is not None else "")
        + "train time | params |",
    ]
    lines.append("|" + "---|" * (lines[-1].count("|") - 1))
    for row in result["variants"]:
        test = row["mcnemar_vs_baseline"]
        previous = row.get("vs_previous")
        per_class = row["per_class_mean_diff_points"]
        cells = [
            _row_label(row),
            f"{100 * row['top1']:.2f}%",
            f"{row['top1_diff_points']:+.2f}",
            _interval_text(row.get("diff_interval_vs_baseline")),
            f"{row['loss']:.4f}",
            "" if per_class is None else f"{per_class:+.2f}",
            "" if test is None else f"{test['p_value']:.3g}",
        ]
        if stepped:
            cells += [
                "" if previous is None else f"{previous['top1_diff_points']:+.2f}",
                "" if previous is None else _interval_text(previous["diff_interval"]),
                "" if previous is None or previous["mcnemar"] is None else f"{previous['mcnemar']['p_value']:.3g}",
            ]
        cells += [
            _class_change_text(row, row["largest_class_gain"]),
            _class_change_text(row, row["largest_class_loss"]),
            str(row["epochs"]),
            *([_epochs_to_text(row)] if target is not None else []),
            _duration(row["train_time_s"]),
            f"{row['parameters']:,}",
        ]
        lines.append("| " + " | ".join(map(markdown_cell, cells)) + " |")
    return "\n".join(lines) + "\n"
