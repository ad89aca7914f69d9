"""airbench94's own ``bn_momentum`` argument is refused outside (0, 1], as ``model.bn_momentum`` is: at 0 the
running statistics stay at their initial mean 0 and variance 1, and the trained network was evaluated and
exported with them, silently."""

from __future__ import annotations

import pytest
from torch import nn

from training.config import ConfigError
from training.config_recipes import build_config
from training.models import create_model
from training.preflight import check_network_takes_its_input


@pytest.mark.parametrize("momentum", ["0", "-0.4", "2"])
def test_an_airbench_bn_momentum_outside_0_to_1_is_refused_before_the_data_is_read(momentum):
    cfg = build_config("airbench94", [f"model.args.bn_momentum={momentum}"])
    with pytest.raises(ConfigError, match=r"bn_momentum .* must be above 0 and at most 1"):
        check_network_takes_its_input(cfg)


@pytest.mark.parametrize("momentum", [0.4, 1.0])
def test_an_airbench_bn_momentum_in_range_is_every_batchnorms(momentum):
    model = create_model("airbench94", 10, widths=(8, 8, 8), bn_momentum=momentum)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == momentum for m in norms)
