"""What a report says in words: its report.md, and the headings and notes of its figures (which model, which
views, which images).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference.files import write_text_atomic
from inference.messages import counted, markdown_cell

from ..inference import TTA_DESCRIPTIONS
from .predictions import METRICS_FILE, PREDICTIONS_FILE, graph_temperature
from .sources import ModelSource


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _top(metrics: dict[str, Any], k: int) -> str:
    """Top-k, or n/a where the model has no more than k classes (every label is then among its top k)."""
    return _pct(metrics[f"top{k}"]) if metrics[f"top{k}"] is not None else "n/a"


def _weakest_and_strongest(per_class: list[dict[str, Any]]) -> list[str]:
    """report.md's line on the weakest and strongest classes. A class is weakest only below the best, and strongest
    only above every weakest one shown: with ties, or few classes, the lists would otherwise name a top class as
    weak, or classes of the same accuracy in both."""
    ranked = sorted((c for c in per_class if c["accuracy"] is not None), key=lambda c: c["accuracy"])
    if len(ranked) < 2:
        return []
    if ranked[0]["accuracy"] == ranked[-1]["accuracy"]:
        every = "Every class" if len(ranked) == len(per_class) else "Every class with images here"
        return ["", f"{every} scored {_pct(ranked[0]['accuracy'])}."]
    weak = [c for c in ranked[: min(5, len(ranked) // 2)] if c["accuracy"] < ranked[-1]["accuracy"]]
    strong = [c for c in ranked[::-1][: min(3, len(ranked) // 2)] if c["accuracy"] > weak[-1]["accuracy"]]
    listed = "Weakest classes: " + ", ".join(f"{c['class']} {_pct(c['accuracy'])}" for c in weak)
    if strong:
        listed += "; strongest: " + ", ".join(f"{c['class']} {_pct(c['accuracy'])}" for c in strong)
    return ["", listed + "."]


def _per_class_table(per_class: list[dict[str, Any]]) -> list[str]:
    """report.md's table of every class, in the model's order: the figures show at most the worst classes and may
    draw a name's characters as boxes, and metrics.json writes a name's non-ASCII characters as escapes."""

    def pct(x: float | None) -> str:
        return _pct(x) if x is not None else "n/a"  # a class without images here has nothing to recall

    lines = [
        "",
        "## Per class",
        "",
        "| class | images | accuracy | precision | recall | F1 |",
        "|---|---|---|---|---|---|",
    ]
    for c in per_class:
        figures = [pct(c[key]) for key in ("accuracy", "precision", "recall", "f1")]
        lines.append(f"| {markdown_cell(c['class'])} | {c['support']} | " + " | ".join(figures) + " |")
    return lines


def write_report_md(path: Path, metrics: dict[str, Any], files: dict[str, str | None], notes: list[str]) -> None:
    src, data = metrics["source"], metrics["data"]
    in_graph = src.get("graph_tta", "none")
    tta = TTA_DESCRIPTIONS[metrics["tta"]] if in_graph == "none" else f"{TTA_DESCRIPTIONS[in_graph]} inside the graph"
    lines = [
        f"# Evaluation of `{src['path']}`",
        "",
        f"{src['kind']} `{src['arch']}` on {metrics['data_description']} "
        f"({counted(metrics['num_samples'], 'image', separator='')}, {counted(metrics['num_classes'], 'class')}), "
        f"{tta}.",
        "",
        "| top-1 | top-3 | top-5 | loss | ECE | macro F1 | mean per-class accuracy |",
        "|---|---|---|---|---|---|---|",
        f"| {_pct(metrics['top1'])} | {_top(metrics, 3)} | {_top(metrics, 5)} | {metrics['loss']:.4f} | "
        f"{metrics['ece']:.4f} | {metrics['macro_avg']['f1']:.4f} | {_pct(metrics['mean_per_class_accuracy'])} |",
        "",
        f"Prediction took {metrics['wall_time_s']:.2f} s ({metrics['images_per_s'] or 0:.0f} images/s) on "
        f"{metrics['device']}.",
    ]
    calibration = metrics.get("calibration") or {}
    if calibration and graph_temperature(src) is not None:
        # the table is of what the model answers, which its graph has already divided by T: a checkpoint's
        # report of the same network shows its raw logits' loss and ECE, so say both
        before = calibration["before"]
        lines += [
            "",
            f"Loss and ECE are of the model's answers, which its graph divides by its temperature "
            f"(T = {calibration['temperature']:.4f}); before it: loss {before['nll']:.4f}, ECE {before['ece']:.4f}, "
            "as a checkpoint's report shows them.",
        ]
    recorded = src.get("recorded_top1")  # this checkpoint's own epoch's: a last.pt's is not the run's best
    if recorded is not None and data["split"] == "val":
        lines += [
            "",
            f"Training recorded {_pct(recorded)} val top-1 for this checkpoint, without test-time augmentation "
            "and in the run's precision (bf16 where its hardware had it); this evaluation runs in fp32, so a few "
            "samples may differ even without augmentation.",
        ]
    lines += _weakest_and_strongest(metrics["per_class"])
    if metrics["top_confusions"]:
        lines += [
            "",
            "Most frequent confusions (true -> predicted): "
            + ", ".join(f"{p['true']} -> {p['predicted']} ({p['count']})" for p in metrics["top_confusions"][:5])
            + ".",
        ]
    cal = metrics.get("calibration")
    if cal:
        lines += [
            "",
            "## Calibration",
            "",
            f"Temperature scaling divides the logits by T = {cal['temperature']:.4f}, "
            f"{cal['temperature_origin']}. ECE over 15 equal-width confidence bins; Brier score summed over "
            "classes.",
            "",
            "| | ECE | NLL | Brier | mean confidence | accuracy |",
            "|---|---|---|---|---|---|",
        ]
        scaled = f"temperature-scaled (T = {cal['temperature']:.3f})"
        for name, key in (("uncalibrated (T = 1)", "before"), (scaled, "after")):
            m = cal[key]
            lines.append(
                f"| {name} | {m['ece']:.4f} | {m['nll']:.4f} | {m['brier']:.4f} | "
                f"{_pct(m['mean_confidence'])} | {_pct(m['accuracy'])} |"
            )
    lines += _per_class_table(metrics["per_class"])
    captions = {
        "confusion_matrix": "Confusion matrix, each row normalised over its true class",
        "per_class_accuracy": "Per-class accuracy; the dashed line is the mean over classes",
        "misclassified": "The most confident mistakes",
        "reliability": "Reliability diagrams before and after temperature scaling: accuracy per confidence bin "
        "against the diagonal of perfect calibration",
        "gradcam": "Grad-CAM heat maps of the predicted class, correct samples (green) then mistakes (red)",
        "training_curves": "Training curves from the run's history",
    }
    lines += ["", "## Figures"]
    for key, caption in captions.items():
        if files.get(key):
            lines += ["", f"**{caption}.**", "", f"![{key}]({files[key]})"]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += [
        "",
        f"All numbers: `{METRICS_FILE}`; per-sample logits and labels: `{PREDICTIONS_FILE}` "
        "(`python -m training compare` pairs two reports).",
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


TTA_SHORT = {"none": "no TTA", "flip": "flip TTA", "multicrop": "multi-crop TTA"}


def model_label(source: ModelSource) -> str:
    if source.kind == "onnx":
        return f"{source.info['name']} ({source.info['precision']} ONNX graph)"
    return f"{source.arch} checkpoint {source.path.parent.name}/{source.path.name}"


def figure_subtitle(source: ModelSource, split: str, tta: str, num_samples: int) -> str:
    """Which model, views and images a report's figures show, for each figure's heading."""
    in_graph = source.info.get("graph_tta", "none") if source.kind == "onnx" else "none"
    views = f"{TTA_SHORT[in_graph]} in the graph" if in_graph != "none" else TTA_SHORT[tta]
    return f"{model_label(source)} · {views} · {split} split, {counted(num_samples, 'image')}"


def confidence_note(source: ModelSource) -> str:
    """What a report's per-sample confidence is: a checkpoint's softmax is before any temperature; a
    calibrated graph answers after its own."""
    t = graph_temperature({"kind": source.kind, "calibration": source.info.get("calibration")})
    if t is not None:
        return f"softmax probability of the predicted class, calibrated (the graph divides by T = {t:.3f})"
    return "softmax probability of the predicted class, uncalibrated (T = 1)"
