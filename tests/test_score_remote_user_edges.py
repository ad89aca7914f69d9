"""Batch scoring with --url as a user points it: at a path of the service, at another web server, at https:// on a
plain HTTP port, with a mistyped protocol, a query or a pasted space; and at a service whose default model changes
while the run goes on (a restart, a rolling update behind a load balancer), whose rows must stay one model's."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from fakes import CLASSES, FakeService, base_url, models_listing_of, serving
from service.score.cli import main as score_main
from service.score.errors import UserError
from service.score.remote import RemoteBackend
from service.score.remote_options import checked_url
from service.score.walk import Entry

MODELS = models_listing_of(["fake", "other"], CLASSES, default="fake")
# Each model's top class: the rows tell which model answered.
TOP = {"fake": "alpha", "other": "gamma"}


class Service(FakeService):
    """GET /readyz and /models at the root only (404 elsewhere, as the service's own JSON), or, as another web
    server, a 404 page for every GET (``server.html_404``); POST /classify answered by the model the form names,
    or by ``server.default`` where it names none (or where ``server.ignores_model``), to ``server.key`` alone
    where that is set, once ``server.hold`` is set."""

    def do_GET(self) -> None:
        if self.server.html_404:  # type: ignore[attr-defined]
            self.answer(404, b"<!DOCTYPE HTML>\n<html>\n<body>\n<h1>Error response</h1>\n</body>\n</html>\n")
        elif self.path == "/readyz":
            self.answer(200, {"status": "ready"})
        elif self.path == "/models":
            self.answer(200, MODELS)
        else:
            self.answer(404, {"error": f"no {self.path!r} on this service", "reason": "no_such_path"})

    def do_POST(self) -> None:
        body, names = self.read_images()
        self.server.posted.set()  # type: ignore[attr-defined]
        self.server.hold.wait(10)  # type: ignore[attr-defined]
        key = self.server.key  # type: ignore[attr-defined]
        if key is not None and self.headers.get("Authorization") != f"Bearer {key}":
            self.answer(401, {"error": "this service requires an API key", "reason": "unauthorized"})
            return
        asked = re.search(rb'name="model"\r\n\r\n([^\r]*)\r\n', body)
        server = self.server
        model = server.default if asked is None or server.ignores_model else asked[1].decode()  # type: ignore[attr-defined]
        top = [{"label": TOP[model], "index": 0, "confidence": 0.9}]
        self.answer(200, {"model": model, "predictions": [{"filename": n, "top_k": top} for n in names]})


@pytest.fixture
def service() -> Iterator[ThreadingHTTPServer]:
    """The fake service on a free port: its default for requests that name no model is ``fake``, as its
    /models says, until a test changes it."""
    hold = threading.Event()
    hold.set()
    state = {"default": "fake", "ignores_model": False, "html_404": False, "key": None, "posted": threading.Event()}
    with serving(Service, hold=hold, **state) as server:
        try:
            yield server
        finally:
            hold.set()


@pytest.fixture
def photos(image_folder, tmp_path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for source in sorted((image_folder / "alpha").iterdir())[:6]:
        shutil.copy(source, root / source.name)
    return root


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_default_that_changes_during_the_run_leaves_every_row_the_first_models(service, photos, tmp_path):
    service.default = "other"  # after the scorer read /models: a restart or a rolling update with a new default
    out = tmp_path / "preds.csv"
    assert score_main([str(photos), "--url", base_url(service), "--out", str(out), "--no-progress"]) == 0
    rows = _rows(out)
    assert len(rows) == 6 and {row["label_1"] for row in rows} == {TOP["fake"]}, rows


def test_a_service_that_answers_with_another_model_stops_the_run_writing_none_of_its_rows(
    service, photos, tmp_path, capsys
):
    service.default, service.ignores_model = "other", True
    out = tmp_path / "preds.csv"
    assert score_main([str(photos), "--url", base_url(service), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "answered with model 'other', not 'fake'" in err and "Traceback" not in err, err
    assert _rows(out) == []


@pytest.mark.parametrize("path", ["/classify", "/api/"])
def test_a_url_naming_a_path_of_the_service_names_the_services_address(service, photos, tmp_path, capsys, path):
    url = base_url(service)
    assert score_main([str(photos), "--url", url + path, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not ready" not in err, err
    assert f"--url {url} (its address, without a path)" in err, err


def test_a_web_server_that_is_not_the_service_is_one_line_without_its_page(service, photos, tmp_path, capsys):
    service.html_404 = True
    url = base_url(service)
    assert score_main([str(photos), "--url", url, "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "<html>" not in err, err
    assert f"no scoring service at {url}: GET {url}/readyz answered 404 (a web page)" in err, err


def test_https_to_a_plain_http_service_suggests_http(service, photos, tmp_path, capsys):
    address = base_url(service).removeprefix("http://")
    assert score_main([str(photos), "--url", f"https://{address}", "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--url http://{address})" in err, err


@pytest.mark.parametrize(
    "url, said",
    [
        ("http:/localhost:3000", "did you mean --url http://localhost:3000?"),
        ("HTTP//localhost:3000", "did you mean --url http://localhost:3000?"),
        ("localhost:3000", "did you mean --url http://localhost:3000?"),
        ("httpserver:3000", "did you mean --url http://httpserver:3000?"),
        ("http://localhost:3000/?model=x", "has a query (?model=x)"),
        ("http://localhost:3000/ ", "has spaces around it: --url http://localhost:3000/"),
        (" http://localhost:3000", "has spaces around it: --url http://localhost:3000"),
    ],
)
def test_a_mistyped_url_is_refused_with_what_to_write(url, said):
    with pytest.raises(UserError, match=re.escape(said)):
        checked_url(url)


def test_a_key_read_with_its_line_end_is_sent_as_the_service_reads_its_keys(service, photos, tmp_path, monkeypatch):
    service.key = "k1"
    monkeypatch.setenv("CIFAR_API_KEY", "k1\r\n")  # a key file written on Windows, read with $(cat ...)
    out = tmp_path / "preds.csv"
    assert score_main([str(photos), "--url", base_url(service), "--out", str(out), "--no-progress"]) == 0
    assert len(_rows(out)) == 6


@pytest.mark.parametrize("key", ["s\u00e9cret-k1", "secret\nk1"])
def test_a_key_no_header_can_carry_is_one_line_that_does_not_show_it(service, photos, tmp_path, capsys, key):
    service.key = "k1"
    out = tmp_path / "preds.csv"
    assert score_main([str(photos), "--url", base_url(service), "--api-key", key, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "secret" not in err and "s\u00e9cret" not in err, err
    assert "--api-key, or the CIFAR_API_KEY variable) holds a character an HTTP header cannot carry" in err, err
    assert not out.exists()


def test_a_ctrl_c_while_close_waits_abandons_the_request_and_is_handed_on_once_it_ended(service, photos):
    """close() waits for the requests in flight (each up to --timeout). A Ctrl-C there abandons them at once, and
    is raised only after they have ended, for the run to end as interrupted (the command's close holds it and
    says it, no traceback): neither dropped, as a stop after a failure was, nor raised halfway through the wait."""
    timeout = 60.0
    backend = RemoteBackend(base_url(service), None, 1, timeout, 4)
    service.posted.clear()  # set by the scorer's key check: the request to wait for is the chunk's
    service.hold.clear()  # the service never answers unless the test lets it
    path = next(photos.iterdir())
    future = backend.submit([Entry(path.name, str(path))])
    assert service.posted.wait(10)
    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            backend.close()
        waited = time.monotonic() - started
        assert future.done(), "the stop was raised before the request in flight had ended"
        assert not service.hold.is_set()
        assert waited < timeout / 2, f"close waited {waited:.1f} s: the request was waited out, not abandoned"
    finally:
        service.hold.set()
        backend.pool.shutdown(wait=True)


def test_workers_0_with_url_is_refused_not_run_as_one_request_at_a_time(photos, tmp_path, capsys):
    """--workers 0 means decoding in the main process, which a --url run has not: it ran as 1 without a word."""
    out = tmp_path / "preds.csv"
    assert score_main([str(photos), "--url", "http://127.0.0.1:9", "--workers", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --workers with --url is the number of concurrent requests: at least 1, not 0\n", err
    assert not out.exists()
