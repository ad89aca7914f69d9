"""A mistake in train's, resume's or ablate's --set words (a run folder after --set, a value the shell split) is
told with that subcommand's usage, as an unknown flag of it is: it showed the program's list of subcommands."""

from __future__ import annotations

import pytest

from training.__main__ import main as training_main


@pytest.mark.parametrize(
    "argv, command, said",
    [
        (["train", "--recipe", "resnet9_half_cpu", "--set", "epochs=1", "somewhere"], "train", "after --set"),
        (["resume", "--set", "device=cpu", "runs/x"], "resume", "after --set"),
        (["ablate", "--recipe", "resnet9_half_cpu", "--set", "augment={cutout:", "8}"], "ablate", "the shell split"),
    ],
)
def test_a_set_mistake_is_told_with_its_subcommands_usage(argv, command, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        training_main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.startswith(f"usage: python -m training {command} "), err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"python -m training {command}: error: ") and said in last, err
