"""A worker's life around its requests: probes answered while it loads its models, requests caught in the batching
queue when it is made to stop, and readiness polls that are questions rather than inputs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from bentoml.exceptions import ServiceUnavailable

from conftest import ROOT, serve_on_free_port, stop_server_group
from service.bentoml_compat import batching, check

# ---------------------------------------------------------------------------------------------- loading
# Put first on PYTHONPATH, it makes every worker's load_models touch a file and sleep before loading: a slow model
# load (a large model, a cold disk, a GPU's first session) without a large model.
SLOW_LOAD = """
import os
import time

if os.environ.get("CIFAR_TEST_LOAD_DELAY_S"):
    import service.loading as loading

    load = loading.load_models

    def slow(*args, **kwargs):
        open(os.environ["CIFAR_TEST_LOAD_STARTED"], "w").close()
        time.sleep(float(os.environ["CIFAR_TEST_LOAD_DELAY_S"]))
        return load(*args, **kwargs)

    loading.load_models = slow
"""
LOAD_DELAY_S = 15


def _status(url: str, timeout: float = 1.0) -> int | None:
    """The status ``url`` answers within ``timeout`` seconds (a Kubernetes probe's default), None when it does not."""
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.TimeoutException:
        return None


def _first_answer(url: str, within_s: float) -> int | None:
    """The first status ``url`` answers in time, asked again for ``within_s`` seconds (the worker may still be between
    creating the service and accepting its first connection)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        status = _status(url)
        if status is not None:
            return status
    return None


@contextlib.contextmanager
def _loading_slowly(models_dir: Path, tmp_path: Path):
    """A server whose worker takes LOAD_DELAY_S seconds more to load its models; yields its URL once loading began."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SLOW_LOAD)
    started = tmp_path / "loading-started"
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]),
        "CIFAR_TEST_LOAD_DELAY_S": str(LOAD_DELAY_S),
        "CIFAR_TEST_LOAD_STARTED": str(started),
    }

    def loading(url: str) -> bool:
        return started.exists()

    log_path = tmp_path / "server.log"
    proc, url = serve_on_free_port(
        models_dir, log_path, "--threads", "1", env=env, until=loading, what="loading its models"
    )
    try:
        yield url
    finally:
        stop_server_group(proc)


@pytest.mark.slow
def test_the_probes_answer_at_once_while_a_worker_loads_its_models(tiny_models_dir, tmp_path):
    with _loading_slowly(tiny_models_dir, tmp_path) as url, ThreadPoolExecutor(2) as pool:
        loading_since = time.monotonic()
        not_ready = _first_answer(f"{url}/readyz", within_s=5)
        assert not_ready == 503, "GET /readyz did not answer within 1 s while the models loaded"
        assert len(httpx.get(f"{url}/readyz", timeout=1).content) < 200
        assert _status(f"{url}/livez") == 200
        assert _status(f"{url}/v2/health/live") == 200
        assert _status(f"{url}/v2/health/ready") == 400  # the protocol's "not ready"
        assert _status(f"{url}/v2/models/tiny/ready") == 400
        # A request that arrives meanwhile waits for the models, as it waited for a connection before.
        early_models = pool.submit(httpx.get, f"{url}/models", timeout=60)
        early_infer = pool.submit(
            httpx.post, f"{url}/infer", json={"items": [{"model": "tiny", "pixels": "AAAA"}]}, timeout=60
        )
        time.sleep(1)
        assert time.monotonic() - loading_since < LOAD_DELAY_S, "the checks above outlasted the loading"
        assert not early_models.done() and not early_infer.done()
        deadline = time.monotonic() + 90
        while _status(f"{url}/readyz", timeout=5) != 200:
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.25)
        assert early_models.result().status_code == 200
        # checked against the loaded model, as any request is: 3 bytes of pixels are not a 32x32 image
        assert early_infer.result().json()["reason"] == "bad_tensor"
        assert _status(f"{url}/v2/models/tiny/ready") == 200


def test_a_load_that_fails_ends_the_worker_and_releases_no_waiter():
    from service.loading import BackgroundLoad

    failures: list[BaseException] = []

    def broken() -> None:
        raise RuntimeError("a model file went missing")

    async def main() -> bool:
        loading = BackgroundLoad(broken, failures.append)
        loading.start()
        waiter = asyncio.ensure_future(loading.wait())
        await asyncio.sleep(0.5)
        released = waiter.done()
        waiter.cancel()
        return released

    assert asyncio.run(main()) is False
    assert [str(exc) for exc in failures] == ["a model file went missing"]


def test_a_load_that_succeeds_releases_every_waiter():
    from service.loading import BackgroundLoad

    async def main() -> list[None]:
        loading = BackgroundLoad(lambda: time.sleep(0.2), lambda exc: pytest.fail(f"failed: {exc}"))
        loading.start()
        return await asyncio.wait_for(asyncio.gather(loading.wait(), loading.wait()), timeout=10)

    assert asyncio.run(main()) == [None, None]


