"""`python -m training evaluate --out DIR` rewrites an earlier report in DIR (established behaviour, where train,
export and score --out refuse an existing target), as it does its default report folder: it warns, naming what the
earlier report was of, once the report is about to be written; a new or empty folder, and an evaluation refused
before writing, get no warning."""

from __future__ import annotations

import json
import logging
import shutil

import torch

from training.__main__ import main
from training.checkpoint import load_checkpoint

REPLACING = "replacing the earlier report in"


def _evaluate(tiny_run, out, caplog, status: int = 0) -> list[str]:
    """The warnings an evaluation of the tiny run into ``out`` (None: its default report folder) says, where it
    exits with ``status``."""
    caplog.clear()
    where = ["--out", str(out)] if out is not None else []
    with caplog.at_level(logging.INFO, logger="training"):
        assert main(["evaluate", "--checkpoint", str(tiny_run), *where, "--device", "cpu",
                     "--no-sample-figures"]) == status  # fmt: skip
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


def test_evaluating_again_into_the_default_folder_names_what_it_replaces(tiny_run, tmp_path, caplog):
    run = tmp_path / "run"  # a copy: the default folder is inside the run's, and the session's run is shared
    shutil.copytree(tiny_run, run)
    said = _evaluate(run, None, caplog)
    assert not [m for m in said if REPLACING in m], said
    out = run / "report-best-val"
    earlier = json.loads((out / "metrics.json").read_text())

    said = _evaluate(run, None, caplog)
    assert [m for m in said if REPLACING in m] == [
        f"{REPLACING} {out} (of {earlier['source']['path']}, made {earlier['created']})"
    ], said


def test_a_model_refused_as_broken_says_no_report_is_replaced(tiny_run, tmp_path, caplog, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "report"
    _evaluate(run, out, caplog)
    earlier = (out / "metrics.json").read_text()
    ckpt = load_checkpoint(run / "best.pt")  # its weights go NaN since: the same model, now broken
    for weights in (ckpt["model"], ckpt.get("ema") or {}):
        for tensor in weights.values():
            if tensor.is_floating_point():
                tensor.fill_(float("nan"))
    torch.save(ckpt, run / "best.pt")

    said = _evaluate(run, out, caplog, status=2)
    assert "is broken: it answers NaN or infinite logits" in capsys.readouterr().err
    assert not [m for m in said if REPLACING in m], said  # nothing was replaced
    assert (out / "metrics.json").read_text() == earlier
