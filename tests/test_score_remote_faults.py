"""Batch scoring with --url when the service misbehaves: one image that makes it crash, time out or answer
nonsense is that image's error row and the run goes on; a service that is gone, or asks to be left alone for
long, stops the run with the rows kept for --resume; and a write that fails part-way (a full disk) leaves a file
that holds exactly the rows the summary counts, with an exit status of its own."""

from __future__ import annotations

import csv
import errno
import io
import re
import shutil
import socket
import struct
import sys
import threading
import time
from contextlib import ExitStack
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

from fakes import FakeService, base_url, serving
from service.score import loop
from service.score.cli import main as score_main
from service.score.output import OUTPUT_LOST
from service.score.remote import KEY_CHECK_NAME, RemoteBackend
from service.score.remote_requests import MAX_RETRY_AFTER


class Fake(FakeService):
    """The service's GET /readyz, GET /models and POST /classify; ``server.fault(handler, body, names)`` may
    answer a POST its own way (and return True), else every image gets the same classes. The scorer's key check
    is classified, neither recorded nor faulted (tests/test_score_remote_key.py has its own)."""

    def do_POST(self) -> None:
        body, names = self.read_images()
        self.names = names
        if names == [KEY_CHECK_NAME]:  # the scorer's check of its key, before the run: no part of what it sends
            self.classify(names)
            return
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.posts.append(names)  # type: ignore[attr-defined]
        try:
            if self.server.fault(self, body, names):  # type: ignore[attr-defined]
                return
        except OSError:  # the scorer gave up on this request (its --timeout)
            return
        self.classify(names)

    def drop(self, reset: bool) -> None:
        """Close the connection without an answer: a worker that died on the request (RST), or one that closed."""
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        self.connection.close()


Fault = Callable[[Fake, bytes, list[str]], bool]


@pytest.fixture
def serve() -> Iterator[Callable[[Fault], tuple[str, list[list[str]]]]]:
    """Start a fake service on a free port with a fault: its URL and the names of every POST's images."""
    with ExitStack() as servers:

        def start(fault: Fault) -> tuple[str, list[list[str]]]:
            server = servers.enter_context(serving(Fake, fault=fault, posts=[], lock=threading.Lock()))
            return base_url(server), server.posts  # type: ignore[attr-defined]

        yield start


@pytest.fixture
def photos(image_folder, tmp_path, monkeypatch) -> Path:
    """Eight distinct PNGs, 0.png to 7.png (scored in that order), and retries without waits."""
    monkeypatch.setattr(RemoteBackend, "RETRY_DELAY", 0.001)
    root = tmp_path / "photos"
    root.mkdir()
    for n, source in enumerate(sorted((image_folder / "alpha").iterdir())[:8]):
        shutil.copy(source, root / f"{n}.png")
    return root


def _score(*args) -> int:
    return score_main([str(a) for a in args])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _poisoned(photos: Path, answer: Callable[[Fake], None]) -> Fault:
    """A fault for every request that holds 5.png: ``answer`` it."""
    poison = (photos / "5.png").read_bytes()

    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        if poison not in body:
            return False
        answer(handler)
        return True

    return fault


def _fewer(handler: Fake) -> None:
    """200, with a prediction short (rows are matched to images by position)."""
    top = [{"label": "alpha", "index": 0, "confidence": 0.9}]
    predictions = [{"filename": name, "top_k": top} for name in handler.names[:-1]]
    handler.answer(200, {"model": "fake", "predictions": predictions})


