"""`python -m training evaluate --out DIR` rewrites an earlier report in DIR (established behaviour, where train,
export and score --out refuse an existing target): it used to do so without a word. It now warns, naming what the
earlier report was of; a new or empty folder gets no warning."""

from __future__ import annotations

import json
import logging
import shutil

from training.__main__ import main

REPLACING = "replacing the earlier report in"


def _evaluate(tiny_run, out, caplog) -> list[str]:
    """The warnings an evaluation of the tiny run into ``out`` says."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="training"):
        assert main(["evaluate", "--checkpoint", str(tiny_run), "--out", str(out), "--device", "cpu",
                     "--no-sample-figures"]) == 0  # fmt: skip
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_new_or_empty_folder_gets_no_warning(tiny_run, tmp_path, caplog):
    said = _evaluate(tiny_run, tmp_path / "new" / "report", caplog)
    assert not [m for m in said if REPLACING in m], said
    (tmp_path / "empty").mkdir()
    said = _evaluate(tiny_run, tmp_path / "empty", caplog)
    assert not [m for m in said if REPLACING in m], said


def test_evaluating_again_into_a_report_names_what_it_replaces(tiny_run, tmp_path, caplog):
    out = tmp_path / "report"
    _evaluate(tiny_run, out, caplog)
    earlier = json.loads((out / "metrics.json").read_text())

    said = _evaluate(tiny_run, out, caplog)
    replacing = [m for m in said if REPLACING in m]
    assert replacing == [f"{REPLACING} {out} (of {earlier['source']['path']}, made {earlier['created']})"], said
    assert (out / "report.md").is_file()  # and the report is still rewritten, not refused


def test_a_report_stopped_before_its_metrics_is_named_by_its_files(tiny_run, tmp_path, caplog):
    out = tmp_path / "report"
    _evaluate(tiny_run, out, caplog)
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copy(out / "predictions.npz", stopped / "predictions.npz")

    said = _evaluate(tiny_run, stopped, caplog)
    assert [m for m in said if REPLACING in m] == [f"{REPLACING} {stopped} (its predictions.npz)"], said
