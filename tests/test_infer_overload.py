"""A request that BentoML's batching queue sheds is refused in the contract's shape on every route, /infer included:
503 ``overloaded`` with Retry-After, logged as a refusal at INFO, never as a server error with its traceback."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import pytest
from bentoml.exceptions import ServiceUnavailable

from conftest import running_service
from service.bentoml_compat import batching, check

ITEMS = 16  # images per /infer request: enough work that a batch outlasts the 1 ms latency limit


def _infer_body() -> dict:
    pixels = base64.b64encode(bytes(32 * 32 * 3)).decode()
    return {"items": [{"model": "tiny", "pixels": pixels} for _ in range(ITEMS)]}


def test_a_shed_infer_request_is_503_overloaded_with_retry_after_and_no_traceback(tiny_models_dir, tmp_path):
    """One stream and a 1 ms latency limit: a burst of /infer requests queues behind a running batch, and the
    dispatcher sheds some. Each burst is sent until one is shed (the first usually is)."""
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    log_path = tmp_path / "server.log"
    args = ("--streams", "1", "--threads", "1", "--max-latency-ms", "1")
    with running_service(tiny_models_dir, log_path, *args, env=env) as url:
        body = _infer_body()
        responses: list[httpx.Response] = []
        with ThreadPoolExecutor(16) as pool:
            for _ in range(20):
                responses += pool.map(lambda _: httpx.post(f"{url}/infer", json=body, timeout=60), range(32))
                if any(r.status_code == 503 for r in responses):
                    break
    shed = [r for r in responses if r.status_code == 503]
    assert shed, "no request was shed"
    assert {r.status_code for r in responses} <= {200, 503}, [r.text for r in responses if r.status_code >= 400][:2]
    for r in shed:
        assert r.json()["reason"] == "overloaded" and "try again" in r.json()["error"], r.text
        assert r.headers["retry-after"] == "1"
    log = log_path.read_text()
    assert "refused POST /infer: 503 overloaded" in log
    assert "Exception on /infer" not in log and "Traceback" not in log and "ServiceUnavailable" not in log


# ---------------------------------------------------------------------------------------------- the dispatcher
class _Factory:
    """BentoML's app factory as bentoml_compat finds it: ``router``'s route "infer" is
    ``functools.partial(factory.api_endpoint_wrapper, "infer")``, and its real dispatcher raises
    ServiceUnavailable on a shed, as BentoML's does."""

    def __init__(self, max_latency_ms: int) -> None:
        CorkDispatcher = type(check._cork_dispatcher())

        def fallback():
            raise ServiceUnavailable("process is overloaded")

        self.dispatchers = {
            "infer": CorkDispatcher(
                max_latency_in_ms=max_latency_ms, max_batch_size=8, fallback=fallback, get_batch_size=lambda job: 1
            )
        }
        endpoint = functools.partial(self.api_endpoint_wrapper, "infer")
        self.router = SimpleNamespace(routes=[SimpleNamespace(name="infer", endpoint=endpoint)])

    async def batch_infer(self, name, args, kwargs):  # looks its dispatcher up per call, as BentoML's
        async def run_batch(jobs):
            return list(jobs)

        return await self.dispatchers[name](run_batch)(args[0])

    async def api_endpoint_wrapper(self, name, request):
        raise AssertionError("not called")


@pytest.fixture
def own_routers(monkeypatch):
    monkeypatch.setattr(batching, "_routers", [])
    monkeypatch.setattr(batching, "_shed_answers", {})


async def _three_queued(call) -> tuple[object, list[asyncio.Task]]:
    """Three calls queued while a batch holds the semaphore: BentoML's dispatcher, still learning its costs,
    sheds the first once it has waited past the latency limit and keeps the other two. The one shed's outcome
    (result or exception), and the two still queued."""
    tasks = [asyncio.ensure_future(call(i)) for i in range(3)]
    done, waiting = await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1, "no call was shed"
    task = done.pop()
    return task.exception() or task.result(), list(waiting)


def test_the_apis_own_route_answers_a_shed_request_and_the_keyed_queues_still_raise(own_routers):
    factory = _Factory(max_latency_ms=1)
    answer = object()
    batching.answer_shed("infer", lambda: answer)
    batching.RouterProbe(SimpleNamespace(app=factory.router))
    keyed = batching.find_dispatcher("infer")
    assert keyed is not None
    own = dict.__getitem__(factory.dispatchers, "infer")
    own._sema.acquire()  # a batch is running: the calls queue

    async def main():
        try:
            http_route, queued = await _three_queued(lambda i: factory.batch_infer("infer", (i,), {}))
            for task in queued:  # a request cancelled while queued (its client gone, its time up) is no shed
                task.cancel()
            cancelled = await asyncio.gather(*queued, return_exceptions=True)
            in_process, others = await _three_queued(lambda i: keyed(i, key="tiny"))
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            return http_route, cancelled, in_process
        finally:
            for d in (own, *factory.dispatchers.by_key.values()):
                d.shutdown()

    http_route, cancelled, in_process = asyncio.run(main())
    assert http_route is answer
    assert all(isinstance(outcome, asyncio.CancelledError) for outcome in cancelled), cancelled
    assert isinstance(in_process, ServiceUnavailable)  # /classify and /v2 answer it themselves


def test_an_answer_registered_after_the_app_was_built_still_reaches_the_dispatcher(own_routers):
    factory = _Factory(max_latency_ms=1)
    batching.RouterProbe(SimpleNamespace(app=factory.router))
    batching.answer_shed("infer", lambda: "answered")

    async def shed():  # as the dispatcher calls it, in the request's task
        return factory.dispatchers["infer"].fallback()

    assert asyncio.run(shed()) == "answered"


def test_the_services_answer_to_a_shed_infer_request_is_its_refusal(caplog):
    from service.service import _infer_overloaded

    with caplog.at_level("INFO", logger="bentoml.cifar.refusals"):
        response = _infer_overloaded()
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert b'"reason":"overloaded"' in response.body
    assert "refused POST /infer: 503 overloaded" in caplog.text