FAULTS: dict[str, tuple[Callable[[Fake], None], str]] = {
    "500": (lambda h: h.answer(500, {"error": "the model raised"}), "(HTTP 500): the model raised"),
    "502 from a proxy": (lambda h: h.answer(502, b"<html>502 Bad Gateway</html>"), "(HTTP 502): <html>502 Bad"),
    "503 without a reason": (lambda h: h.answer(503, {"error": "no healthy upstream"}), "(HTTP 503): no healthy"),
    "504 from a proxy": (lambda h: h.answer(504, {"error": "upstream timed out"}), "(HTTP 504): upstream timed out"),
    "connection closed": (lambda h: h.drop(reset=False), "RemoteProtocolError"),
    "connection reset": (lambda h: h.drop(reset=True), "Connection reset by peer"),
    "no answer in time": (lambda h: h.server.release.wait(10), "no answer within 0.3 s (--timeout)"),  # type: ignore[attr-defined]
    "200, not JSON": (lambda h: h.answer(200, b"<html>oops</html>"), "(HTTP 200): an answer that is no classification"),
    "200, fewer predictions": (_fewer, "(HTTP 200): an answer with 0 predictions for 1 image"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_an_image_the_service_fails_on_in_any_way_is_its_error_row(fault, photos, serve, tmp_path, capsys):
    answer, said = FAULTS[fault]
    url, _ = serve(_poisoned(photos, answer))
    out = tmp_path / "preds.csv"
    status = _score(photos, "--url", url, "--out", out, "--batch-size", 4, "--timeout", 0.3, "--no-progress")
    err = capsys.readouterr().err
    assert status == 0, err
    errors = {row["path"]: row["error"] for row in _rows(out)}
    assert sorted(errors) == [f"{n}.png" for n in range(8)]
    assert {path for path, error in errors.items() if error} == {"5.png"}, errors
    assert errors["5.png"].startswith("the service failed on this image"), errors
    assert re.search(re.escape(said) + r"(?!\w)", errors["5.png"]), errors  # a whole word: "1 image", not "1 images"
    assert "scored 7, failed 1" in err and "Traceback" not in err, err


def test_an_image_that_takes_the_service_down_for_a_while_blames_no_other(photos, serve, tmp_path, capsys):
    """The image crashes the service, which answers 503 while it restarts: the requests of other images that
    meet the restart are not their images' fault, and are sent again once the service answers a test image."""
    poison = (photos / "5.png").read_bytes()
    down = {"left": 0}

    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        if down["left"] > 0:
            down["left"] -= 1
            handler.answer(503, {"error": "restarting"})
            return True
        if poison in body:
            down["left"] = 3
            handler.drop(reset=True)
            return True
        return False

    url, _ = serve(fault)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 4, "--workers", 1, "--no-progress") == 0
    failed = {row["path"] for row in _rows(out) if row["error"]}
    assert failed == {"5.png"} and "scored 7, failed 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    "fault, said",
    [
        (lambda h: h.answer(502, {"error": "bad gateway"}), "failed 6 times: HTTP 502: bad gateway"),
        (lambda h: h.drop(reset=True), "failed 6 times: ReadError"),
        # the service's own word that it sheds load: no image is to blame, none is looked for
        (lambda h: h.answer(503, {"error": "overloaded", "reason": "overloaded"}), "failed 6 times: HTTP 503"),
    ],
    ids=["502", "reset", "503 overloaded"],
)
def test_a_service_that_fails_every_request_stops_the_run_for_resume(fault, said, photos, serve, tmp_path, capsys):
    url, _ = serve(lambda handler, body, names: fault(handler) or True)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 4, "--no-progress") == 1
    err = capsys.readouterr().err
    assert f"error: the service at {url} {said}" in err and "stopped: scored 0, failed 0" in err, err
    assert "rerun with --resume to continue" in err and "Traceback" not in err, err
    assert _rows(out) == []  # no image written as the service's failure


def test_a_service_gone_mid_run_stops_it_and_resume_finishes(photos, serve, tmp_path, capsys):
    """After its first answer the service is gone (connection refused): no image is to blame, the run stops."""
    servers: list[ThreadingHTTPServer] = []

    def first_only(handler: Fake, body: bytes, names: list[str]) -> bool:
        if not servers:
            servers.append(handler.server)  # type: ignore[arg-type]
            handler.server.shutdown()
            handler.server.server_close()
            handler.close_connection = True
        return False

    url, _ = serve(first_only)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 4, "--workers", 1, "--no-progress") == 1
    err = capsys.readouterr().err
    assert "failed 6 times: ConnectError" in err and "stopped: scored 4, failed 0" in err, err
    assert "rerun with --resume to continue" in err and "Traceback" not in err, err

    url, _ = serve(lambda handler, body, names: False)
    assert _score(photos, "--url", url, "--out", out, "--resume", "--no-progress") == 0
    assert [row["path"] for row in _rows(out)] == [f"{n}.png" for n in range(8)]


