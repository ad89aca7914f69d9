"""Two models on the same samples: accuracy of each, the difference, and McNemar's test.

Each side is a checkpoint (file, or run folder holding best.pt), an ONNX file, or a report folder
written by ``evaluate`` (its predictions.npz is paired sample by sample). Reports of different
sample sets are refused: the test is only valid on paired predictions. Two sides that list the same classes
in other orders are paired by class name: B's labels and predictions are put in A's order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from inference.classes import folded
from inference.errors import UsageError
from inference.files import write_text_atomic
from inference.messages import display_width, pad

from ..data import ImageArrays
from ..plots import CurveInfo, plot_compared_curves
from .metrics import PAIRED_INTERVAL_METHOD, mcnemar, paired_difference_interval
from .predictions import PREDICTIONS_FILE, load_predictions
from .samples import (
    class_order,
    fingerprint_by_name,
    in_class_order,
    match_classes,
    names_text,
    no_samples,
    resolve_data,
    same_classes,
    sample_fingerprint,
)
from .sources import ModelSource, check_finite, check_view, load_model

CURVES_FILE = "curves.png"
COMPARISON_HEADER = "# Comparison\n\n"


@dataclass
class Side:
    name: str
    kind: str  # "report" | "checkpoint" | "onnx"
    labels: np.ndarray
    predictions: np.ndarray
    classes: list[str]
    fingerprint: str
    data: dict[str, Any]
    tta: str
    history: list[dict] = field(default_factory=list)  # the training run's, per epoch, where it is known
    curves: CurveInfo = field(default_factory=CurveInfo)  # what that history measures
    graph_tta: str = "none"  # the views an ONNX graph averages itself, whatever ``tta`` was asked for
    # The samples with their classes by name (None: a report written before reports kept it).
    fingerprint_by_name: str | None = None
    # A model's side: the images it scored, labels in its own order, to digest them in a report's order.
    arrays: ImageArrays | None = None

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.labels

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean())


# The kinds of file an evaluate report writes (predictions, metrics, report.md, figures): a checkpoint kept in a
# report's folder (an ensemble's --out, a .pth, a copy with no suffix) is still read as one
_REPORT_SUFFIXES = (".npz", ".json", ".md", ".png")


def classify(path: str | Path) -> str:
    path = Path(path)
    if path.suffix == ".onnx":
        return "onnx"
    if path.is_dir() and (path / PREDICTIONS_FILE).is_file():
        return "report"
    if path.is_file() and path.suffix.lower() in _REPORT_SUFFIXES and (path.parent / PREDICTIONS_FILE).is_file():
        # metrics.json or predictions.npz named for its report: read as a checkpoint, it was "not a checkpoint"
        raise UsageError(f"{path} is a file of the report in {path.parent}: give the report's folder, {path.parent}")
    if path.is_file() or (path.is_dir() and (path / "best.pt").is_file()):
        return "checkpoint"
    what = "a checkpoint, a run folder with best.pt, an .onnx file or a report folder with " + PREDICTIONS_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (give {what})")
    if path.is_dir() and (path / "last.pt").is_file():  # a run stopped before its best.pt, or one that lost it
        raise FileNotFoundError(
            f"{path} is a run folder without best.pt: give its {path / 'last.pt'} (the last saved epoch), or "
            "finish the run"
        )
    raise FileNotFoundError(f"{path} is not {what}")


def _report_side(path: Path) -> Side:
    report = load_predictions(path)
    metrics = report["metrics"]
    return Side(
        str(path),
        "report",
        report["labels"],
        report["predictions"],
        report["classes"],
        report["fingerprint"],
        metrics.get("data", {}),
        metrics.get("tta", "none"),
        report["history"],
        CurveInfo(**((metrics.get("source") or {}).get("curves") or {})),
        (metrics.get("source") or {}).get("graph_tta", "none"),
        report["fingerprint_by_name"],
    )


def _model_side(
    source: ModelSource,
    path: Path,
    kind: str,
    data_args: dict[str, Any],
    defaults: dict[str, Any],
    tta: str,
    batch_size: int,
    loaded: dict[tuple, ImageArrays],
) -> Side:
    spec = resolve_data(source, defaults=defaults, **data_args)
    key = tuple(sorted(asdict(spec).items()))
    if key not in loaded:  # both sides on the same split: load it once
        loaded[key] = spec.load()
    if len(loaded[key]) == 0:
        raise no_samples(spec, data_args.get("val_size") is not None, "compare")
    check_view(source, tta)
    data, _ = match_classes(source, loaded[key], spec)
    fingerprint = sample_fingerprint(data)
    by_name = fingerprint_by_name(data, source.classes)
    logits, _ = source.predict(data, tta, batch_size)
    check_finite(source, logits)  # as evaluate refuses it: the argmax of NaN is an arbitrary class, paired anyway
    return Side(
        str(path),
        kind,
        data.labels,
        logits.argmax(1),
        source.classes,
        fingerprint,
        {**spec.record(), "fingerprint": fingerprint, "fingerprint_by_name": by_name},
        tta,
        source.history,
        CurveInfo(**source.info.get("curves", {})),
        source.info.get("graph_tta", "none"),
        by_name,
        ImageArrays(data.images, data.labels, list(source.classes)),
    )


def compare(
    a: str | Path,
    b: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    split: str | None = None,
    val_size: int | None = None,
    split_seed: int | None = None,
    cache_dir: str | None = None,
    tta: str = "none",
    batch_size: int = 256,
    device: str = "auto",
    alpha: float = 0.05,
) -> dict[str, Any]:
    kinds = [classify(a), classify(b)]
    reports = [_report_side(Path(p)) if k == "report" else None for p, k in zip((a, b), kinds)]
    # A model compared with a report is evaluated on the report's samples unless told otherwise.
    report_data = next((s.data for s in reports if s is not None), {})
    defaults = {k: report_data.get(k) for k in ("dataset", "root", "val_size", "split_seed", "cache_dir")}
    data_args = {
        "dataset": dataset,
        "root": root,
        "split": split or report_data.get("split", "val"),
        "val_size": val_size,
        "split_seed": split_seed,
        "cache_dir": cache_dir,
    }
    # Each of A and B: its report's side, or its model. Both models are loaded before either is evaluated: a B
    # that is no model, or a model of another task, is refused before A's pass over the data, which can take minutes.
    inputs: list[Side | ModelSource] = [
        side if side is not None else load_model(p if k == "checkpoint" else None, p if k == "onnx" else None, device)
        for p, k, side in zip((a, b), kinds, reports)
    ]
    # A prediction is an index into its own model's classes: B's are put in A's order by name, and other names
    # are refused, since no order would pair them.
    same_order = same_classes(inputs[0].classes, inputs[1].classes)
    order = None if same_order else class_order(inputs[0].classes, inputs[1].classes)
    if not same_order and order is None:
        raise UsageError(classes_differ(inputs[0].classes, inputs[1].classes))
    loaded: dict[tuple, ImageArrays] = {}
    side_a, side_b = [
        x if isinstance(x, Side) else _model_side(x, Path(path), kind, data_args, defaults, tta, batch_size, loaded)
        for x, path, kind in zip(inputs, (a, b), kinds)
    ]
    if not _same_samples(side_a, side_b, order):
        settings = ("root", "split", "val_size", "split_seed", "image_size", "fit")
        differ = [k for k in settings if side_a.data.get(k) != side_b.data.get(k)]
        why = "".join(f", {k} {side_a.data.get(k)} vs {side_b.data.get(k)}" for k in differ)
        if differ:
            why = "; their data settings differ: " + why[2:]
        if "fit" in differ:
            why += " (each model reads images fitted as its run trained)"
        raise UsageError(
            f"A and B were evaluated on different samples (A: {len(side_a.labels)} of "
            f"{side_a.data.get('dataset')} {side_a.data.get('split')}, B: {len(side_b.labels)} of "
            f"{side_b.data.get('dataset')} {side_b.data.get('split')}; fingerprints {side_a.fingerprint[:12]} vs "
            f"{side_b.fingerprint[:12]}{why}): evaluate both on the same --data and --split"
        )
    notes = []
    if order is not None:
        side_b = _in_order_of(side_b, order, side_a.classes)
        notes.append(another_order_note("B", inputs[1].classes, "A's"))
    test = mcnemar(side_a.correct, side_b.correct)
    difference = side_b.accuracy - side_a.accuracy
    low, high = paired_difference_interval(side_a.correct, side_b.correct, 1 - alpha)
    return {
        "a": {
            "path": side_a.name,
            "kind": side_a.kind,
            "tta": side_a.tta,
            "graph_tta": side_a.graph_tta,
            "top1": side_a.accuracy,
            "correct": int(side_a.correct.sum()),
        },
        "b": {
            "path": side_b.name,
            "kind": side_b.kind,
            "tta": side_b.tta,
            "graph_tta": side_b.graph_tta,
            "top1": side_b.accuracy,
            "correct": int(side_b.correct.sum()),
        },
        "num_samples": int(len(side_a.labels)),
        "data": side_a.data,
        "difference_points": 100 * difference,
        # Sample noise only: a second training run of either model would move its accuracy as well.
        "difference_interval_points": [100 * low, 100 * high],
        "interval_confidence": 1 - alpha,
        "interval_method": PAIRED_INTERVAL_METHOD,
        "mcnemar": test,
        "alpha": alpha,
        "significant": bool(test["p_value"] < alpha),
        "notes": notes,
        "histories": {"a": side_a.history, "b": side_b.history},
        "curves": {"a": asdict(side_a.curves), "b": asdict(side_b.curves)},
    }


def _same_samples(a: Side, b: Side, order: np.ndarray | None) -> bool:
    """Whether A and B were scored on the same images with the same labels, B's classes being A's in ``order``
    (None: in A's own). Their digests by class name say it whatever the order; a report written before reports
    kept one has only its digest of labels as indices into its own order, which a model's side can reproduce
    (its images, its labels put in that order) and another report cannot: that is refused, saying what to do."""
    if len(a.labels) != len(b.labels):
        return False
    if a.fingerprint_by_name is not None and b.fingerprint_by_name is not None:
        return a.fingerprint_by_name == b.fingerprint_by_name
    if order is None:
        return a.fingerprint == b.fingerprint
    if b.arrays is not None:
        return in_class_order(b.arrays, b.classes, a.classes).fingerprint() == a.fingerprint
    if a.arrays is not None:
        return in_class_order(a.arrays, a.classes, b.classes).fingerprint() == b.fingerprint
    old = [x for x, side in (("A", a), ("B", b)) if side.fingerprint_by_name is None]
    first = next(i for i, (x, y) in enumerate(zip(a.classes, b.classes)) if folded(x) != folded(y))
    said = (
        f"report {old[0]} (an earlier version's) holds its labels as indices into its own order only: evaluate it"
        if len(old) == 1
        else "both reports (an earlier version's) hold their labels as indices into their own orders only: evaluate "
        "them"
    )
    raise UsageError(
        f"A and B predict the same {len(a.classes)} classes in different orders (from index {first}: A "
        f"{a.classes[first]}, B {b.classes[first]}), and {said} again, or compare the models"
    )


def another_order_note(side: str, classes: list[str], matched_to: str) -> str:
    """The note that ``side``, listing ``classes``, was paired by class name with ``matched_to`` (a possessive:
    "A's"): compare's and the ensemble estimate's, in one wording."""
    return (
        f"{side} lists the classes in another order ({names_text(classes, 5)}): its labels and predictions are "
        f"matched to {matched_to} classes by name"
    )


def _in_order_of(side: Side, order: np.ndarray, classes: list[str]) -> Side:
    """``side`` with its labels and predictions as indices into ``classes``, its own being ``classes`` in
    ``order`` (``samples.class_order``)."""
    return replace(side, labels=order[side.labels], predictions=order[side.predictions], classes=list(classes))


def classes_differ(a: list[str], b: list[str], shown: int = 10) -> str:
    """The refusal of A and B that do not predict the same classes: both lists where they are short, else what
    one has and the other lacks (a hundred names each would bury that)."""
    in_a, in_b = {folded(c) for c in a}, {folded(c) for c in b}
    only_a, only_b = [c for c in a if folded(c) not in in_b], [c for c in b if folded(c) not in in_a]
    differ = f"only A: {names_text(only_a, 5) or 'none'}; only B: {names_text(only_b, 5) or 'none'}"
    if not only_a and not only_b:  # the same names, but two of one list fold alike: no name tells them apart
        twice = next(c for names in (a, b) for i, c in enumerate(names) if folded(c) in map(folded, names[:i]))
        return (
            f"A and B predict classes of the same names, but one of them has two classes named {twice} (ignoring "
            "case): their predictions cannot be matched by name; rename one of those classes"
        )
    if len(a) != len(b):
        return f"A has {len(a)} classes and B has {len(b)} ({differ}): not the same task"
    if len(a) <= shown:
        both = in_a & in_b
        return f"A predicts the classes {', '.join(a)} and B {', '.join(b)}: not the same task" + (
            f" ({differ})" if both else ""
        )
    return (
        f"A predicts classes B does not ({names_text(only_a, 5) or 'none'}) and B classes A does not "
        f"({names_text(only_b, 5) or 'none'}): not the same task"
    )


def confidence_percent(confidence: float) -> str:
    """0.95 -> "95%", 0.999 -> "99.9%": not rounded to whole points, which would call --alpha 0.001's interval a
    100% one."""
    return f"{round(100 * confidence, 6):g}%"


def views_text(tta: str, graph_tta: str) -> str:
    """The views a side's predictions average, in words ("" for one view): an ONNX graph's own flip TTA is not
    the --tta its evaluation asked for, which is then none."""
    if graph_tta != "none":
        return f"tta {graph_tta}, averaged inside its graph"
    return f"tta {tta}" if tta != "none" else ""


def format_comparison(result: dict[str, Any]) -> str:
    a, b, test = result["a"], result["b"], result["mcnemar"]
    low, high = result["difference_interval_points"]
    n = result["num_samples"]
    data = result["data"]
    verdict = ("significant" if result["significant"] else "not significant") + f" at alpha = {result['alpha']}"
    width = max(display_width(a["path"]), display_width(b["path"]))

    def tta(side: dict[str, Any]) -> str:
        said = views_text(side["tta"], side["graph_tta"])
        return f"  ({said})" if said else ""

    return "\n".join(
        [
            f"samples: {n} ({data.get('dataset')} {data.get('root')}, split {data.get('split')})",
            f"A  {pad(a['path'], width)}  top-1 {100 * a['top1']:6.2f}%  ({a['correct']}/{n}){tta(a)}",
            f"B  {pad(b['path'], width)}  top-1 {100 * b['top1']:6.2f}%  ({b['correct']}/{n}){tta(b)}",
            f"difference B - A: {result['difference_points']:+.2f} points, "
            f"{confidence_percent(result['interval_confidence'])} interval {low:+.2f} to {high:+.2f} (paired, "
            f"{result['interval_method']}; the samples' noise, not that between training "
            "runs)",
            f"McNemar ({test['method']}): A right & B wrong = {test['a_right_b_wrong']}, "
            f"A wrong & B right = {test['a_wrong_b_right']}, statistic = {test['statistic']:.3f}, "
            f"p = {test['p_value']:.4g} -> {verdict}",
            *(f"note: {note}" for note in result.get("notes", [])),
        ]
    )


def check_comparison_out(out_dir: Path) -> None:
    """A comparison folder is a comparison's own: in a run's or a report's folder, or one of someone's files,
    its compare.md and curves would replace theirs (or sit among them, as if theirs). An earlier comparison
    (its compare.json) is rewritten."""
    if not out_dir.is_dir() or (out_dir / "compare.json").is_file():
        return
    others = sorted(p.name for p in out_dir.iterdir() if not p.name.startswith(".") and not _left_by_comparison(p))
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise UsageError(f"--out {out_dir} holds files and no comparison ({shown}): write it to a new or empty folder")


def _left_by_comparison(path: Path) -> bool:
    """A file a comparison stopped midway leaves (its compare.json is written last): the figure, or its own
    compare.md, not someone's of that name."""
    if path.name == CURVES_FILE:
        return True
    try:
        return path.name == "compare.md" and path.read_text().startswith(COMPARISON_HEADER)
    except (OSError, UnicodeDecodeError):
        return False


def write_comparison(result: dict[str, Any], out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    check_comparison_out(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The histories are the runs' own (history.json beside each); the figure below is what they are here for.
    saved = {k: v for k, v in result.items() if k not in ("histories", "curves")}
    text = COMPARISON_HEADER + "```\n" + format_comparison(result) + "\n```\n"
    # The earlier comparison's files go first: a figure that fails (or one this comparison has none of) must not
    # stand beside the new numbers, nor the old numbers beside a new figure.
    for name in ("compare.json", "compare.md", CURVES_FILE):
        (out_dir / name).unlink(missing_ok=True)
    histories = result["histories"]
    if histories["a"] and histories["b"]:
        # Both sides come from training runs: their learning curves on shared axes.
        labels = {"a": f"A {result['a']['path']}", "b": f"B {result['b']['path']}"}
        plot_compared_curves(
            {labels[k]: histories[k] for k in ("a", "b")},
            out_dir / CURVES_FILE,
            {labels[k]: CurveInfo(**result["curves"][k]) for k in ("a", "b")},
        )
        text += f"\n![learning curves of A and B]({CURVES_FILE})\n"
    write_text_atomic(out_dir / "compare.md", text)
    write_text_atomic(out_dir / "compare.json", json.dumps(saved, indent=2))  # last: its presence says whole
    return out_dir
