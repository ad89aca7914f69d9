"""How static INT8 quantisation picks each activation's range from the calibration images: one entry per
method, read by the CLI (choices and help, without importing ONNX Runtime) and by the INT8 converter.

MinMax covers every value seen, so one outlier widens the range and coarsens the steps for all the others;
percentile and entropy clip the tail. Networks with heavy-tailed activations (attention, GELU, LayerNorm:
the registry's ViT and EdgeNeXt) are where clipping can pay; on the shipped convnets it changes nothing
measurable (docs/deploy.md, "INT8 activation ranges").
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Training-split images the activations' ranges are computed on, unless --calibration-images says otherwise.
DEFAULT_CALIBRATION_IMAGES = 1000


@dataclass(frozen=True)
class ActivationRange:
    name: str
    ort_method: str  # a member of onnxruntime.quantization.CalibrationMethod
    label: str  # recorded on the model card
    help: str
    # quantize_static extra_options for this method
    options: dict[str, float | int | bool] = field(default_factory=dict)
    # ONNX Runtime's histogram collectors stack every batch into one array: the batches must be of one size
    equal_batches: bool = False


ACTIVATION_RANGES: dict[str, ActivationRange] = {
    r.name: r
    for r in (
        ActivationRange("minmax", "MinMax", "MinMax", "the smallest and largest value seen (default)"),
        ActivationRange(
            "percentile",
            "Percentile",
            "Percentile 99.999",
            "the 99.999th percentile of the absolute values: clips the rarest outliers",
            {"CalibPercentile": 99.999},
            equal_batches=True,
        ),
        ActivationRange(
            "entropy",
            "Entropy",
            "Entropy (KL)",
            "the range whose quantised histogram is closest (KL divergence) to the float one, as TensorRT does",
            equal_batches=True,
        ),
    )
}
DEFAULT_ACTIVATION_RANGE = "minmax"


def activation_range(name: str) -> ActivationRange:
    try:
        return ACTIVATION_RANGES[name]
    except KeyError:
        raise ValueError(f"unknown INT8 activation range {name!r}; valid: {', '.join(ACTIVATION_RANGES)}") from None


def ranges_help() -> str:
    return "; ".join(f"{r.name}: {r.help}" for r in ACTIVATION_RANGES.values())