def _sleeps(monkeypatch) -> list[float]:
    """The waits the scorer's request threads ask for between tries, not waited."""
    waits: list[float] = []
    monkeypatch.setattr(RemoteBackend, "_pause", lambda self, seconds: waits.append(seconds))
    return waits


def test_a_429_is_waited_out_as_its_retry_after_says_and_each_wait_is_said(
    photos, serve, tmp_path, monkeypatch, capsys
):
    refused = {"left": 2}

    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        if refused["left"] > 0:
            refused["left"] -= 1
            handler.answer(429, {"error": "slow down"}, {"Retry-After": "7"})
            return True
        return False

    url, posts = serve(fault)
    waits = _sleeps(monkeypatch)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 8, "--no-progress") == 0
    assert waits == [7.0, 7.0] and len(posts) == 3
    assert not any(row["error"] for row in _rows(out))
    lines = [line for line in capsys.readouterr().err.splitlines() if "asked to wait" in line]
    said = f"the service at {url} asked to wait 7 s (HTTP 429: slow down): waiting"
    assert lines == [f"{said} (retry 1 of 5)", f"{said} (retry 2 of 5)"], lines


def test_a_retry_after_longer_than_the_scorer_waits_stops_the_run_at_once(photos, serve, tmp_path, monkeypatch, capsys):
    url, posts = serve(lambda h, body, names: h.answer(429, {"error": "quota used"}, {"Retry-After": "3600"}) or True)
    waits = _sleeps(monkeypatch)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 8, "--no-progress") == 1
    err = capsys.readouterr().err
    assert "HTTP 429: quota used (it asks to be asked again in 3600 s)" in err and "--resume" in err, err
    assert len(posts) == 1 and not any(w >= MAX_RETRY_AFTER for w in waits)


def test_a_proxys_413_without_a_reason_shrinks_the_requests(photos, serve, tmp_path):
    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        if len(names) > 2:
            handler.answer(413, b"<html>413 Request Entity Too Large</html>")
            return True
        return False

    url, posts = serve(fault)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 8, "--no-progress") == 0
    assert not any(row["error"] for row in _rows(out)) and len(_rows(out)) == 8
    assert max(len(names) for names in posts[-2:]) <= 2


# ------------------------------------------------------------------------------------------ a write that fails
class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: a write takes what fits, then fails with ENOSPC."""

    room = 0

    def write(self, data) -> int:
        data = bytes(data)
        if _FullDisk.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        taken = data[: _FullDisk.room]
        _FullDisk.room -= len(taken)
        return super().write(taken)


def _full_disk(monkeypatch, room: int) -> None:
    """The scorer's output goes to a disk that fills after ``room`` more bytes."""
    _FullDisk.room = room

    def opened(path, mode="r", newline=None, encoding=None, errors=None):
        raw = _FullDisk(path, mode.replace("t", ""))
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding=encoding, errors=errors, newline=newline)

    monkeypatch.setattr(loop, "open", opened, raising=False)


