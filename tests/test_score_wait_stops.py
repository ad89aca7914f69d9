"""A stop while a --url run that a failure ended waits for its requests in flight (a service that answers with
another model, a failed write): it abandons them and ends the run as a stop anywhere else does, the rows so far
kept, "interrupted" and 130 (143 for SIGTERM), not the failure's 1 (or 74); the waiting line names every stop that
abandons them, a SIGTERM as well as a Ctrl-C.

The runs are in this process. The stop is raised on the main thread as the run begins that wait, once its stops
are held (where the run waits); SIGINT is given its default handler meanwhile, as CI runs the suite with it
ignored. The service holds a request until the fixture ends (``HELD_S`` at most): only the stop ends the wait."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Iterator

import pytest

from fakes import HoldingService, serving
from service.score import remote_inflight
from test_score_run_loop import _photos, _rows
from test_score_wait_lines import disk_full_at_the_first_rows, score_url, waiting_lines

HELD_S = 10
WAITING = "waiting for 1 request in flight (up to 30 s): Ctrl-C or SIGTERM to abandon it"


@pytest.fixture
def service(monkeypatch) -> Iterator[ThreadingHTTPServer]:
    """The service; ``server.said``: the scorer's lines, as said."""
    with serving(HoldingService, holding=threading.Event(), fails_on=None, held_s=HELD_S, said=[]) as server:
        say = remote_inflight._say

        def said(line: str) -> None:
            server.said.append(line)  # type: ignore[attr-defined]
            say(line)

        monkeypatch.setattr(remote_inflight, "_say", said)
        yield server


@pytest.fixture(params=[signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def stop(request, monkeypatch) -> Iterator[signal.Signals]:
    """The signal raised once, as the run begins to wait for its requests in flight (where it holds its stops and
    abandons them on each)."""
    signum = request.param
    held = remote_inflight.interrupts_held
    sent: list[int] = []

    @contextmanager
    def stopped_within(on_stop=None) -> Iterator[None]:
        with held(on_stop=on_stop):
            if on_stop is not None and not sent:  # the wait for the requests in flight, not the engine's close
                sent.append(signum)
                signal.raise_signal(signum)
            yield

    monkeypatch.setattr(remote_inflight, "interrupts_held", stopped_within)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield signum
    finally:
        signal.signal(signal.SIGINT, previous)
    assert sent, "the run never waited for its requests in flight"


def _stopped_by(signum: int) -> str:
    return "SIGTERM: " if signum == signal.SIGTERM else ""


def _interrupted(lines: list[str]) -> str:
    """The summary's line, said once: the run stopped by the stop, not by the failure."""
    said = [line for line in lines if "interrupted: " in line or line.startswith("stopped: ")]
    assert len(said) == 1, lines
    return said[0]


def test_a_stop_while_a_failed_run_waits_for_its_requests_ends_it_as_interrupted(service, stop, tmp_path, capsys):
    """The stop abandoned the requests, then was dropped: the run ended with status 1 and the failure's error."""
    service.fails_on = "2.png"  # the second chunk's request
    out = tmp_path / "preds.csv"
    assert score_url(service, _photos(tmp_path), out, workers=2) == 128 + stop
    assert waiting_lines(service) == [WAITING], service.said
    assert [row["path"] for row in _rows(out)] == ["0.png", "1.png"]
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "answered with model 'other'" in errors[0], lines  # why the run stopped, still said
    assert _interrupted(lines).startswith(f"{_stopped_by(stop)}interrupted: scored 2, failed 0"), lines
    assert lines[-1] == f"the rows so far are in {out}: rerun with --resume to continue", lines


def test_a_stop_while_a_run_whose_write_failed_waits_for_its_requests_ends_it_as_interrupted(
    service, stop, tmp_path, monkeypatch, capsys
):
    """The stop abandoned the requests, then was dropped: the run ended with 74, as a failed write alone does."""
    disk_full_at_the_first_rows(service, monkeypatch)
    out = tmp_path / "preds.csv"
    assert score_url(service, _photos(tmp_path), out, workers=1) == 128 + stop
    assert waiting_lines(service) == [WAITING], service.said
    assert _rows(out) == []
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert f"error: cannot write {out}: No space left on device" in lines, lines
    assert _interrupted(lines).startswith(f"{_stopped_by(stop)}interrupted: scored 0, failed 0"), lines
    lost = f"not written: 2 more rows, lost with the write that failed; {out} holds 0 rows, those counted above"
    assert lost in lines, lines


def test_the_waiting_line_after_a_failure_names_a_sigterm_as_well_as_a_ctrl_c():
    """A run that a failure stopped may have no terminal (a container, a scheduler's job): its line named Ctrl-C
    alone, though a SIGTERM abandons the requests as well."""
    assert remote_inflight._abandoned_by(None) == "Ctrl-C or SIGTERM"
