"""Every refusal the service answers comes from the contract's one table (service/contract.py): its status and headers
derived from its reason, its message one line, on every route alike; the models still loading included."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from service.contract import REASONS, not_loaded
from service.oip_http import oip_routes


def _exchange(app: Any, *requests: tuple[str, str]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://contract.test") as client:
            return [await client.request(method, path) for method, path in requests]

    return asyncio.run(asyncio.wait_for(run(), timeout=10))


def _refused_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bentoml.cifar.refusals"]


def test_the_models_still_loading_is_a_reason_of_the_table_retried_later():
    loading = not_loaded()
    assert loading.reason == "loading" and loading.status == REASONS["loading"].status == 503
    assert REASONS["loading"].remedy == "later" and not REASONS["loading"].counted  # the service's state, no mistake
    assert loading.headers == {"Retry-After": "1"}
    assert loading.body() == {"error": loading.message, "reason": "loading"}
    assert "\n" not in loading.message and "try again" in loading.message


# ---------------------------------------------------------------------------------------------- GET /models, LoadGate
@pytest.fixture(scope="module")
def service_module():
    from service import service

    return service


@pytest.fixture(scope="module")
def gates_module():
    from service import gates

    return gates


def test_get_models_before_the_models_are_loaded_is_the_loading_refusal(service_module, monkeypatch, caplog):
    monkeypatch.setattr(service_module, "_current_instance", lambda: None)
    app = Starlette(routes=[Route("/models", service_module._get_models, methods=["GET"])])
    with caplog.at_level(logging.INFO):
        (answer,) = _exchange(app, ("GET", "/models"))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
    assert answer.json() == not_loaded().body()
    assert [line.split(":")[0] for line in _refused_lines(caplog)] == ["refused GET /models"]
    assert "503 loading" in _refused_lines(caplog)[0]


class _Loading:
    """A worker's service whose models load until ``done`` is set."""

    def __init__(self, done: asyncio.Event | None = None) -> None:
        self.ready = False
        self._done = done

    @property
    def loading(self) -> SimpleNamespace:
        return SimpleNamespace(wait=self._wait)

    async def _wait(self) -> None:
        if self._done is None:
            await asyncio.Event().wait()  # never loads
        else:
            await self._done.wait()
            self.ready = True


