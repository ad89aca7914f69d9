"""The precisions a model can be exported at: one entry each, read by export, verify, the manifest and the CLI.

A new precision is one entry here, its name in ``PrecisionName``, plus its converter in ``export/variants.py``
(``CONVERTERS``); tests check that all three exist for every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

from .errors import UsageError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True)
class Precision:
    name: str
    help: str  # what it is, for `python -m export --help`
    # Parity with the FP32 PyTorch checkpoint on the validation split that export and verify demand:
    tolerance_points: float  # most |ONNX top-1 - PyTorch top-1|, in percentage points
    min_agreement: float | None  # least share of images whose top-1 class both agree on; None: not checked
    max_prob_diff: float | None  # most |ONNX probability - PyTorch probability| over every image and class
    providers: tuple[str, ...]  # the ONNX Runtime providers it is meant for, most suited first


# Each limit leaves the shipped models' recorded parity a wide margin (models/manifest.json; `python -m export card`
# prints it).
PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision(
            "fp32",
            "full precision",
            tolerance_points=0.05,
            min_agreement=0.999,
            max_prob_diff=1e-4,
            providers=(CPU, CUDA),
        ),
        Precision(
            "fp16",
            "float16 inside, float32 inputs and outputs",
            tolerance_points=0.1,
            min_agreement=0.995,
            max_prob_diff=None,
            providers=(CUDA,),
        ),
        Precision(
            "int8",
            "static quantisation calibrated on training images",
            tolerance_points=0.5,
            min_agreement=0.98,
            max_prob_diff=None,
            providers=(CPU,),
        ),
    )
}
# The manifest's type for a precision: the table's names, in its order. Spelt out, since a type checker cannot read
# a Literal off the table; tests/test_fit.py checks that they agree.
PrecisionName = Literal["fp32", "fp16", "int8"]

_PROVIDER_WORDS = {CPU: "CPUs", CUDA: "GPUs"}
# The provider each kind of host (inference.devices.DEVICE_KINDS) serves its models with.
_KIND_PROVIDERS = {"cpu": CPU, "cuda": CUDA}


def precision(name: str) -> Precision:
    """The entry for ``name``; a UsageError (a ValueError) naming the valid ones otherwise."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise UsageError(f"unknown precision {name!r}; valid: {', '.join(PRECISIONS)}") from None


def suits(entry: Precision) -> str:
    """'CPUs', 'GPUs' or 'CPUs and GPUs': the hardware a precision is meant for, in words."""
    return " and ".join(_PROVIDER_WORDS[p] for p in entry.providers)


def tolerance_text() -> str:
    """The tolerances, as verify's help states them: 'FP32: 0.05 points, 99.9% agreement, |dp| 0.0001; ...'."""
    parts = []
    for entry in PRECISIONS.values():
        limits = [f"{entry.tolerance_points:g} points"]
        if entry.min_agreement is not None:
            limits.append(f"{100 * entry.min_agreement:g}% agreement")
        if entry.max_prob_diff is not None:
            limits.append(f"|dp| {entry.max_prob_diff:g}")
        parts.append(f"{entry.name.upper()}: {', '.join(limits)}")
    return "; ".join(parts)


def unsuited_hosts(name: str, precision_name: str, kinds: Sequence[str]) -> str | None:
    """A warning when model ``name`` becomes the default on ``kinds`` of host its precision is not meant for
    (an FP16 graph on CPU hosts, an INT8 one on GPU hosts): it runs there, slowly, so it is not refused."""
    entry = precision(precision_name)
    unsuited = [kind for kind in kinds if _KIND_PROVIDERS[kind] not in entry.providers]
    if not unsuited:
        return None
    hosts = " and ".join(_PROVIDER_WORDS[_KIND_PROVIDERS[kind]].removesuffix("s") + " hosts" for kind in unsuited)
    return (
        f"{name} is now the default on {hosts}, but {entry.name.upper()} is meant for {suits(entry)}: it runs "
        f"there, slowly; `python -m export default NAME --for {unsuited[0]}` names a model that suits them"
    )
