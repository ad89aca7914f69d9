"""The scorer's run loop: a stop at any point of a batch's write leaves a summary that counts what the output holds;
the progress bar of a --resume of a folder that lost files since ends at its total; a second Ctrl-C while a --url
run waits for its requests in flight ends it at once, its rows kept for --resume.

The first tests drive the loop in this process with an engine of their own (no model, no service); the stops are
SIGTERMs raised where the test wants them (CI runs the suite with SIGINT ignored)."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from conftest import ROOT
from fakes import CLASSES, FakeService, base_url, serving
from service.score import loop
from service.score import run as run_module
from service.score.cli import main as score_main
from service.score.engines import choose_engine
from service.score.remote import KEY_CHECK_NAME
from service.score.sinks import Prediction, Row
from service.score.walk import Entry


class _Backend:
    """Every image gets the same classes, four a chunk; before each chunk of the run (not of --resume's check)
    it waits for the progress bar's count of the folder, so that the bar has its total from the first rows on."""

    batch_size = 4
    k = 3
    name = "fake"
    classes = CLASSES

    def rows(self, chunks: Iterator[list[Entry]]) -> Iterator[list[Row]]:
        for chunk in chunks:
            for thread in threading.enumerate():
                if thread.name == "score-count":
                    thread.join(30)
            yield [Row(e.rel, [Prediction(c, i, 0.5 / (i + 1)) for i, c in enumerate(CLASSES)]) for e in chunk]

    def close(self) -> None:
        pass


@pytest.fixture
def fake_engine(monkeypatch) -> None:
    def chosen(args):
        choose_engine(args)  # the flags' defaults
        return types.SimpleNamespace(open=lambda args: _Backend())

    monkeypatch.setattr(run_module, "choose_engine", chosen)


def _folder(root: Path, names: list[str]) -> Path:
    root.mkdir(exist_ok=True)
    for name in names:
        (root / name).write_bytes(b"")  # the engine reads none of them
    return root


def _rows(out: Path) -> list[dict]:
    with open(out, newline="") as f:
        return list(csv.DictReader(f))


def _scored(err: str) -> int:
    found = re.search(r"scored (\d+), failed", err)
    assert found, err
    return int(found.group(1))


def _sigterm_at(calls: list, when: int) -> None:
    calls.append(None)
    if len(calls) == when:
        signal.raise_signal(signal.SIGTERM)


def test_a_stop_right_after_a_batch_is_written_is_counted(fake_engine, tmp_path, monkeypatch, capsys):
    """The stop lands once the second batch is in the file, before it was counted: the summary said 4 of the 8."""
    folder = _folder(tmp_path / "photos", [f"{i:02d}.png" for i in range(12)])
    write, calls = loop.write, []

    def written_then_stopped(out, text: str) -> None:
        write(out, text)
        if text.count("\n") == 4:  # a batch's rows, not the header
            _sigterm_at(calls, 2)

    monkeypatch.setattr(loop, "write", written_then_stopped)
    out = tmp_path / "preds.csv"
    assert score_main([str(folder), "--out", str(out), "--no-progress"]) == 143
    err = capsys.readouterr().err
    assert err.startswith("SIGTERM: interrupted: "), err
    assert len(_rows(out)) == 8 and _scored(err) == 8, err


def test_a_stop_while_a_batch_is_counted_is_held_until_it_is(fake_engine, tmp_path, monkeypatch, capsys):
    """The stop lands in the middle of the second batch's count: it was counted in part (5 of the file's 8)."""
    folder = _folder(tmp_path / "photos", [f"{i:02d}.png" for i in range(12)])
    check, calls = loop.check_csv_cell, []

    def checked_then_stopped(path: str, summary) -> None:
        check(path, summary)
        _sigterm_at(calls, 6)

    monkeypatch.setattr(loop, "check_csv_cell", checked_then_stopped)
    out = tmp_path / "preds.csv"
    assert score_main([str(folder), "--out", str(out), "--no-progress"]) == 143
    err = capsys.readouterr().err
    assert len(_rows(out)) == 8 and _scored(err) == 8, err


def test_a_stop_as_overwrite_replaces_the_file_says_it_was_replaced(fake_engine, tmp_path, monkeypatch, capsys):
    """The stop lands between --overwrite's rename of its new rows over the old file and its noting that: the
    summary said the file was as it was, counting none of the new rows it held."""
    folder = _folder(tmp_path / "photos", [f"{i:02d}.png" for i in range(8)])
    out = tmp_path / "preds.csv"
    assert score_main([str(folder), "--out", str(out), "--no-progress"]) == 0
    (folder / "08.png").write_bytes(b"")
    replace, calls = os.replace, []

    def replaced_then_stopped(src, dst) -> None:
        replace(src, dst)
        if os.path.realpath(dst) == os.path.realpath(out):
            _sigterm_at(calls, 1)

    monkeypatch.setattr(os, "replace", replaced_then_stopped)
    capsys.readouterr()
    assert score_main([str(folder), "--out", str(out), "--overwrite", "--no-progress"]) == 143
    err = capsys.readouterr().err
    assert len(_rows(out)) == 4 and _scored(err) == 4, err
    assert f"the rows so far are in {out}: rerun with --resume to continue" in err, err


class _Bar:
    """tqdm as the run loop uses it, shown, and what it showed."""

    made: list[_Bar] = []

    def __init__(self, total=None, initial: int = 0, **kwargs) -> None:
        self.total, self.n, self.disable = total, initial, False
        self.shown: list[tuple[int, int | None]] = []
        _Bar.made.append(self)

    def update(self, n: int) -> None:
        self.n += n
        self.shown.append((self.n, self.total))

    def set_postfix(self, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_bar_of_a_resume_of_a_folder_that_lost_files_ends_at_its_total(fake_engine, tmp_path, monkeypatch):
    """4 rows, 2 of them of files deleted since, and 4 new files: the bar started at the 4 rows and counted the 6
    files there now as its total, so it ended at 8 of 6 (tqdm then drops the total, and its ETA with it)."""
    import tqdm

    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png", "d.png"])
    out = tmp_path / "preds.csv"
    assert score_main([str(folder), "--out", str(out), "--no-progress"]) == 0
    (folder / "a.png").unlink()
    (folder / "b.png").unlink()
    _folder(folder, ["e.png", "f.png", "g.png", "h.png"])
    monkeypatch.setattr(tqdm, "tqdm", _Bar)
    _Bar.made.clear()
    assert score_main([str(folder), "--out", str(out), "--resume"]) == 0
    (bar,) = _Bar.made
    assert len(_rows(out)) == 8
    assert bar.shown and all(total is not None and n <= total for n, total in bar.shown), bar.shown
    assert bar.shown[-1] == (8, 8), bar.shown


# --- A --url run stopped twice: a real scorer process and real signals ---------------------------------------------


class _Service(FakeService):
    """Answers the request of the run's first chunk (the one holding 0.png, whichever worker posts it first) at
    once, and holds the others until ``server.release`` (at most half a minute), then sets
    ``server.answered_held``. Held by order of arrival instead, a second worker's chunk could come first and be
    answered while the first chunk's was held: no row would ever be written."""

    def do_POST(self) -> None:
        server = self.server
        _, names = self.read_images()
        if names != [KEY_CHECK_NAME]:
            with server.lock:  # type: ignore[attr-defined]
                server.posts += 1  # type: ignore[attr-defined]
                held = "0.png" not in names
            if held and not server.release.is_set():  # type: ignore[attr-defined]
                server.holding.set()  # type: ignore[attr-defined]
                server.release.wait(30)  # type: ignore[attr-defined]
                server.answered_held.set()  # type: ignore[attr-defined]
        try:
            self.classify(names)
        except OSError:  # the scorer gave up on it
            pass


@pytest.fixture
def service() -> Iterator[ThreadingHTTPServer]:
    events = {"holding": threading.Event(), "answered_held": threading.Event()}
    with serving(_Service, lock=threading.Lock(), posts=0, **events) as server:
        yield server


# ``python -m service ARGS``, touching STOP_DIR/closing once its main thread waits for the requests in flight at
# the engine's close (ThreadPoolExecutor.shutdown): a stop sent then lands in that wait.
_DRIVER = r"""
import os, sys, threading, time
from pathlib import Path

where = Path(os.environ["STOP_DIR"])


def in_shutdown():
    frame = sys._current_frames().get(threading.main_thread().ident)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "shutdown" and code.co_filename.endswith(os.path.join("concurrent", "futures", "thread.py")):
            return True
        frame = frame.f_back
    return False


def watch():
    while not in_shutdown():
        time.sleep(0.01)
    (where / "closing").touch()


threading.Thread(target=watch, daemon=True).start()

from service.__main__ import main
from service.process_end import end_process

end_process(main(sys.argv[1:]))
"""


def _wait_for(what, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + 60
    while not what():
        if proc.poll() is not None:
            pytest.fail(f"the scorer ended ({proc.returncode}) before {name}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the scorer never reached {name}: {proc.communicate()[1]}")
        time.sleep(0.01)


def _photos(tmp_path: Path) -> Path:
    """Eight small PNGs, four chunks of two for the scorer."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (32, 32), (30 * i, 60, 90)).save(folder / f"{i}.png")
    return folder


def _start_scorer(
    driver: str, url: str, folder: Path, out: Path, workers: int, timeout: int, env: dict[str, str]
) -> subprocess.Popen:
    """``driver`` scoring ``folder`` into ``out`` through ``url`` in chunks of two, Ctrl-C taken as in a shell;
    its stderr piped for the test to read."""
    args = ["score", str(folder), "--url", url, "--out", str(out), "--batch-size", "2", "--workers", str(workers)]
    return subprocess.Popen(
        [sys.executable, "-c", driver, *args, "--timeout", str(timeout), "--no-progress"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # Ctrl-C as in a shell
    )


def test_a_second_ctrl_c_while_the_requests_in_flight_end_ends_the_run_at_once(service, tmp_path):
    """The first Ctrl-C stops the run, which then waits for the requests in flight (each up to --timeout); the
    second ended that wait only once the service answered them. Now it abandons them: the process ends while the
    service still holds its request, with the first stop's status and message, and --resume completes the rows."""
    folder, out, url = _photos(tmp_path), tmp_path / "preds.csv", base_url(service)
    where = tmp_path / "hooks"
    where.mkdir()
    proc = _start_scorer(_DRIVER, url, folder, out, 1, 120, {"STOP_DIR": str(where)})
    try:
        _wait_for(lambda: out.exists() and len(_rows(out)) == 2 and service.holding.is_set(), proc, "its first rows")
        proc.send_signal(signal.SIGINT)
        _wait_for((where / "closing").exists, proc, "the wait for the requests in flight")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not service.answered_held.is_set(), "the scorer waited for the service to answer"
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert lines[0] == "waiting for 1 request in flight (up to 120 s): Ctrl-C again to abandon it", lines
    assert lines[1].startswith("interrupted: scored 2, failed 0"), lines
    assert lines[-1] == f"the rows so far are in {out}: rerun with --resume to continue", lines
    service.release.set()
    assert score_main([str(folder), "--url", url, "--out", str(out), "--resume", "--no-progress"]) == 0
    assert sorted(row["path"] for row in _rows(out)) == [f"{i}.png" for i in range(8)]
