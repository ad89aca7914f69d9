"""airbench94's logit_scale (model.args.logit_scale): a scale that cannot work is refused when the network is built,
before any data is read, as one line naming the argument; not a traceback at the first batch, nor a run that
trains nothing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.config import Config, ConfigError
from training.models import create_model
from training.preflight import check_network_takes_its_input


@pytest.mark.parametrize("scale", ["abc", 0, -0.5, float("inf")])
def test_a_logit_scale_that_cannot_work_is_refused_when_built(scale):
    """`--set model.args.logit_scale=abc` built, then raised a TypeError traceback at the first batch; 0 trained a
    network whose logits and gradients are all 0, reported only as 10% accuracy."""
    with pytest.raises(ValueError, match="logit_scale .* must be a finite number above 0"):
        create_model("airbench94", logit_scale=scale)


def test_the_preflight_says_it_in_one_line_naming_the_argument():
    config = Config.model_validate({"model": {"name": "airbench94", "args": {"logit_scale": "abc"}}})
    with pytest.raises(ConfigError, match=r"cannot be built from its arguments \(logit_scale='abc'"):
        check_network_takes_its_input(config)


# numpy's numbers too: np.float32(0.5) was refused as not "a finite number above 0"
@pytest.mark.parametrize("scale", [1 / 9, 1, 0.5, np.float32(0.5), np.float64(0.5), np.int64(1)])
def test_a_positive_scale_still_scales_the_logits(scale):
    torch.manual_seed(0)
    model = create_model("airbench94", logit_scale=scale).eval()
    unscaled = create_model("airbench94", logit_scale=1).eval()
    unscaled.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), unscaled(x) * float(scale))


@pytest.mark.parametrize("scale", [1e-300, 1e308, pytest.param(10**400, id="10**400")])
def test_a_scale_that_float32_makes_0_or_infinite_is_refused(scale):
    """The head multiplies in float32: 1e-300 is 0 there, every logit 0 (the dead network the check is for), and
    1e308 infinite; 10**400 was an OverflowError traceback, not the one line."""
    with pytest.raises(ValueError, match="logit_scale .* must be a finite number above 0 that float32 holds"):
        create_model("airbench94", logit_scale=scale)


def test_the_message_gives_the_paper_s_fraction_as_a_number_the_option_takes():
    """`--set model.args.logit_scale=1/9` is text: the message named '1/9' as the value to write."""
    with pytest.raises(ValueError, match=r"the paper's 1/9, written 0\.1111"):
        create_model("airbench94", logit_scale="1/9")