@pytest.mark.parametrize("rows_that_fit", [0, 3, 5])
def test_a_full_disk_leaves_exactly_the_rows_the_summary_counts(rows_that_fit, photos, serve, tmp_path, capsys):
    """Requests of two images: the write of a chunk fails after some of its rows (3: one of the second chunk's
    two) and half of the next; the file holds whole rows only, as many as the summary says, and the rest are
    said to be lost."""
    url, _ = serve(lambda handler, body, names: False)
    out = tmp_path / "preds.csv"
    score = [photos, "--url", url, "--out", out, "--batch-size", 2, "--workers", 1, "--no-progress"]
    assert _score(*score) == 0
    whole = out.read_text()
    header, *lines = whole.splitlines(keepends=True)
    room = len(header) + sum(len(line) for line in lines[:rows_that_fit]) + len(lines[rows_that_fit]) // 2
    out.unlink()

    with pytest.MonkeyPatch.context() as patch:
        _full_disk(patch, room)
        assert _score(*score) == OUTPUT_LOST
    err = capsys.readouterr().err
    assert out.read_text() == header + "".join(lines[:rows_that_fit])  # no row cut short
    lost = 2 - rows_that_fit % 2
    assert f"error: cannot write {out}: No space left on device" in err, err
    assert f"stopped: scored {rows_that_fit}, failed 0" in err, err
    assert f"not written: {lost} more row{'s' if lost > 1 else ''}, lost with the write that failed" in err, err
    assert f"{out} holds {rows_that_fit} rows" in err and "rerun with --resume to continue" in err, err

    assert _score(*score, "--resume") == 0
    assert out.read_text() == whole


def test_an_output_device_that_is_full_from_the_start_has_the_same_status(photos, serve, capsys):
    url, _ = serve(lambda handler, body, names: False)
    if not Path("/dev/full").exists():
        pytest.skip("needs /dev/full")
    assert _score(photos, "--url", url, "--out", "/dev/full", "--format", "csv", "--no-progress") == OUTPUT_LOST
    err = capsys.readouterr().err
    assert err == "error: cannot write /dev/full: No space left on device\n", err


