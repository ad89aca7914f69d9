"""Requests no one waits for any more, and settings that could never take effect.

- A direct /infer request that BentoML's timeout answers (504), or whose client leaves, has its images still queued in
  BentoML's own batching queue skipped, as the in-process routes' are.
- A client of /classify or /v2 that closes its connection while its images are queued is answered no more (499
  ``client_closed``), and its images still queued are not run.
- A shed request is refused in the same words on every route.
- A --cors-origins value that no browser's Origin header can equal is refused at start-up, in one line.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from bentoml.exceptions import ServiceUnavailable
from starlette.requests import Request

from conftest import ROOT
from fakes import AsgiClient
from service.contract import Rejection
from service.gates import BodyGate
from service.request_bodies import InferItem
from service.service import SERVICE, Classifier, _infer_overloaded
from service.settings import ServiceSettings, SettingsError

PIXELS = 32 * 32 * 3


def _items(count: int) -> list[InferItem]:
    return [InferItem(model="tiny", pixels=bytes([i]) * PIXELS) for i in range(count)]


def _scope(path: str) -> dict:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [(b"content-type", b"application/json")],
        "query_string": b"",
    }


# ---------------------------------------------------------------------------------------------- the direct /infer route
def _infer_body(count: int) -> bytes:
    pixels = base64.b64encode(bytes(PIXELS)).decode()
    return json.dumps({"items": [{"model": "tiny", "pixels": pixels} for _ in range(count)]}).encode()


async def _through_body_gate(app, client: AsgiClient) -> None:
    async def send(message) -> None:
        pass

    await BodyGate(app)(_scope("/infer"), client.receive, send)


def test_a_timed_out_infer_request_leaves_no_images_to_run_in_bentomls_queue():
    """BentoML's timeout cancels the request's task (and answers 504 itself) while its images wait in the queue of the
    /infer route's own dispatcher: they are abandoned, so the batch that takes them runs only its other requests'."""
    given: list[InferItem] = []

    async def queued_for_ever(scope, receive, send) -> None:
        given.extend(scope["state"][BodyGate.STATE].items)
        await asyncio.Event().wait()

    async def main() -> bool:
        task = asyncio.ensure_future(_through_body_gate(queued_for_ever, AsgiClient(_infer_body(3))))
        while not given:
            await asyncio.sleep(0)
        task.cancel()  # what BentoML's TimeoutMiddleware does at --timeout
        await asyncio.gather(task, return_exceptions=True)
        return task.cancelled()

    assert asyncio.run(main())
    assert len(given) == 3 and all(item.abandoned for item in given)


def test_the_images_of_an_infer_client_that_left_are_not_run():
    """The client closes its connection while its images are queued: they are abandoned at once, before the queue
    reaches them, not run for no one."""
    seen: dict[str, bool] = {}

    async def queued(scope, receive, send) -> None:
        items = scope["state"][BodyGate.STATE].items
        client.leave()
        for _ in range(20):  # the queue's own work goes on meanwhile
            await asyncio.sleep(0)
        seen["abandoned while queued"] = all(item.abandoned for item in items)

    client = AsgiClient(_infer_body(2))
    asyncio.run(_through_body_gate(queued, client))
    assert seen == {"abandoned while queued": True}


def test_an_infer_request_answered_leaves_its_items_to_no_one():
    """Once the route has answered, nothing awaits a row of the request: a part of a split request still queued (a
    part shed, the rest waiting) is skipped."""
    given: list[InferItem] = []

    async def answered(scope, receive, send) -> None:
        given.extend(scope["state"][BodyGate.STATE].items)

    asyncio.run(_through_body_gate(answered, AsgiClient(_infer_body(2))))
    assert len(given) == 2 and all(item.abandoned for item in given)


# ---------------------------------------------------------------------------------------------- in-process routes
def test_a_client_that_leaves_while_its_images_are_queued_is_answered_499_and_they_are_not_run():
    """/classify and /v2 hand their images to ``_batched``. The client closes its connection while they wait: the
    request stops waiting (499 ``client_closed``, which the log and the request metrics record) and its images still
    queued are abandoned, so no batch runs them."""
    items = _items(4)
    client = AsgiClient()

    async def queue(batch, key=None):
        client.leave()
        for _ in range(20):  # a batch would take the images after a while
            await asyncio.sleep(0)
        return [[1.0] for _ in batch]

    service = SimpleNamespace(_infer=queue)

    async def main():
        request = Request(_scope("/classify"), client.receive)
        with SERVICE.context.in_request(request):
            return await Classifier.inner._batched(service, items)

    answer = asyncio.run(main())
    assert isinstance(answer, Rejection) and answer.reason == "client_closed" and answer.status == 499, answer
    assert all(item.abandoned for item in items)


def test_a_client_that_stays_is_answered_as_before():
    items = _items(2)

    async def queue(batch, key=None):
        return [[0.25, 0.75] for _ in batch]

    async def main():
        request = Request(_scope("/classify"), AsgiClient().receive)
        with SERVICE.context.in_request(request):
            return await Classifier.inner._batched(SimpleNamespace(_infer=queue), items)

    answer = asyncio.run(main())
    assert not isinstance(answer, Rejection)
    assert answer.tolist() == [[0.25, 0.75], [0.25, 0.75]]
    assert not any(item.abandoned for item in items)


# ---------------------------------------------------------------------------------------------- shed requests
def test_a_shed_request_is_refused_alike_on_every_route():
    """/infer's own route and the in-process callers (/classify, multipart or JSON, and /v2) refuse a shed request with
    one status, one message and the same headers: those of the reason, not BentoML's "process is overloaded"."""

    async def shed(batch, key=None):
        raise ServiceUnavailable("process is overloaded")  # what BentoML's dispatcher raises to an in-process caller

    in_process = asyncio.run(Classifier.inner._batched(SimpleNamespace(_infer=shed), _items(1)))
    direct = _infer_overloaded()
    assert isinstance(in_process, Rejection)
    assert (in_process.status, in_process.body()) == (direct.status_code, json.loads(bytes(direct.body)))
    assert direct.headers["retry-after"] == in_process.headers["Retry-After"]
    assert "process is overloaded" not in in_process.message


