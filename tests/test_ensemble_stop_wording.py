"""The line an ensemble run stopped midway ends with: 'the members runs/x has finished are kept' read as if the
folder had finished the members."""

from __future__ import annotations

import argparse

from training.__main__ import _continuation
from training.commands import cmd_resume, cmd_train


def test_a_stopped_ensemble_run_says_its_finished_members_are_kept_in_its_folder():
    for fn in (cmd_train, cmd_resume):
        args = argparse.Namespace(fn=fn, run="runs/pair", ensemble_run=True)
        said = _continuation(args)
        assert said == ": the members finished in runs/pair are kept; continue with the same command and --resume"
