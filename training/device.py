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


def numerics_of(device: torch.device, threads: int | None) -> dict[str, str | int]:
    """What a run on ``device`` with ``train.threads`` ``threads`` computes with, keyed as ``NUMERICS_KEYS`` name
    the settings: the device with its index (``cuda`` stands for the current GPU) and the threads torch runs (its
    own count where the setting leaves it). Plain str and int, as a checkpoint read with weights_only holds them."""
    index = torch.cuda.current_device() if device.type == "cuda" and device.index is None else device.index
    return {
        "train.threads": threads or torch.get_num_threads(),
        "train.device": device.type if index is None else f"{device.type}:{index}",
    }
