"""Lookahead of the weights, as airbench uses it (Zhang et al., 2019; Jordan, 2024).

Every ``every`` optimizer steps the slow copy moves toward the network, ``slow += (1 - decay_t) * (net - slow)``,
and the network restarts from the slow copy. ``decay_t = decay**every * progress**3`` is near zero early on (the
network runs free) and reaches ``decay**every`` at the end; the final weights are the slow copy. Floating-point
buffers (BatchNorm statistics) are averaged with the weights, so the copy is a complete model state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inference.messages import counted

from .config import ConfigError


class LookaheadError(ConfigError):
    """A lookahead period the run is too short for: a setting, refused as the others are."""


def check_lookahead(every: int, total_steps: int) -> None:
    """A period of ``every`` optimizer steps that a run of ``total_steps`` can take."""
    if every < 1:
        raise ValueError(f"lookahead needs every >= 1, got {every}")
    if every > total_steps:
        # no step would reach the slow copy, and finishing on it would undo the whole run
        raise LookaheadError(
            f"train.lookahead_every {every} is more than the run's {counted(total_steps, 'optimizer step')}: the "
            f"run would end on its initial weights; set it to at most {total_steps}, or 0 for no lookahead"
        )


class Lookahead:
    def __init__(self, model: nn.Module, every: int, decay: float, total_steps: int) -> None:
        check_lookahead(every, total_steps)
        self.every, self.decay, self.total_steps = every, decay, max(total_steps, 1)
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int) -> float:
        return self.decay**self.every * min(step / self.total_steps, 1.0) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int) -> None:
        """Call after optimizer step number ``step`` (counted from 1)."""
        if step % self.every == 0:
            self._merge(model, self.decay_at(step))

    @torch.no_grad()
    def finish(self, model: nn.Module) -> None:
        """End of training: the network takes the slow weights."""
        self._merge(model, 1.0)

    def _merge(self, model: nn.Module, decay: float) -> None:
        state = model.state_dict()
        for key, slow in self.slow.items():
            slow.lerp_(state[key], 1 - decay)
            state[key].copy_(slow)

    def state_dict(self) -> dict[str, Any]:
        return {"slow": {k: v.clone() for k, v in self.slow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state["slow"].items():
            self.slow[key].copy_(value)
