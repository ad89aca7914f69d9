"""Re-derive a shipped model from its FP32 graph when the checkpoint it came from is gone.

The FP32 graph was verified against its checkpoint when it was exported, so it can stand in for it: a
temperature is fitted on its validation-split logits and appended to the graph as a last Div node, a
precision's converter runs on that graph, and parity is measured against the FP32 graph's logits divided
by the same T. Everything else on the card (input spec, classes, the checkpoint it came from) is kept;
``source["derived_from"]`` names the graph and its sha256. A graph that is calibrated already (``--calibrate
none``) is converted as it is, and the derived card keeps its calibration record.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
import onnxruntime
from onnx import helper, numpy_helper

from inference.devices import DeviceKind
from inference.errors import UsageError
from inference.fits import FitName
from inference.manifest import CALIBRATION_METHODS, ModelCard, ModelEntry, sha256_file
from inference.precisions import PrecisionName
from inference.runtime import OnnxClassifier
from training.dataset_cache import DEFAULT_CACHE_DIR

from .calibration import fit_calibration
from .card import temperature_text
from .onnx_export import writing
from .parity import Parity, onnx_logits, parity_against
from .pipeline import check_calibration_options, convert_variant, publish
from .record import check_replacement, record_entry
from .sources import from_project, source_at, validation_split
from .verify import listed_model
from .workspace import workspace


def append_temperature(src: Path, dst: Path, temperature: float) -> None:
    """Copy the graph with its output divided by ``temperature`` (the output keeps its name)."""
    model = onnx.load(str(src))
    graph = model.graph
    output = graph.output[0].name
    raw = f"{output}_before_temperature"
    for node in graph.node:
        node.output[:] = [raw if name == output else name for name in node.output]
        node.input[:] = [raw if name == output else name for name in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array(temperature, np.float32), "calibration_temperature"))
    graph.node.append(helper.make_node("Div", [raw, "calibration_temperature"], [output], name="temperature"))
    onnx.checker.check_model(model, full_check=True)
    with writing(dst):
        onnx.save(model, str(dst))


def rederive(
    reference: str,
    name: str,
    precision: PrecisionName = "fp32",
    models_dir: str | Path = "models",
    make_default: bool = False,
    calibrate: str = "temperature",
    calibration_count: int | None = None,
    cache_dir: str | None = DEFAULT_CACHE_DIR,
    max_val_images: int | None = None,
    fit: FitName | None = None,
    default_for: Sequence[DeviceKind] = (),
    activation_ranges: str | None = None,
    data_root: str | None = None,
    replace: bool = False,
) -> tuple[ModelEntry, Parity]:
    """``fit``: the derived card's fit for photos of another shape (inference.fits); default the reference's.
    ``activation_ranges`` (INT8 only): how the activations' ranges are calibrated (export/int8_ranges.py).
    ``data_root``: where the reference's dataset is now (``--data``), if it has moved since its training.
    ``replace``: another model listed under ``name`` may be replaced; naming the reference itself replaces it."""
    check_calibration_options(precision, activation_ranges, calibration_count)
    if calibrate not in CALIBRATION_METHODS:
        raise UsageError(f"unknown calibration {calibrate!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    models_dir = Path(models_dir)
    listed = listed_model(models_dir, reference)
    ref = listed.entry
    if ref.precision != "fp32":
        raise UsageError(f"{reference} is {ref.precision}: re-derive from an FP32 graph")
    replaces = check_replacement(
        models_dir, name, ref.arch, ref.classes, precision, replace or name == reference, max_val_images
    )
    inherited = ref.calibration.method != "none"
    if inherited and calibrate != "none":
        raise UsageError(
            f"{reference} is already calibrated (T={temperature_text(ref.calibration.temperature)}): derive from it "
            "with --calibrate none, or from the uncalibrated graph"
        )
    # the card records its data relative to the project (where exports run): found from any folder, as verify finds it
    recorded = {**listed.source.model_dump(), "data_root": from_project(listed.source.data_root, models_dir)}
    source = source_at(recorded, cache_dir, data_root)
    val = validation_split(source, max_val_images, ref.classes, moved=data_root is not None)
    final = models_dir / f"{name}.onnx"
    with workspace(models_dir) as tmp:
        ref_path, fp32, out = tmp / "reference.onnx", tmp / "fp32.onnx", tmp / "model.onnx"
        # One copy, read once: another command may replace the listed file meanwhile, and the card names this one.
        try:
            shutil.copyfile(models_dir / ref.file, ref_path)
            unchanged = sha256_file(ref_path) == ref.sha256
        except FileNotFoundError:
            unchanged = False
        if not unchanged:
            raise UsageError(
                f"{reference}'s file {ref.file} was replaced or removed by another command while this one ran: "
                "nothing was recorded; run the command again"
            )
        ref_logits, ref_speed = onnx_logits(OnnxClassifier(ref_path, device="cpu"), val.images)
        # A calibrated reference already divides by its T: the derived graph inherits the division and its record.
        # Otherwise T is fitted as export fits it, so a T that means little (every image right) is said on the card.
        graph = f"the FP32 graph {ref.file} (sha256 {ref.sha256[:12]})"
        calibration = (
            ref.calibration if inherited else fit_calibration(ref_logits, val.labels, calibrate, graph, "logits")
        )
        card = ModelCard(
            **{
                **ref.model_dump(include=set(ModelCard.model_fields)),
                "name": name,
                "precision": precision,
                "metrics": {"val_top1": 0.0},
                "calibration": calibration,
                "input": {**ref.input.model_dump(), "fit": fit or ref.input.fit},  # validated with the card
                "source": {
                    **ref.source,  # the whole record carried on, keys that no type here names included
                    "onnxruntime": onnxruntime.__version__,
                    "onnx": onnx.__version__,
                    "derived_from": {"name": ref.name, "file": ref.file, "sha256": ref.sha256},
                },
            }
        )
        if calibration.method == "temperature" and not inherited:
            append_temperature(ref_path, fp32, calibration.temperature)
        else:
            shutil.copyfile(ref_path, fp32)
        convert_variant(fp32, out, card, source, calibration_count, activation_ranges)
        parity, logits = parity_against(
            ref_logits if inherited else ref_logits / calibration.temperature,
            ref_speed,
            OnnxClassifier(out, device="cpu"),
            val.images,
            val.labels,
            split_images=source["val_size"],
            reference="FP32 graph",
        )
        publish(out, card, parity, logits, val.labels, f" against {ref.file}")
        return record_entry(card, out, final, models_dir, make_default, default_for, replaces=replaces), parity
