"""The non-linearity of the residual networks, chosen by name (``activation="gelu"``).

ReLU is the default and the only one the reference numbers were measured with;
the others are ablations. ReLU, ELU and SiLU run in place (they are applied to
fresh BatchNorm outputs); GELU has no in-place form.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..registry import Registry

ACTIVATIONS: Registry = Registry("activation")
ACTIVATIONS.register("relu")(partial(nn.ReLU, inplace=True))
ACTIVATIONS.register("elu")(partial(nn.ELU, inplace=True))
ACTIVATIONS.register("gelu")(nn.GELU)
ACTIVATIONS.register("silu")(partial(nn.SiLU, inplace=True))


def make_activation(name: str) -> nn.Module:
    return ACTIVATIONS.get(name)()