# ---------------------------------------------------------------------------------------------- CORS origins
MISMATCHED = [
    "http//page.example",  # no ':'
    "page.example",  # no scheme
    "*.page.example",
    "https://*.page.example",
    "https://page.example/",  # a trailing slash
    "https://page.example/app",
    "https://Page.Example",
    "https://page.example:443",  # the default port, which a browser leaves out
    "http://page.example:80",
    "https://page.example:70000",
    "https://user@page.example",
    "https://exämple.test",
]


@pytest.mark.parametrize("origin", MISMATCHED)
def test_an_origin_no_browser_sends_is_refused(origin):
    with pytest.raises(SettingsError) as refused:
        ServiceSettings.from_env({"CIFAR_CORS_ORIGINS": f"https://fine.example, {origin}"})
    message = str(refused.value)
    assert message.startswith("CIFAR_CORS_ORIGINS holds ") and repr(origin) in message and "\n" not in message


@pytest.mark.parametrize(
    "origin",
    ["*", "null", "https://page.example", "http://localhost:8080", "http://[::1]:3000", "moz-extension://ab12"],
)
def test_an_origin_a_browser_sends_is_taken(origin):
    assert ServiceSettings.from_env({"CIFAR_CORS_ORIGINS": origin}).cors_origin_list == [origin]


def test_serve_refuses_an_origin_with_a_trailing_slash_in_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "service", "serve", "--cors-origins", "https://page.example/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --cors-origins holds 'https://page.example/'"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_an_error_of_the_batch_or_the_route_reaches_bentoml_as_it_is():
    """Watching for the client's leaving wraps no error in an exception group: BentoML answers each by its type."""

    async def failing(batch, key=None):
        raise RuntimeError("the model failed")

    async def batched():
        with SERVICE.context.in_request(Request(_scope("/classify"), AsgiClient().receive)):
            return await Classifier.inner._batched(SimpleNamespace(_infer=failing), _items(1))

    async def route(scope, receive, send):
        raise RuntimeError("the route failed")

    with pytest.raises(RuntimeError, match="the model failed"):
        asyncio.run(batched())
    with pytest.raises(RuntimeError, match="the route failed"):
        asyncio.run(_through_body_gate(route, AsgiClient(_infer_body(1))))
