"""A mistyped bare --set key reaches a network whose constructor takes ``**options`` (airbench94, the ResNets,
ViT) as a model argument: it was refused without the setting meant, which the closed ones (resnet9) name."""

import re

import pytest

from training.config import ConfigError
from training.config_recipes import build_config
from training.models import UnknownArgument, create_model, list_models
from training.preflight import check_network_takes_its_input


@pytest.mark.parametrize(
    ("recipe", "override", "meant"),
    [
        ("airbench94_muon", "sed=3", "did you mean train.seed?"),
        ("airbench94_muon", "epohcs=1", "did you mean train.epochs?"),
        ("airbench94_muon", "model.args.width=8", "did you mean widths?"),
        ("se_resnet18_cpu", "epohcs=1", "did you mean train.epochs?"),
        # an argument of what the options reach (the ViT, a block) is offered, not a setting it is close to
        ("vit_small_patch4", "model.args.patch_siz=8", "did you mean patch_size?"),
        ("airbench94_muon", "model.args.whiten_esp=0.1", "did you mean whiten_eps?"),
        ("se_resnet18_cpu", "avg_dwon=true", "did you mean avg_down?"),
    ],
)
def test_a_typo_given_to_an_open_constructor_names_the_setting_meant(recipe, override, meant):
    config = build_config(recipe, [override])
    with pytest.raises(ConfigError, match=re.escape(meant)):
        check_network_takes_its_input(config)


def test_a_key_like_nothing_gets_no_guess():
    with pytest.raises(ConfigError) as refused:
        check_network_takes_its_input(build_config("airbench94_muon", ["bogus=1"]))
    assert "takes no argument 'bogus'" in str(refused.value) and "did you mean" not in str(refused.value)


@pytest.mark.parametrize("name", list_models())
def test_no_argument_offered_is_one_the_network_sets_itself(name):
    # resnext29 passes its blocks groups and widths, se_resnet18 its attention: offered, they would be refused next
    with pytest.raises(UnknownArgument) as refused:
        create_model(name, 2, zzqx=1)
    for key in refused.value.taken:
        try:
            create_model(name, 2, **{key: None, "zzqx": 1})
        except UnknownArgument as again:
            assert again.unknown == ["zzqx"], f"{name} offers {key}: {again}"
        except (TypeError, ValueError, RuntimeError, AssertionError):
            pass  # None is no value for it: taken, and refused for its value


@pytest.mark.parametrize(
    ("recipe", "override", "not_meant"),
    [
        ("resnext29_8x64d", "model.args.grups=2", "groups"),
        ("se_resnet18_cpu", "model.args.atention=ca", "attention"),
        ("res2net50_ca_v1b", "model.args.avg_dwon=true", "avg_down"),
    ],
)
def test_a_typo_is_not_offered_what_a_preset_sets(recipe, override, not_meant):
    with pytest.raises(ConfigError) as refused:
        check_network_takes_its_input(build_config(recipe, [override]))
    assert f"did you mean {not_meant}?" not in str(refused.value), refused.value
