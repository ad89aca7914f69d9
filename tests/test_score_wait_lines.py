"""The line a --url run says before it waits for its requests in flight: it names what abandons them after what
ended the run (a Ctrl-C, a SIGTERM, or a failure: a service that answers with another model, a failed write), and
a failure says it too, before the run's error and summary.

The runs are in this process; each stop is a SIGTERM raised on the main thread where the test wants it (CI runs
the suite with SIGINT ignored), and the service answers the request it holds once the waiting line is said."""

from __future__ import annotations

import errno
import signal
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from fakes import HoldingService, base_url, serving
from service.score import loop, output, remote, remote_inflight
from service.score.cli import main as score_main
from test_score_run_loop import _photos, _rows

HELD_S = 5  # the most a held request waits: where no waiting line releases it (the old code), the run ends anyway


@pytest.fixture
def service(monkeypatch) -> Iterator[ThreadingHTTPServer]:
    """The service, released by the scorer's waiting line; ``server.said``: the scorer's lines, as said."""
    import threading

    with serving(HoldingService, holding=threading.Event(), fails_on=None, held_s=HELD_S, said=[]) as server:
        say = remote_inflight._say

        def said_then_released(line: str) -> None:
            server.said.append(line)  # type: ignore[attr-defined]
            say(line)
            if line.startswith("waiting for "):
                server.release.set()  # type: ignore[attr-defined]

        monkeypatch.setattr(remote_inflight, "_say", said_then_released)
        yield server


def score_url(server: ThreadingHTTPServer, folder: Path, out: Path, workers: int) -> int:
    args = [str(folder), "--url", base_url(server), "--out", str(out), "--batch-size", "2"]
    return score_main([*args, "--workers", str(workers), "--timeout", "30", "--no-progress"])


def waiting_lines(server: ThreadingHTTPServer) -> list[str]:
    return [line for line in server.said if line.startswith("waiting for ")]  # type: ignore[attr-defined]


def disk_full_at_the_first_rows(service: ThreadingHTTPServer, monkeypatch) -> None:
    """The output's disk fills as the first chunk's rows are written, once the service holds another request."""
    write = loop.write

    def full_disk(out, text: str) -> None:
        if text.count("\n") == 2:  # the first chunk's rows, not the header
            assert service.holding.wait(service.held_s)  # type: ignore[attr-defined]
            raise output.OutputLost(OSError(errno.ENOSPC, "No space left on device"))
        write(out, text)

    monkeypatch.setattr(loop, "write", full_disk)


def test_a_sigterm_while_the_run_waits_for_rows_names_sigterm_in_the_waiting_line(service, tmp_path, monkeypatch):
    """A container stop or a `kill` stops the run as Ctrl-C does, but the line said "Ctrl-C again" to abandon."""
    finish = remote.RemoteBackend.finish

    def stopped_while_waiting(self, chunk, handle):
        if any(entry.rel == "2.png" for entry in chunk):  # the second chunk, which the service holds
            assert service.holding.wait(HELD_S)
            signal.raise_signal(signal.SIGTERM)
        return finish(self, chunk, handle)

    monkeypatch.setattr(remote.RemoteBackend, "finish", stopped_while_waiting)
    out = tmp_path / "preds.csv"
    assert score_url(service, _photos(tmp_path), out, workers=1) == 143
    assert waiting_lines(service) == [
        "waiting for 1 request in flight (up to 30 s): SIGTERM again (or Ctrl-C) to abandon it"
    ], service.said
    assert len(_rows(out)) == 2


def test_a_sigterm_between_two_rows_names_sigterm_in_the_waiting_line(service, tmp_path, monkeypatch, capsys):
    """A stop that lands while the run writes rows is caught by the run loop, which closes the engine's rows: the
    engine could not tell a stop from a failure, nor which stop it was."""
    write = loop.write

    def written_then_stopped(out, text: str) -> None:
        write(out, text)
        if text.count("\n") == 2:  # the first chunk's rows, not the header
            assert service.holding.wait(HELD_S)
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(loop, "write", written_then_stopped)
    out = tmp_path / "preds.csv"
    assert score_url(service, _photos(tmp_path), out, workers=1) == 143
    assert waiting_lines(service) == [
        "waiting for 1 request in flight (up to 30 s): SIGTERM again (or Ctrl-C) to abandon it"
    ], service.said
    assert capsys.readouterr().err.count("SIGTERM: interrupted: scored 2, failed 0") == 1


def test_a_run_stopped_by_a_failing_service_says_its_wait_before_its_error(service, tmp_path, capsys):
    """Another worker's request still in flight was waited for (up to --timeout) without a word, after the
    summary."""
    service.fails_on = "0.png"  # the first chunk's request
    out = tmp_path / "preds.csv"
    assert score_url(service, _photos(tmp_path), out, workers=2) == 1
    assert waiting_lines(service) == [
        "waiting for 1 request in flight (up to 30 s): Ctrl-C or SIGTERM to abandon it"
    ], service.said
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
    assert errors and "answered with model 'other'" in lines[errors[0]], lines
    assert lines.index(waiting_lines(service)[0]) < errors[0], lines


def test_a_run_stopped_by_a_failed_write_says_its_wait_without_again(service, tmp_path, monkeypatch, capsys):
    """No stop came: "Ctrl-C again" spoke of one."""
    disk_full_at_the_first_rows(service, monkeypatch)
    out = tmp_path / "preds.csv"
    assert score_url(service, _photos(tmp_path), out, workers=1) == output.OUTPUT_LOST
    assert waiting_lines(service) == [
        "waiting for 1 request in flight (up to 30 s): Ctrl-C or SIGTERM to abandon it"
    ], service.said
    assert "error: cannot write" in capsys.readouterr().err
