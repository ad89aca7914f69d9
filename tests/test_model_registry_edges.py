"""The model registry as a user choosing a network meets it: arguments a named configuration fixes, switches
passed through to the blocks, and the Wide-ResNet's attention and depth/width arithmetic.

Full-size models are built on the meta device (structure and counts, no weights initialised)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.models import UnknownArgument, count_parameters, create_model
from training.models.attention import CA_REDUCTION, CoordinateAttention, SqueezeExcite


def _meta_model(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, 10, **kwargs)


@pytest.mark.parametrize(
    "name,kwargs,generic",
    [
        ("resnext29_8x64d", dict(cardinality=4), "resnext29"),
        ("res2net50_ca_v1b", dict(attention="se"), "res2net50_v1b"),
        ("res2net50_v1b", dict(deep_stem=False), "res2net50"),
        ("se_resnet18", dict(attention="ca"), "resnet18"),
        ("ca_resnet18", dict(attention="se"), "resnet18"),
    ],
)
def test_an_argument_a_named_configuration_fixes_is_refused_naming_the_model_that_takes_it(name, kwargs, generic):
    """Python's "got multiple values for keyword argument" named an internal function and said nothing to do."""
    (key,) = kwargs
    with pytest.raises(UnknownArgument) as caught:
        _meta_model(name, **kwargs)
    message = str(caught.value)
    assert f"model {name!r} sets {key} itself" in message and f"model.name={generic} takes it" in message, message
    assert "multiple values" not in message, message
    # what the message says to do works
    _meta_model(generic, **kwargs)


def test_the_training_command_refuses_a_fixed_argument_in_one_line(tmp_path, capsys):
    from training.__main__ import main as training_main

    args = ["train", "--recipe", "resnext29_8x64d", "--set", "model.args.cardinality=4", "--out", str(tmp_path)]
    assert training_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "error: model 'resnext29_8x64d' sets cardinality itself, so it takes no cardinality argument: leave it "
        "out, or name another model (model.name=resnext29 takes it)"
    ], err


@pytest.mark.parametrize("name", ["resnet18", "res2net50", "resnext29"])
@pytest.mark.parametrize("value", ["false", "no", 0])
def test_a_block_switch_takes_only_true_or_false(name, value):
    """avg_down passes through the network to its blocks: read by its truth, "false" as text turned it on."""
    with pytest.raises(TypeError, match="avg_down takes true or false"):
        _meta_model(name, avg_down=value)


def test_a_block_switch_given_as_a_boolean_still_builds():
    off, on = _meta_model("resnet18", avg_down=False), _meta_model("resnet18", avg_down=True)
    assert not any(isinstance(m, nn.AvgPool2d) for m in off.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in on.modules())


def _attention_hidden(model: nn.Module) -> list[int]:
    return [m.shared[0].out_channels for m in model.modules() if isinstance(m, CoordinateAttention)]


@pytest.mark.parametrize("name", ["wrn_16_4", "wrn_16_8", "wrn_28_10", "wrn"])
def test_wide_resnet_coordinate_attention_takes_its_published_reduction(name):
    """The WRN blocks passed SE's 16 to every attention, so Coordinate Attention got 16, not its 32."""
    model = _meta_model(name, attention="ca")
    widths = [m.gate_h.out_channels for m in model.modules() if isinstance(m, CoordinateAttention)]
    assert widths and _attention_hidden(model) == [max(8, c // CA_REDUCTION) for c in widths]


def test_wide_resnet_takes_a_reduction_as_the_resnets_do():
    se = _meta_model("wrn_16_4", attention="se")
    assert [m.fc[0].out_channels for m in se.modules() if isinstance(m, SqueezeExcite)] == [4, 4, 8, 8, 16, 16]
    se8 = _meta_model("wrn_16_4", attention="se", reduction=8)
    assert [m.fc[0].out_channels for m in se8.modules() if isinstance(m, SqueezeExcite)] == [8, 8, 16, 16, 32, 32]
    with pytest.raises(ValueError, match="reduction must be 1 or more"):
        _meta_model("wrn_16_4", attention="se", reduction=0)
    assert count_parameters(_meta_model("wrn_16_4")) == 2_748_890  # no attention: the published 2.7M unchanged


@pytest.mark.parametrize("depth,widen", [(16, 2.5), (16.0, 4), (True, 4)])
def test_wide_resnet_refuses_depth_or_width_that_is_no_whole_number(depth, widen):
    """A widen of 2.5 reached torch as "empty(): argument 'size' must be tuple of ints"."""
    with pytest.raises(ValueError, match="WRN depth and widen must be whole numbers"):
        _meta_model("wrn", depth=depth, widen=widen)


@pytest.mark.parametrize("depth", [15, 17, 12])
def test_wide_resnet_refuses_an_impossible_depth_in_one_line(depth):
    with pytest.raises(ValueError, match=r"6n\+4 with n >= 1 \(10, 16, 22, 28, ...\), got " + str(depth)):
        _meta_model("wrn", depth=depth, widen=4)