def test_a_service_that_ignores_k_still_writes_rows_of_k(photos, serve, tmp_path):
    """It answers its three classes to --k 1: the rows were longer than the CSV header, and --resume refused them."""
    url, _ = serve(lambda handler, body, names: False)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--k", 1, "--no-progress") == 0
    with open(out, newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["path", "label_1", "confidence_1", "error"] and {len(line) for line in lines} == {4}
    assert _score(photos, "--url", url, "--out", out, "--k", 1, "--resume", "--no-progress") == 0


def test_an_image_is_blamed_only_by_a_request_of_it_alone_on_the_service(photos, serve, tmp_path, capsys):
    """Two workers: x.png meets a hiccup twice and is sent alone to be blamed or cleared, while the other worker's
    p.png crashes the service; the crash must not be x.png's error row. The fake crashes only when both are in
    flight at once (the barrier), and then answers 503 while it restarts."""
    root = tmp_path / "two"
    root.mkdir()
    shutil.copy(photos / "5.png", root / "p.png")
    shutil.copy(photos / "3.png", root / "x.png")
    poison, innocent = (root / "p.png").read_bytes(), (root / "x.png").read_bytes()
    together = threading.Barrier(2, timeout=1.0)
    state = {"x": 0, "p": 0, "down": 0}
    lock = threading.Lock()

    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        with lock:
            if state["down"] > 0:
                state["down"] -= 1
                handler.answer(503, {"error": "restarting"})
                return True
            which = "p" if poison in body else "x" if innocent in body else None
            if which:
                state[which] += 1
            seen = state[which] if which else 0
        if which == "x" and seen <= 2:
            handler.answer(500, {"error": "hiccup"})
            return True
        if (which == "x" and seen == 3) or (which == "p" and seen == 1):
            try:
                together.wait()
            except threading.BrokenBarrierError:
                pass  # not in flight together: no crash meets x.png
            else:
                with lock:
                    state["down"] = 2
                handler.drop(reset=True)
                return True
        if which == "p":
            handler.drop(reset=True)
            return True
        return False

    url, _ = serve(fault)
    out = tmp_path / "preds.csv"
    status = _score(root, "--url", url, "--out", out, "--batch-size", 1, "--workers", 2, "--no-progress")
    err = capsys.readouterr().err
    assert status == 0, err
    assert {row["path"] for row in _rows(out) if row["error"]} == {"p.png"}, err
    assert "scored 1, failed 1" in err, err


def test_an_image_that_hangs_costs_one_timeout_per_halving(photos, serve, tmp_path, capsys):
    """With --timeout T, each request of an image that hangs costs T: the requests of 8 images are halved to it
    with no retry of each half, and it is blamed by one request of it alone; the user is told what is going on."""
    url, posts = serve(_poisoned(photos, lambda h: h.server.release.wait(10)))  # type: ignore[attr-defined]
    out = tmp_path / "preds.csv"
    status = _score(photos, "--url", url, "--out", out, "--batch-size", 8, "--timeout", 0.3, "--no-progress")
    err = capsys.readouterr().err
    assert status == 0, err
    # the whole request twice, its halves of 4, 2 and 1 once each, then 5.png alone once after the probe
    assert sum("5.png" in names for names in posts) == 2 + 3 + 1, posts
    assert f"the service at {url} failed a request of 8 images (no answer within 0.3 s (--timeout)): looking" in err


# ------------------------------------------------------------------------------------ a service that stalls
def _hangs(handler: Fake, body: bytes, names: list[str]) -> bool:
    handler.server.release.wait(10)  # type: ignore[attr-defined]
    return True


def test_a_service_that_hangs_on_every_request_stops_the_run_after_four_timeouts(photos, serve, tmp_path, capsys):
    """/readyz answers, /classify never does: the request of 8 images twice, the plain test image twice, then the
    run stops as for a service that is gone (each timeout is --timeout: two minutes by default)."""
    url, posts = serve(_hangs)
    out = tmp_path / "preds.csv"
    status = _score(photos, "--url", url, "--out", out, "--batch-size", 8, "--timeout", 0.3, "--no-progress")
    err = capsys.readouterr().err
    assert status == 1, err
    assert [len(names) for names in posts] == [8, 8, 1, 1], posts
    said = "failed 2 times: no answer within 0.3 s (--timeout), on a plain test image: the service is failing"
    assert f"error: the service at {url} {said}" in err, err
    assert "slower than --timeout 0.3 s allows with --workers 4 (raise --timeout, or lower --workers)" in err, err
    assert "rerun with --resume to continue" in err and "Traceback" not in err, err


def test_a_slow_service_that_takes_one_request_at_a_time_is_not_taken_for_a_failing_one(
    serve, tmp_path, monkeypatch, capsys
):
    """A working service that handles one request at a time (0.05 s + 0.02 s an image): four workers' requests of
    three queue there, so some time out and are searched. The plain test image is sent while no other request of
    the run is in flight, and answered; behind the other workers' requests it went unanswered twice, and the run
    stopped, saying the service was failing."""
    from PIL import Image

    monkeypatch.setattr(RemoteBackend, "RETRY_DELAY", 0.001)
    root = tmp_path / "many"
    root.mkdir()
    for n in range(24):
        Image.new("RGB", (32, 32), (10 * n, 50, 90)).save(root / f"{n:02d}.png")
    one_at_a_time = threading.Lock()

    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        with one_at_a_time:
            time.sleep(0.05 + 0.02 * len(names))
        handler.classify(names)  # OSError where the scorer gave up on it
        return True

    url, posts = serve(fault)
    out = tmp_path / "preds.csv"
    score = ["--batch-size", 3, "--workers", 4, "--timeout", 0.3, "--no-progress"]
    status = _score(root, "--url", url, "--out", out, *score)
    err = capsys.readouterr().err
    assert ["probe.png"] in posts, posts  # requests timed out: the service was tested
    assert status == 0, err
    assert len(_rows(out)) == 24 and not any(row["error"] for row in _rows(out)), err


def test_a_worker_with_the_service_to_itself_tests_it_without_waiting_for_itself(serve):
    """An image is blamed inside ``_alone``, after a test image that takes the service to itself too: the worker
    must not wait for its own hold (a deadlock that hangs the run)."""
    url, posts = serve(lambda handler, body, names: False)
    backend = RemoteBackend(url, None, workers=2, timeout=5.0, per_request=4)
    checked = threading.Event()

    def blame() -> None:
        with backend._alone():
            backend._check_service()
            checked.set()

    worker = threading.Thread(target=blame, daemon=True)
    worker.start()
    worker.join(10)
    try:
        assert checked.is_set() and posts == [["probe.png"]], posts
        with backend._alone():  # given back: another worker may have it
            pass
    finally:
        backend.close()


def test_a_run_stopped_by_a_hanging_service_sends_no_more_requests(photos, serve, tmp_path, capsys):
    """Two workers, four chunks: once one worker finds the service hanging, the chunk that starts after it sends
    nothing, so the run ends when it says it stopped rather than after another search."""
    url, posts = serve(_hangs)
    out = tmp_path / "preds.csv"
    score = ["--batch-size", 2, "--workers", 2, "--timeout", 0.3, "--no-progress"]
    assert _score(photos, "--url", url, "--out", out, *score) == 1
    err = capsys.readouterr().err
    assert len(posts) <= 2 * 4 and {names[0] for names in posts if len(names) == 2} <= {"0.png", "2.png"}, posts
    assert err.rstrip().endswith("rerun with --resume to continue") and err.count("error:") == 1, err


def test_a_500_that_asks_to_wait_an_hour_is_the_services_failure_not_the_images(photos, serve, tmp_path, capsys):
    url, _ = serve(_poisoned(photos, lambda h: h.answer(500, {"error": "down"}, {"Retry-After": "3600"})))
    out = tmp_path / "preds.csv"
    score = ["--batch-size", 4, "--workers", 1, "--no-progress"]
    assert _score(photos, "--url", url, "--out", out, *score) == 1
    err = capsys.readouterr().err
    assert f"error: the service at {url} failed: HTTP 500: down (it asks to be asked again in 3600 s)" in err, err
    assert "looking for the image" not in err and "stopped: scored 4, failed 0" in err, err
    assert not any(row["error"] for row in _rows(out))


class _Terminal(io.StringIO):
    """A standard error that says it is a terminal, so that the progress bar is drawn on it."""

    def isatty(self) -> bool:
        return True


def test_the_search_line_is_not_written_into_the_progress_bar(photos, serve, tmp_path, monkeypatch):
    url, _ = serve(_poisoned(photos, lambda h: h.answer(500, {"error": "the model raised"})))
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 8, "--workers", 1) == 0
    # what a terminal shows of each line: the text after its last carriage return
    shown = [line.rsplit("\r", 1)[-1] for line in terminal.getvalue().split("\n")]
    search = [line for line in shown if "looking for the image" in line]
    assert len(search) == 1 and search[0].startswith(f"the service at {url} failed"), terminal.getvalue()


def test_a_wait_the_service_asked_for_ends_as_the_run_stops(photos, serve, tmp_path, capsys):
    """One worker waits out a Retry-After of 50 s while another's request is refused for good: the run stopped, and
    then sat out the rest of the wait (so did Ctrl-C, which stops the run the same way)."""
    answered = {"count": 0}
    lock = threading.Lock()

    def fault(handler: Fake, body: bytes, names: list[str]) -> bool:
        with lock:
            answered["count"] += 1
            first = answered["count"] == 1
        if first:
            handler.answer(429, {"error": "slow down"}, {"Retry-After": "50"})
        else:
            time.sleep(0.5)  # after the first worker has begun its wait
            handler.answer(404, {"error": "unknown model 'x'", "reason": "unknown_model"})
        return True

    url, _ = serve(fault)
    out = tmp_path / "preds.csv"
    began = time.monotonic()
    assert _score(photos, "--url", url, "--out", out, "--batch-size", 4, "--workers", 2, "--no-progress") == 1
    took = time.monotonic() - began
    err = capsys.readouterr().err
    assert "asked to wait 50 s" in err and "rejected the request (404)" in err, err
    assert took < 25, f"the run ended {took:.0f} s after it began: the 50 s wait was sat out"
