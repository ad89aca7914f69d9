"""service/bentoml_compat.py, the one module that uses BentoML's internals: what it relies on is there, and
each part falls back to BentoML's documented behaviour when it is not."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import bentoml
import pytest

from service.bentoml_compat import apis, batching, check
from service.bentoml_compat import version as compat_version


def test_the_installed_bentoml_has_every_internal_the_service_relies_on():
    """Fails, naming each one, when a BentoML upgrade moves something: read the module's docstring, then update
    the module or pin BentoML."""
    problems = check.check_internals()
    assert not problems, "BentoML changed shape:\n" + "\n".join(problems)


def test_versions_outside_the_supported_ones_use_the_documented_fallbacks(monkeypatch, caplog):
    assert compat_version._supported(bentoml.__version__) and not compat_version._supported("1.5.0")
    monkeypatch.setattr(compat_version, "SUPPORTED", False)

    async def proxy_call(batch):
        return "proxied"

    gateway = batching.BatchGateway("infer", lambda: proxy_call)
    assert asyncio.run(gateway([1])) == "proxied" and not gateway.in_process
    service = SimpleNamespace()
    assert not apis.extend_openapi(service, lambda document: document)
    assert type(service) is SimpleNamespace
    assert "not a version this service was written against" in caplog.text


def test_the_openapi_document_survives_the_round_trip_through_a_dict():
    from service.service import Classifier

    document = apis._document(Classifier.openapi_spec)
    assert apis._document(apis._specification(document)) == document
    assert "ClassifyError" in document["components"]["schemas"]  # the service's own edit is in


def test_find_dispatcher_uses_the_route_bentoml_registered_and_falls_back_when_absent():
    NonBlockSema = type(check._cork_dispatcher()._sema)  # BentoML's own semaphore

    class Factory:
        dispatchers = {"infer": SimpleNamespace(_sema=NonBlockSema(1))}

        async def batch_infer(self, name, args, kwargs):
            return ("batched", name, args)

        async def api_endpoint_wrapper(self, name, request):
            raise AssertionError("not called")

    factory = Factory()
    endpoint = functools.partial(factory.api_endpoint_wrapper, "infer")
    router = SimpleNamespace(routes=[SimpleNamespace(name="infer", endpoint=endpoint)])
    saved = list(batching._routers)
    try:
        batching._routers[:] = []
        calls = []

        async def proxy_call(batch):
            calls.append(batch)
            return "proxied"

        gateway = batching.BatchGateway("infer", lambda: proxy_call)
        assert asyncio.run(gateway([1])) == "proxied" and not gateway.in_process and calls == [[1]]

        batching.RouterProbe(SimpleNamespace(app=SimpleNamespace(app=router)))  # found through .app links
        gateway = batching.BatchGateway("infer", lambda: proxy_call, concurrency=2)
        assert asyncio.run(gateway([2])) == ("batched", "infer", ([2],)) and gateway.in_process
        sema = factory.dispatchers["infer"]._sema  # widened: two batches may run at once, not three
        sema.acquire()
        assert not sema.is_locked()
        sema.acquire()
        assert sema.is_locked()
    finally:
        batching._routers[:] = saved


def test_the_semaphore_is_widened_in_place_under_a_running_batch():
    """A batch that took BentoML's semaphore before it was widened releases onto the same object: the
    dispatcher admits ``concurrency`` batches afterwards, not one more."""
    NonBlockSema = type(check._cork_dispatcher()._sema)
    sema = NonBlockSema(1)
    dispatcher = SimpleNamespace(_sema=sema)
    assert sema.acquire()  # a batch is running
    batching._allow_concurrent_batches(dispatcher, 2)
    batching._allow_concurrent_batches(dispatcher, 2)  # found again: no wider
    assert dispatcher._sema is sema
    assert sema.acquire() and sema.is_locked()  # a second batch, and no third
    sema.release()
    sema.release()  # both done
    assert sema.acquire() and sema.acquire() and not sema.acquire()


@pytest.mark.parametrize("version, supported", [("1.4.0", True), ("1.4.39", True), ("1.5.0", False), ("2.0", False)])
def test_supported_versions_are_major_minor(version, supported):
    assert compat_version._supported(version) is supported


def test_each_key_gets_a_dispatcher_of_its_own_with_the_apis_limits_and_semaphore():
    base = check._cork_dispatcher()
    other = check._cork_dispatcher()
    table = batching.KeyedDispatchers({"infer": base, "other": other}, "infer")

    def lookup(name, key):
        token = batching._queue_key.set(key)
        try:
            return table[name]
        finally:
            batching._queue_key.reset(token)

    fast, slow = lookup("infer", "fast"), lookup("infer", "slow")
    assert fast is not slow and base not in (fast, slow)
    assert lookup("infer", "fast") is fast  # made once, then kept
    assert lookup("infer", None) is base and lookup("other", "fast") is other
    for d in (fast, slow):
        assert d._sema is base._sema and d._queue is not base._queue and d.optimizer is not base.optimizer
        assert (d.max_latency, d.max_batch_size, d.batch_dim) == (base.max_latency, base.max_batch_size, base.batch_dim)


def test_calls_with_different_keys_are_batched_apart():
    """Through a real dispatcher, looked up as BentoML's batch_infer does: jobs queued together under one key
    share a batch; under two keys they never do."""
    CorkDispatcher = type(check._cork_dispatcher())  # BentoML's own, without importing its internals

    batches: list[tuple] = []

    async def run_batch(jobs):
        batches.append(tuple(jobs))
        await asyncio.sleep(0.01)
        return list(jobs)

    class Factory:
        def __init__(self):
            self.dispatchers = {
                "infer": CorkDispatcher(
                    max_latency_in_ms=5000, max_batch_size=64, fallback=lambda: None, get_batch_size=lambda job: 1
                )
            }

        async def batch_infer(self, name, args, kwargs):
            return await self.dispatchers[name](run_batch)(args[0])

    async def main():
        factory = Factory()
        factory.dispatchers = batching.KeyedDispatchers(factory.dispatchers, "infer")
        call = batching._caller(factory.batch_infer, factory.dispatchers, "infer")
        jobs = [(key, i) for i in range(40) for key in ("a", "b")]
        answers = await asyncio.gather(*(call(job, key=job[0]) for job in jobs))
        return answers

    answers = asyncio.run(main())
    assert answers == [(key, i) for i in range(40) for key in ("a", "b")]
    assert all(len({key for key, _ in batch}) == 1 for batch in batches), batches
    assert any(len(batch) > 1 for batch in batches)  # still batched within a key
