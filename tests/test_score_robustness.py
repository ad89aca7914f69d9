"""Batch scoring when things go wrong around it: two runs into one output, an image the service fails on, a
decoder that fails for a reason no file explains, and the fit the decoders must be given."""

from __future__ import annotations

import csv
import inspect
import re
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from conftest import ROOT, mock_service, wait_for_lines
from inference.image_limits import ImageDecodeError
from inference.manifest import load_manifest
from service.contract import ModelInfo, ModelList
from service.score import decode as decode_module
from service.score.cli import main as score_main
from service.score.decode import decode_chunk, decode_into
from service.score.errors import DecoderFailure
from service.score.local import LocalBackend
from service.score.pipeline import chunks
from service.score.remote import RemoteBackend
from service.score.walk import Entry

CLASSES = ["alpha", "beta", "gamma"]
Handler = Callable[[httpx.Request], httpx.Response]


def _score(*args) -> int:
    return score_main([str(a) for a in args])


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def photos(image_folder, tmp_path) -> Path:
    """Eight PNGs, 0.png to 7.png: scored in that order."""
    root = tmp_path / "photos"
    root.mkdir()
    for n, source in enumerate(sorted((image_folder / "alpha").iterdir())[:8]):
        shutil.copy(source, root / f"{n}.png")
    return root


