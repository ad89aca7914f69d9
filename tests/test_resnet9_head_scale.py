"""ResNet-9's logit scale, `model.args.head_scale` as docs/fast-training.md's table of methods names it: a
setting of resnet9 and resnet9_half (it was not: "takes no argument 'head_scale'"), 1/8 unless set, and a scale
that cannot work refused when the network is built."""

from __future__ import annotations

import pytest
import torch

from training.config import Config, ConfigError
from training.models import create_model
from training.preflight import check_network_takes_its_input


@pytest.mark.parametrize("name", ["resnet9", "resnet9_half"])
def test_head_scale_is_a_model_argument_that_scales_the_logits(name):
    torch.manual_seed(0)
    default = create_model(name).eval()
    halved = create_model(name, head_scale=0.0625).eval()
    halved.load_state_dict(default.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(halved(x), default(x) / 2)


def test_the_recipe_setting_reaches_the_network():
    config = Config.model_validate({"model": {"name": "resnet9_half", "args": {"head_scale": 0.25}}})
    check_network_takes_its_input(config)
    assert create_model("resnet9_half", **config.model.args).backbone.head_scale == 0.25


@pytest.mark.parametrize("scale", ["abc", 0, -1.0])
def test_a_head_scale_that_cannot_work_is_one_line(scale):
    config = Config.model_validate({"model": {"name": "resnet9_half", "args": {"head_scale": scale}}})
    with pytest.raises(ConfigError, match="head_scale .* must be a finite number above 0"):
        check_network_takes_its_input(config)
