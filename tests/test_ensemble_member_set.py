"""A key given twice in an ensemble member's `set` is refused, as the same two values given to --set are."""

from __future__ import annotations

import pytest
import yaml

from training.__main__ import main as training_main
from training.config import ConfigError
from training.ensemble_recipe import load_ensemble_recipe, member_configs

TINY = ["model.name=resnet9", "model.args={width: 8}"]


def _recipe(tmp_path, first_set: list[str]) -> str:
    members = [
        {"recipe": "resnet9_half_cpu", "set": [*TINY, *first_set]},
        {"recipe": "resnet9_half_cpu", "set": [*TINY, "seed=1"]},
    ]
    path = tmp_path / "pair.yaml"
    path.write_text(yaml.safe_dump({"ensemble": {"members": members}}))
    return str(path)


def test_a_key_given_twice_in_a_members_set_is_refused_naming_the_member_and_the_key(tmp_path, monkeypatch, capsys):
    """`set: [epochs=2, epochs=3]` trained 3 epochs without a word, though `--set epochs=2 epochs=3` is refused."""
    import training.ensemble_recipe as runner

    def no_training(*args, **kwargs):
        raise AssertionError("a member trained")

    monkeypatch.setattr(runner, "train", no_training)
    recipe, out = _recipe(tmp_path, ["epochs=2", "epochs=3"]), tmp_path / "run"
    assert training_main(["train", "--recipe", recipe, "--set", "warmup_epochs=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: ensemble member 1 (resnet9_half_cpu), its `set`: train.epochs is set twice ('epochs=2' and "
        "'epochs=3'): keep one\n"
    ), err
    assert not out.exists()


def test_a_members_set_may_still_tweak_a_preset_and_be_overridden_by_the_command_line(tmp_path):
    """What --set takes, a member's `set` takes: a field after the preset that sets it; and the command line's
    overrides come after the member's, replacing its values (layers, not one list)."""
    recipe = load_ensemble_recipe(_recipe(tmp_path, ["augment=basic", "cutout=8", "epochs=2"]))
    configs = member_configs(recipe, ["warmup_epochs=0", "epochs=1"])
    assert configs[0].augment.cutout == 8 and [c.train.epochs for c in configs] == [1, 1]
    with pytest.raises(ConfigError, match=r"member 1 \(resnet9_half_cpu\), its `set`: .*would undo it"):
        member_configs(load_ensemble_recipe(_recipe(tmp_path, ["cutout=8", "augment=basic"])))
