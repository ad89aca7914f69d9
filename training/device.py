"""The device a run trains or a model is evaluated on, as ``train.device`` or ``--device`` names it."""

from __future__ import annotations

import torch

from .config import ConfigError, device_remedy


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # the names train.device takes, so that a run and its evaluation accept the same: torch's parser takes meta too
    remedy = device_remedy(name)
    if remedy:
        raise ConfigError(f"device {name!r}: not a device; {remedy}")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: this machine has no usable CUDA GPU; use cpu (or auto)")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    return device