# ---------------------------------------------------------------------------------------------- stopping
class _Factory:
    """BentoML's app factory as bentoml_compat finds it (its route "infer" is
    ``functools.partial(factory.api_endpoint_wrapper, "infer")``), with BentoML's own dispatcher, whose fallback
    raises ServiceUnavailable, and a batch that never ends: calls queue behind it."""

    def __init__(self) -> None:
        CorkDispatcher = type(check._cork_dispatcher())

        def fallback():
            raise ServiceUnavailable("process is overloaded")

        self.dispatchers = {
            "infer": CorkDispatcher(
                max_latency_in_ms=60_000, max_batch_size=8, fallback=fallback, get_batch_size=lambda job: 1
            )
        }
        endpoint = functools.partial(self.api_endpoint_wrapper, "infer")
        self.router = SimpleNamespace(routes=[SimpleNamespace(name="infer", endpoint=endpoint)])

    async def batch_infer(self, name, args, kwargs):
        async def run_batch(jobs):
            return [[1.0] for _ in jobs]

        return await self.dispatchers[name](run_batch)(args[0])

    async def api_endpoint_wrapper(self, name, request):
        raise AssertionError("not called")

    def shutdown(self) -> None:
        dict.__getitem__(self.dispatchers, "infer").shutdown()
        for queue in getattr(self.dispatchers, "by_key", {}).values():
            queue.shutdown()


@pytest.fixture
def queued(monkeypatch):
    """A Classifier's ``_batched`` through bentoml_compat's in-process dispatchers, a batch always running: each call
    waits in its model's queue. Yields (the factory, a coroutine function running ``_batched`` on one image)."""
    from service.request_bodies import InferItem
    from service.service import Classifier

    monkeypatch.setattr(batching, "_routers", [])
    monkeypatch.setattr(batching, "_shed_answers", {})
    factory = _Factory()
    batching.RouterProbe(SimpleNamespace(app=factory.router))
    gateway = batching.BatchGateway("infer", lambda: pytest.fail("the self-proxy was used"))
    dict.__getitem__(factory.dispatchers, "infer")._sema.acquire()  # the batch running, and shared by every queue
    stand_in = SimpleNamespace(_infer=gateway)

    async def batched():
        return await Classifier.inner._batched(stand_in, [InferItem(model="tiny", pixels=bytes(3072))])

    yield factory, batched
    factory.shutdown()


async def _cancelled_while_queued(batched):
    """What a queued call of ``batched`` ends in when its own task is cancelled: its result, or the exception."""
    task = asyncio.ensure_future(batched())
    await asyncio.sleep(0.1)
    task.cancel()
    try:
        return await task
    except BaseException as exc:  # CancelledError is a BaseException
        return exc


def test_a_queued_request_cancelled_otherwise_is_no_overload(queued):
    """BentoML's request timeout cancels the request it answers 504: that is not the dispatcher shedding it (it
    was logged as a refusal, 503 overloaded, that no client received)."""
    _, batched = queued
    outcome = asyncio.run(_cancelled_while_queued(batched))
    assert isinstance(outcome, asyncio.CancelledError), outcome


def test_a_request_the_queue_sheds_is_still_overloaded(queued):
    factory, batched = queued

    async def main():
        task = asyncio.ensure_future(batched())
        await asyncio.sleep(0.1)
        (queue,) = factory.dispatchers.by_key.values()
        queue._queue.popleft().future.cancel()  # how BentoML's dispatcher sheds a request
        return await task

    outcome = asyncio.run(main())
    assert outcome.reason == "overloaded" and outcome.status == 503


# ---------------------------------------------------------------------------------------------- readiness polls
def test_a_readiness_poll_for_an_unknown_model_is_404_and_counts_nothing(caplog):
    import asyncio

    import httpx
    from prometheus_client import REGISTRY, generate_latest
    from starlette.applications import Starlette

    from service.metrics import ServiceMetrics
    from service.oip_http import oip_routes

    ServiceMetrics.get()
    running = SimpleNamespace(loaded={"tiny": object()}, ready=True)
    app = Starlette(routes=oip_routes(lambda: running, "cifar_classifier", 8, 100_000))

    def unknown_model_refusals() -> float:
        return REGISTRY.get_sample_value("cifar_rejected_inputs_total", {"reason": "unknown_model"}) or 0.0

    async def polls() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://oip.test") as client:
            for path, words in (
                ("/v2/models/polled-model/ready", "unknown model 'polled-model'"),
                ("/v2/models/polled-model/versions/1/ready", "unknown model 'polled-model'"),
                ("/v2/models/tiny/versions/2/ready", "no version '2'"),
            ):
                answer = await client.get(path)
                assert answer.status_code == 404 and words in answer.json()["error"], (path, answer.text)
            assert (await client.get("/v2/models/tiny/ready")).status_code == 200
            # metadata stays a counted refusal
            assert (await client.get("/v2/models/polled-model")).status_code == 404

    before = unknown_model_refusals()
    with caplog.at_level(logging.INFO):
        asyncio.run(polls())
    assert unknown_model_refusals() == before + 1
    refused = [r.getMessage() for r in caplog.records if r.name == "bentoml.cifar.refusals"]
    assert [line.split(":")[0] for line in refused] == ["refused GET /v2/models/polled-model"]
    assert "polled-model" not in generate_latest(REGISTRY).decode()