def _service(fails_on: Callable[[bytes], bool] = lambda body: False, hold: threading.Event | None = None) -> Handler:
    """A stand-in for the service: GET /readyz and /models, and POST /classify answering the first class for every
    image, 500 for a request ``fails_on`` (its body) and, with ``hold``, only once ``hold`` is set."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if request.url.path == "/models":
            info = ModelInfo(
                name="fake",
                dataset="folder",
                arch="resnet9",
                classes=CLASSES,
                precision="fp32",
                accuracy=None,
                input_size=[32, 32],
                fit="center_crop",
                default=True,
            )
            return httpx.Response(200, json=ModelList(default="fake", models=[info]).model_dump(mode="json"))
        body = request.read()
        if hold is not None:
            hold.wait(30)
        if fails_on(body):
            return httpx.Response(500, json={"error": "the model raised on this batch"})
        top = [{"label": c, "index": i, "confidence": 0.5 / (i + 1)} for i, c in enumerate(CLASSES)]
        names = re.findall(rb'name="images"; filename="([^"]*)"', body)
        predictions = [{"filename": name.decode(), "top_k": top} for name in names]
        return httpx.Response(200, json={"model": "fake", "predictions": predictions})

    return handler


@pytest.fixture
def served() -> Iterator[tuple[str, threading.Event]]:
    """A stand-in service on a port, for a scorer in another process; its answers wait for the event."""
    hold = threading.Event()
    handler = _service(hold=hold)

    class Bridge(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = httpx.Request(self.command, f"http://stub{self.path}", headers=dict(self.headers), content=body)
            response = handler(request)
            self.send_response(response.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Bridge)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hold
    finally:
        hold.set()
        server.shutdown()
        server.server_close()


def _first_run(photos: Path, url: str, out: Path) -> subprocess.Popen:
    """A scorer in another process, one image per request, started and holding ``out``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "score", photos, "--url", url, "--out", out, "--batch-size", "1"]
        + ["--workers", "1", "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_lines(out, 1, proc)  # its header: the output is opened, under its lock
    return proc


# ---------------------------------------------------------------------------------------------- one run per output
def test_a_second_run_into_the_same_output_is_refused_naming_the_first(photos, served, tmp_path, capsys):
    url, hold = served
    out = tmp_path / "preds.csv"
    first = _first_run(photos, url, out)
    try:
        for flag in ("--resume", "--overwrite"):
            assert _score(photos, "--url", url, "--out", out, flag, "--no-progress") == 2
            err = capsys.readouterr().err
            assert f"error: {out} is being written by another run (pid {first.pid})" in err, err
            assert err.count("\n") == 1, err
    finally:
        hold.set()
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert sorted(row["path"] for row in _rows(out)) == [f"{n}.png" for n in range(8)]
    assert not (tmp_path / ".preds.csv.lock").exists()


def test_the_lock_of_a_killed_run_does_not_hold_the_next_one_off(photos, served, tmp_path, capsys):
    url, hold = served
    out = tmp_path / "preds.csv"
    first = _first_run(photos, url, out)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    hold.set()
    assert _score(photos, "--url", url, "--out", out, "--resume", "--no-progress") == 0, capsys.readouterr().err
    assert sorted(row["path"] for row in _rows(out)) == [f"{n}.png" for n in range(8)]


# ------------------------------------------------------------------------------- an image the service fails on
def test_an_image_the_service_fails_on_is_an_error_row_and_the_run_goes_on(photos, monkeypatch, tmp_path, capsys):
    poison = (photos / "5.png").read_bytes()
    monkeypatch.setattr(RemoteBackend, "RETRY_DELAY", 0.001)
    mock_service(monkeypatch, _service(fails_on=lambda body: poison in body))
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", "http://scorer.test", "--out", out, "--batch-size", 8, "--no-progress") == 0
    errors = {row["path"]: row["error"] for row in _rows(out)}
    assert sorted(errors) == [f"{n}.png" for n in range(8)]
    assert {path for path, error in errors.items() if error} == {"5.png"}
    assert "HTTP 500" in errors["5.png"] and "the model raised on this batch" in errors["5.png"]
    assert "scored 7, failed 1" in capsys.readouterr().err


def test_a_service_that_fails_every_request_still_stops_the_run(photos, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(RemoteBackend, "RETRY_DELAY", 0.001)
    mock_service(monkeypatch, _service(fails_on=lambda body: True))
    out = tmp_path / "preds.csv"
    assert _score(photos, "--url", "http://scorer.test", "--out", out, "--batch-size", 4, "--no-progress") == 1
    err = capsys.readouterr().err
    assert "failed 6 times: HTTP 500: the model raised on this batch" in err, err
    assert _rows(out) == []  # no image written as the service's failure


# ------------------------------------------------------------------------------- a decoder that fails for no file
def test_an_exception_no_file_explains_stops_the_run_with_the_rows_so_far(
    photos, tiny_models_dir, monkeypatch, tmp_path, capfd
):
    real = decode_module.decode_pixels

    def buggy(data, *args, **kwargs):
        if data == (photos / "5.png").read_bytes():
            raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")
        return real(data, *args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_pixels", buggy)
    out = tmp_path / "preds.csv"
    args = ["--models-dir", tiny_models_dir, "--out", out, "--batch-size", 1, "--workers", 0, "--no-progress"]
    assert _score(photos, *args) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert f"error: decoding {photos / '5.png'} raised TypeError: unsupported operand" in err, err
    rows = _rows(out)
    assert [row["path"] for row in rows] == [f"{n}.png" for n in range(5)]
    assert not any(row["error"] for row in rows)


def test_a_decode_workers_failure_no_file_explains_reaches_the_run(photos, tiny_models_dir):
    """From the worker processes too: a fit the decoders do not know is every file's fault, not one's."""
    entry = load_manifest(tiny_models_dir, verify=False).get("tiny")
    backend = LocalBackend(tiny_models_dir / entry.file, "cpu", 1, workers=1, batch_size=4, streams=1, fit="stretch")
    try:
        entries = iter([Entry(path.name, str(path)) for path in sorted(photos.iterdir())])
        with pytest.raises(DecoderFailure, match=r"decoding .*0.png raised \w+: unknown fit 'stretch'"):
            list(backend.rows(chunks(entries, backend.batch_size, set())))
    finally:
        backend.close()


def test_a_files_own_fault_is_still_its_error_row(photos, tiny_models_dir, tmp_path, capsys):
    (photos / "5.png").write_bytes(b"not a png")
    out = tmp_path / "preds.csv"
    assert _score(photos, "--models-dir", tiny_models_dir, "--out", out, "--workers", 0, "--no-progress") == 0
    errors = {row["path"]: row["error"] for row in _rows(out)}
    assert len(errors) == 8 and "not a readable image" in errors["5.png"]


def test_the_ray_stages_let_an_exception_no_file_explains_through(photos, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    from service.score import ray_stages

    table = pa.table(
        {
            "rel": pa.array([b"0.png", b"1.png"], pa.binary()),
            "error": pa.array([None, None], pa.binary()),
            "data": pa.array([(photos / "0.png").read_bytes(), b"junk"], pa.large_binary()),
        }
    )
    decoded = ray_stages.decode_files(table, (32, 32), "center_crop")
    assert decoded.column("error").to_pylist()[0] is None
    assert b"not a readable image" in decoded.column("error").to_pylist()[1]

    def buggy(*args, **kwargs):
        raise KeyError("fit")

    monkeypatch.setattr(ray_stages, "decode_pixels", buggy)
    with pytest.raises(DecoderFailure, match="decoding 0.png raised KeyError"):
        ray_stages.decode_files(table, (32, 32), "center_crop")


def test_the_ray_engine_finds_the_decoder_failure_inside_rays_wrapping():
    from service.score.ray_failures import _decoder_failure

    class Wrapped(Exception):  # as Ray's task error holds the stage's exception, or only its traceback's text
        def __init__(self, cause: BaseException | None, text: str = "Traceback (most recent call last):\n") -> None:
            super().__init__(text)
            self.cause = cause

    said = "decoding a.png raised TypeError: x"
    traceback = f"Traceback (most recent call last):\n  ...\nservice.score.errors.DecoderFailure: {said}\n\nmore"
    for wrapped in (Wrapped(DecoderFailure(said)), Wrapped(Wrapped(None, traceback))):
        found = _decoder_failure(wrapped)
        assert isinstance(found, DecoderFailure) and str(found) == said
    assert _decoder_failure(Wrapped(RuntimeError("a node was lost"))) is None


# ---------------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("decoder", [decode_chunk, decode_into])
def test_the_scorers_decoders_take_the_fit_by_name_with_no_default(decoder):
    """As inference.preprocess's decoders: a default gave a caller other pixels than the model's card names."""
    fit = inspect.signature(decoder).parameters["fit"]
    assert fit.kind is inspect.Parameter.KEYWORD_ONLY and fit.default is inspect.Parameter.empty


def test_decode_chunk_without_a_fit_is_a_type_error_not_a_default(photos):
    with pytest.raises(TypeError, match="fit"):
        decode_chunk([str(photos / "0.png")], (32, 32))  # type: ignore[call-arg]
    assert decode_chunk([str(photos / "0.png")], (32, 32), fit="squash").ok == [0]


def test_failure_message_words_only_what_a_file_can_cause():
    assert decode_module.failure_message(ImageDecodeError("empty file (0 bytes)")) == "empty file (0 bytes)"
    assert "out of memory" in decode_module.failure_message(MemoryError())
