"""Optional API keys and CORS: the settings, the gate on its own, and one live server with both configured."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import ROOT, running_service
from service.access import ApiKeyGate, record_refusal, requires_key
from service.contract import Rejection
from service.settings import ServiceSettings, SettingsError

ORIGIN = "http://page.example"


def test_keys_come_from_the_variable_and_the_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# rotated monthly\nfile-key-1\n\n  file-key-2  # the batch job\n")
    settings = ServiceSettings.from_env({"CIFAR_API_KEYS": "env-key, ,other", "CIFAR_API_KEYS_FILE": str(keys)})
    assert settings.api_key_set() == {"env-key", "other", "file-key-1", "file-key-2"}
    assert ServiceSettings.from_env({}).api_key_set() == frozenset()
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(SettingsError, match="holds no key"):
        ServiceSettings.from_env({"CIFAR_API_KEYS_FILE": str(empty)}).api_key_set()
    with pytest.raises(SettingsError, match="holds no key"):
        ServiceSettings.from_env({"CIFAR_API_KEYS": " , "}).api_key_set()
    with pytest.raises(SettingsError, match="CIFAR_API_KEYS_FILE"):
        ServiceSettings.from_env({"CIFAR_API_KEYS_FILE": str(tmp_path / "missing")}).api_key_set()
    assert ServiceSettings.from_env({"CIFAR_CORS_ORIGINS": "https://a.test, https://b.test"}).cors_origin_list == [
        "https://a.test",
        "https://b.test",
    ]


@pytest.mark.parametrize("given", ["--api-keys-file", "--api-keys"])
def test_serve_refuses_a_key_file_or_list_without_keys(tmp_path, given):
    empty = tmp_path / "keys"
    empty.write_text("\n")
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", given, str(empty) if given == "--api-keys-file" else " , "],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = f"error: {given} {str(empty) if given == '--api-keys-file' else repr(',')} holds no key"
    assert done.returncode == 2 and said in done.stderr, done.stderr  # the flag typed, named once


@pytest.mark.parametrize("file_from", ["flag", "variable"])
def test_a_key_file_without_keys_is_named_as_it_was_given_beside_api_keys(tmp_path, file_from):
    """Beside --api-keys, the empty key file was named "--api-keys_FILE": the variables' names were replaced by
    the flags' in the message's text, and CIFAR_API_KEYS is the start of CIFAR_API_KEYS_FILE."""
    empty = tmp_path / "keys"
    empty.write_text("\n")
    flags = ["--api-keys-file", str(empty)] if file_from == "flag" else []
    env = {**os.environ, **({} if flags else {"CIFAR_API_KEYS_FILE": str(empty)})}
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--api-keys", "k1", *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    named = "--api-keys-file" if flags else "CIFAR_API_KEYS_FILE"
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"error: {named} {empty} holds no key", done.stderr


def test_the_gate_guards_only_the_inference_routes():
    assert all(requires_key(p) for p in ("/classify", "/infer", "/v2/models/tiny/infer", "/v2/models/a/b/infer"))
    assert not any(
        requires_key(p)
        for p in (
            "/",
            "/docs",
            "/docs.json",
            "/models",
            "/metrics",
            "/readyz",
            "/v2",
            "/v2/models/tiny",
            "/static/app.js",
        )
    )


def _call(gate: ApiKeyGate, path: str, authorization: bytes | list[bytes] | None) -> tuple[int, bytes]:
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"classified"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    gate.app = app
    given = [] if authorization is None else authorization if isinstance(authorization, list) else [authorization]
    headers = [(b"authorization", value) for value in given]
    asyncio.run(gate({"type": "http", "method": "POST", "path": path, "headers": headers}, receive, send))
    return sent[0]["status"], sent[1]["body"]


def test_the_gate_answers_401_403_or_passes(monkeypatch):
    from service import metrics

    monkeypatch.setattr(metrics.ServiceMetrics, "get", classmethod(lambda cls: type("M", (), {"reject": print})()))
    gate = ApiKeyGate(None, frozenset({"alpha-key", "beta-key"}))
    assert gate.known(b"beta-key") and not gate.known(b"beta-ke") and not gate.known(b"beta-keyy")
    assert _call(gate, "/classify", b"Bearer alpha-key") == (200, b"classified")
    assert _call(gate, "/classify", b"bearer beta-key") == (200, b"classified")  # the scheme is case-insensitive
    status, body = _call(gate, "/classify", None)
    assert status == 401 and b'"reason": "unauthorized"' in body
    assert _call(gate, "/classify", b"Basic alpha-key")[0] == 401
    status, body = _call(gate, "/v2/models/tiny/infer", b"Bearer wrong")
    # the protocol's error object on /v2; the message says what to send instead
    expected = b"unknown API key: send 'Authorization: Bearer KEY' with a key this service accepts (ask its operator)"
    assert status == 403 and body == b'{"error": "' + expected + b'"}'
    # two headers: proxies and servers differ on which counts (the first, the last, both joined), so neither does
    for pair in ([b"Bearer wrong", b"Bearer alpha-key"], [b"Bearer alpha-key", b"Bearer wrong"]):
        status, body = _call(gate, "/classify", pair)
        assert status == 401 and b"more than one Authorization header" in body, body
    with pytest.raises(ValueError, match="needs at least one key"):
        ApiKeyGate(None, frozenset())


def test_a_refusals_log_line_escapes_every_kind_of_line_break(monkeypatch, caplog):
    """Not only C0 controls: NEL (U+0085, from %C2%85) and the line and paragraph separators end a line for
    str.splitlines and for log viewers."""
    from service import metrics

    monkeypatch.setattr(metrics.ServiceMetrics, "get", classmethod(lambda cls: type("M", (), {"reject": print})()))
    with caplog.at_level(logging.INFO, logger="bentoml.cifar.refusals"):
        record_refusal(Rejection("no_such_path", "no such path"), "GET", "/a\nb\x85c\u2028d\u2029e")
    (line,) = [record.getMessage() for record in caplog.records]
    assert len(line.splitlines()) == 1 and "/a\\x0ab\\x85c\\u2028d\\u2029e" in line, line


class Server(str):
    """The base URL, with the server's log file."""

    log: Path


