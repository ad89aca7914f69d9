"""A report folder's per-sample predictions (predictions.npz), and the files beside them that a comparison or an
ensemble estimate reads back: metrics.json and the run's history.json.

``logits_before_temperature`` gives a report's logits as its network computes them, before any temperature a
calibrated ONNX graph divides by: reports of both kinds compare (or average) on equal terms only like this.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from inference.errors import UsageError
from inference.files import write_atomic

from .calibration import undo_temperature

PREDICTIONS_FILE = "predictions.npz"
METRICS_FILE = "metrics.json"


# The run's per-epoch history, kept with the report so a comparison of two reports can draw both curves.
HISTORY_FILE = "history.json"


PREDICTION_KEYS = ("logits", "labels", "classes", "fingerprint")  # what a report's predictions need (_savez)


def save_predictions(
    path: Path,
    logits: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    fingerprint: str,
    fingerprint_by_name: str | None = None,
) -> None:
    """``fingerprint`` digests the labels as indices into ``classes``, ``fingerprint_by_name`` as class names
    (``samples.fingerprint_by_name``): a comparison pairs it with a model listing the classes in another order."""
    write_atomic(path, lambda f: _savez(f, logits, labels, classes, fingerprint, fingerprint_by_name))


def _savez(
    f, logits: np.ndarray, labels: np.ndarray, classes: list[str], fingerprint: str, fingerprint_by_name: str | None
) -> None:
    arrays = {
        "logits": logits.astype(np.float32),
        "labels": labels.astype(np.int64),
        "predictions": logits.argmax(1).astype(np.int64),
        "classes": np.array(classes),
        "fingerprint": np.array(fingerprint),
    }
    if fingerprint_by_name is not None:
        arrays["fingerprint_by_name"] = np.array(fingerprint_by_name)
    np.savez_compressed(f, **arrays)


def load_predictions(report_dir: str | Path) -> dict[str, Any]:
    """A report folder's per-sample predictions plus its metrics.json (under ``metrics``) and the run's
    history (under ``history``; empty for a report of a model without one, or written before reports kept it)."""
    report_dir = Path(report_dir)
    path = report_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {PREDICTIONS_FILE} in {report_dir}: re-run `python -m training evaluate`")
    metrics_path = report_dir / METRICS_FILE
    if not metrics_path.is_file():  # written last: an evaluation stopped part-way leaves only the predictions
        raise FileNotFoundError(
            f"no {METRICS_FILE} in {report_dir}: the report is incomplete; re-run `python -m training evaluate`"
        )
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise UsageError(f"{path} is damaged ({exc}): re-run `python -m training evaluate`") from None
    missing = [key for key in PREDICTION_KEYS if key not in out]
    if missing:
        raise UsageError(f"{path} holds no {', '.join(missing)}: not a report's; re-run `python -m training evaluate`")
    if "predictions" not in out:  # derived from the logits: a file written by hand (or a tool) may leave it out
        out["predictions"] = out["logits"].argmax(1)
    out["fingerprint"] = str(out["fingerprint"])
    # None in a report written before reports kept it: only its class order's index fingerprint pairs it then
    out["fingerprint_by_name"] = str(out["fingerprint_by_name"]) if "fingerprint_by_name" in out else None
    out["classes"] = [str(c) for c in out["classes"]]
    out["metrics"] = read_json(metrics_path)
    if not isinstance(out["metrics"], dict) or not all(
        isinstance(out["metrics"].get(section, {}), dict) for section in ("source", "data")
    ):
        raise UsageError(f"{metrics_path} is not a report's metrics (edited?): re-run `python -m training evaluate`")
    history_path = report_dir / HISTORY_FILE
    out["history"] = read_json(history_path) if history_path.is_file() else []
    if not isinstance(out["history"], list) or not all(isinstance(epoch, dict) for epoch in out["history"]):
        raise UsageError(f"{history_path} is not a run's history (a list of epochs): copy the run's own, or delete it")
    return out


def graph_temperature(source: dict[str, Any]) -> float | None:
    """The temperature a report's calibrated ONNX graph divides its logits by (its card's); None for a checkpoint
    or a graph without one."""
    calibration = source.get("calibration") or {}
    if source.get("kind") == "onnx" and calibration.get("method") == "temperature":
        return float(calibration["temperature"])
    return None


def logits_before_temperature(report: dict[str, Any]) -> np.ndarray:
    """A loaded report's logits as its network computes them: a calibrated ONNX graph answers its logits divided
    by the temperature in its card, a checkpoint its raw logits. Reports of both kinds compare (or average) on
    equal terms only like this."""
    t = graph_temperature(report["metrics"].get("source") or {})
    return report["logits"] if t is None else undo_temperature(report["logits"], t)


def read_json(path: Path) -> Any:
    """A report's or a run's JSON file; a damaged one is named, with what to do."""
    try:
        return json.loads(path.read_text())
    except ValueError as exc:  # also bytes that are not UTF-8
        raise UsageError(f"{path} is not valid JSON ({exc}): it was cut short or edited; write it again") from None