async def _reached(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served"})


@pytest.mark.parametrize("instance", [None, "loading"], ids=["no service yet", "loading past the wait"])
@pytest.mark.parametrize(("method", "path"), [("POST", "/classify"), ("POST", "/infer"), ("GET", "/models")])
def test_a_request_the_models_would_not_be_loaded_for_in_time_is_refused_loading(
    gates_module, monkeypatch, instance, method, path
):
    """Held until BentoML's --timeout, it was answered 504 (send fewer images); with no service yet it went on to
    routes that need one."""
    worker = None if instance is None else _Loading()
    monkeypatch.setattr(gates_module, "worker_service", lambda: worker)
    # a wait of 0.2 s before --timeout is near
    margin = gates_module.SETTINGS.timeout_s - 0.2
    monkeypatch.setattr(gates_module, "LOAD_WAIT_MARGIN_S", margin)
    (answer,) = _exchange(gates_module.LoadGate(_reached), (method, path))
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
    assert answer.json() == not_loaded().body()


def test_a_request_whose_models_load_while_it_waits_is_served(gates_module, monkeypatch):
    async def run() -> httpx.Response:
        done = asyncio.Event()
        worker = _Loading(done)
        monkeypatch.setattr(gates_module, "worker_service", lambda: worker)
        asyncio.get_running_loop().call_later(0.1, done.set)
        transport = httpx.ASGITransport(app=gates_module.LoadGate(_reached))
        async with httpx.AsyncClient(transport=transport, base_url="http://contract.test") as client:
            return await client.get("/models")

    answer = asyncio.run(asyncio.wait_for(run(), timeout=10))
    assert answer.status_code == 200 and answer.text == "served"


# ---------------------------------------------------------------------------------------------- the protocol's routes
def _oip(running: Any) -> Starlette:
    from service.metrics import ServiceMetrics

    ServiceMetrics.get()
    return Starlette(routes=oip_routes(lambda: running, "cifar_classifier", 8, 100_000))


def test_the_protocols_model_routes_while_loading_refuse_with_the_loading_reason(caplog):
    with caplog.at_level(logging.INFO):
        answers = _exchange(_oip(None), ("GET", "/v2/models/tiny"), ("POST", "/v2/models/tiny/infer"))
    for answer in answers:
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1", answer.text
        assert answer.json() == {"error": not_loaded().message}  # the protocol's shape
    refused = _refused_lines(caplog)
    assert [line.split(": 503 loading:")[0] for line in refused] == [
        "refused GET /v2/models/tiny",
        "refused POST /v2/models/tiny/infer",
    ], refused


def test_the_protocols_other_refusals_take_their_status_from_the_table(caplog):
    running = SimpleNamespace(loaded={"tiny": object()}, ready=True)
    app = _oip(running)
    with caplog.at_level(logging.INFO):
        wrong_method, no_list, statistics = _exchange(
            app, ("PUT", "/v2/models/tiny"), ("GET", "/v2/models"), ("GET", "/v2/models/tiny/stats")
        )
    assert wrong_method.status_code == REASONS["method_not_allowed"].status, wrong_method.text
    assert wrong_method.headers["allow"] == "GET, HEAD, OPTIONS"
    for answer in (no_list, statistics):
        assert answer.status_code == REASONS["no_such_path"].status, answer.text
    assert all(list(answer.json()) == ["error"] for answer in (wrong_method, no_list, statistics))
    reasons = [line.split(": ")[1] for line in _refused_lines(caplog)]
    assert reasons == ["405 method_not_allowed", "404 no_such_path", "404 no_such_path"]


# ---------------------------------------------------------------------------------------------- the OpenAPI document
@pytest.fixture(scope="module")
def document(service_module) -> dict:
    from service.bentoml_compat import apis

    return apis._document(service_module.Classifier.openapi_spec)


def test_the_document_describes_the_loading_refusal_where_it_is_answered(document):
    paths = document["paths"]
    loading = REASONS["loading"].when
    for path, method in (
        ("/models", "get"),
        ("/models", "post"),
        ("/classify", "post"),
        ("/infer", "post"),
        ("/v2/models/{name}", "get"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
    ):
        answer = {str(status): r for status, r in paths[path][method]["responses"].items()}["503"]
        assert loading in answer["description"] and "Retry-After" in answer["headers"], (path, method, answer)
    # the protocol's inference route is also shed when overloaded, as /classify is
    assert REASONS["overloaded"].when in paths["/v2/models/{name}/infer"]["post"]["responses"]["503"]["description"]


def test_the_document_lists_readyz_answering_503_while_the_models_load(document):
    """BentoML's /readyz answers 503 with a short text until the models are loaded (docs/deploy.md), where its own
    document listed only 200; it sends no Retry-After, so the document promises none."""
    responses = {str(status): r for status, r in document["paths"]["/readyz"]["get"]["responses"].items()}
    assert "503" in responses, responses
    assert "loading" in responses["503"]["description"]
    assert responses["503"]["content"] == {"text/plain": {"schema": {"type": "string"}}}
    assert "headers" not in responses["503"]


def test_the_document_says_which_base64_infer_pixels_are_read_in(document, monkeypatch):
    """pydantic documents bytes as format "base64url" whatever it reads: /infer's pixels are read in the standard
    alphabet as well, padded or not, and the document says that instead."""
    import base64
    import json

    from service import request_bodies

    monkeypatch.setattr(request_bodies, "PIXEL_BYTES", {})  # any length of pixels: only their base64 is read here
    pixels = document["components"]["schemas"]["InferItem"]["properties"]["pixels"]
    assert pixels["type"] == "string" and "format" not in pixels, pixels
    data = bytes([251, 255])
    for text in (base64.b64encode(data), base64.urlsafe_b64encode(data), base64.b64encode(data).rstrip(b"=")):
        item = {"model": "tiny", "pixels": text.decode()}
        assert request_bodies.InferItem.model_validate_json(json.dumps(item)).pixels == data, text
    for words in ("standard alphabet ('+' and '/')", "URL-safe one ('-' and '_')", "padded or not"):
        assert words in pixels["description"], pixels