@pytest.fixture(scope="module")
def guarded(tiny_models_dir, tmp_path_factory):
    home = tmp_path_factory.mktemp("bentoml_home")
    env = {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "CIFAR_API_KEYS": "first-key,second-key",
        "CIFAR_CORS_ORIGINS": ORIGIN,
    }
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_service(tiny_models_dir, log, "--threads", "1", "--access-log", "on", env=env) as url:
        server = Server(url)
        server.log = log
        yield server


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_live_service_with_keys_and_cors(guarded):
    files = [("images", ("red.png", _png(), "image/png"))]
    assert httpx.post(f"{guarded}/classify", files=files).status_code == 401
    missing = httpx.post(f"{guarded}/classify", files=files)
    assert missing.json()["reason"] == "unauthorized" and missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(f"{guarded}/classify", files=files, headers={"Authorization": "Bearer third-key"})
    assert wrong.status_code == 403 and wrong.json()["reason"] == "forbidden"
    right = httpx.post(f"{guarded}/classify", files=files, headers={"Authorization": "Bearer second-key"})
    assert right.status_code == 200, right.text
    body = {
        "inputs": [{"name": "images", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(_png()).decode()]}]
    }
    assert httpx.post(f"{guarded}/v2/models/tiny/infer", json=body).json() == {
        "error": "this service requires an API key: 'Authorization: Bearer KEY'"
    }
    assert (
        httpx.post(
            f"{guarded}/v2/models/tiny/infer", json=body, headers={"Authorization": "Bearer first-key"}
        ).status_code
        == 200
    )
    for path in (
        "/readyz",
        "/livez",
        "/metrics",
        "/models",
        "/v2/health/ready",
        "/v2/models/tiny",
        "/",
        "/static/app.js",
    ):
        assert httpx.get(f"{guarded}{path}").status_code == 200, path  # health, metadata and the page stay open
    metrics = httpx.get(f"{guarded}/metrics").text
    assert 'cifar_rejected_inputs_total{reason="unauthorized"} 3.0' in metrics
    spec = httpx.get(f"{guarded}/docs.json").json()
    for path, method in (("/classify", "post"), ("/infer", "post"), ("/v2/models/{name}/infer", "post")):
        operation = spec["paths"][path][method]
        assert "Authorization: Bearer KEY" in operation["description"] and {"401", "403"} <= set(operation["responses"])
    assert "Authorization" not in spec["paths"]["/models"]["get"].get("description", "")

    preflight = httpx.options(
        f"{guarded}/classify",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    other = httpx.options(
        f"{guarded}/classify", headers={"Origin": "http://elsewhere.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers
    # refused as every other refusal is, in JSON with its reason, not starlette's text "Disallowed CORS origin"
    assert other.status_code == 400 and other.json()["reason"] == "cors_refused", other.text
    assert "(the origin 'http://elsewhere.example')" in other.json()["error"] and ORIGIN in other.json()["error"]
    header = httpx.options(
        f"{guarded}/v2/models/tiny/infer",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PUT", "Access-Control-Request-Headers": "x-a"},
    )
    # the protocol's error object, naming what was refused, and every header allowed (the safelisted ones too)
    refused = header.json()["error"]
    assert header.status_code == 400 and "(the method 'PUT'; the request header(s) 'x-a')" in refused, refused
    assert "the request headers Accept, Accept-Language, Authorization, Content-Language, Content-Type" in refused
    assert set(header.json()) == {"error"} and "GET, POST, OPTIONS" in header.headers["access-control-allow-methods"]
    simple = httpx.get(f"{guarded}/models", headers={"Origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN


def test_the_scorer_sends_its_key_and_never_shows_it(guarded, tmp_path, monkeypatch, capsys):
    from service.score.cli import main as score

    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(_png())
    out = tmp_path / "p.csv"
    common = [str(folder), "--url", guarded, "--out", str(out), "--no-progress"]
    monkeypatch.delenv("CIFAR_API_KEY", raising=False)
    assert score(common) == 2  # found before the output is made
    assert "requires an API key and none was given" in capsys.readouterr().err and not out.exists()
    assert score([*common, "--api-key", "third-key-not-known"]) == 2
    shown = capsys.readouterr()
    assert "does not accept the API key given" in shown.err and not out.exists()
    assert "third-key-not-known" not in shown.out + shown.err
    assert score([*common, "--api-key", "first-key"]) == 0
    assert "scored 2" in capsys.readouterr().err and len(out.read_text().splitlines()) == 3
    monkeypatch.setenv("CIFAR_API_KEY", "second-key")
    out.unlink()
    assert score(common) == 0
    assert "first-key" not in capsys.readouterr().err


def _raw(url: str, request: bytes) -> bytes:
    """The whole answer to ``request``, sent as it is: no HTTP client sends a header of bytes that are not ASCII."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_the_access_log_neither_fails_on_a_header_nor_lets_a_path_forge_a_line(guarded):
    """BentoML's access log decodes the Content-Type as UTF-8 after the answer has started: another byte (HTTP
    allows any in a header) cut the answer off after its headers, with a traceback. And it writes the path as
    decoded, so that %0A started a line of the client's own."""
    before = len(guarded.log.read_text())
    for path, content_type in (("/classify", b"multipart/form-data; boundary=\xff"), ("/models", b"application/\xe9")):
        answer = _raw(
            guarded,
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer first-key\r\n"
            b"Content-Type: " + content_type + b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 415"), answer
        assert b'"reason": "unsupported_media_type"' in body and b"is not ASCII" in body, answer
    forged = _raw(guarded, b"GET /a%0Aforged%C2%85line HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert forged.startswith(b"HTTP/1.1 404"), forged
    log = guarded.log.read_text()[before:]
    assert "Traceback" not in log and "path=/a\\x0aforged\\x85line" in log, log[-3000:]
    assert not any(line.startswith(("forged", "line")) for line in log.splitlines()), log[-3000:]


def test_a_request_that_is_not_http_is_a_callers_mistake_logged_at_info(guarded):
    """uvicorn answers bytes it cannot parse as HTTP with 400 and logged each as a WARNING ("Invalid HTTP request
    received."): a caller's mistake, which this service logs at INFO, as every refusal (docs/deploy.md)."""
    before = len(guarded.log.read_text())
    answer = _raw(guarded, b"GET /models HTTP/1.1\r\nHost x\r\nbad header\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    log = guarded.log.read_text()[before:]
    lines = [line for line in log.splitlines() if "Invalid HTTP request received" in line]
    assert lines and not any("WARNING" in line or "ERROR" in line for line in lines), log[-3000:]
    assert all("INFO" in line for line in lines), lines
