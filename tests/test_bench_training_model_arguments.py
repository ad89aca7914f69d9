"""bench_training's --models NAME:key=value: a value the network refuses when built (a switch given as text) is
one `error:` line naming the argument, as training says it, not a traceback."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_training  # noqa: E402


@pytest.mark.parametrize(
    "spec, said",
    [
        ("airbench94:dirac=maybe", "dirac takes true or false"),
        ("airbench94:bn_momentum=abc", "(bn_momentum='abc')"),
    ],
)
def test_a_value_the_network_refuses_is_one_error_line(spec, said, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_training.termination.run(
            lambda: bench_training.main(["--models", spec, "--steps", "1", "--out", str(tmp_path / "out.json")])
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("error: model 'airbench94' cannot be built from its arguments") and said in err, err
    assert "Traceback" not in err and not (tmp_path / "out.json").exists()


def test_an_unknown_argument_keeps_its_own_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench_training.termination.run(
            lambda: bench_training.main(["--models", "airbench94:foo=1", "--steps", "1", "--out", str(tmp_path / "o")])
        )
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: model 'airbench94' takes no argument 'foo'"), err
