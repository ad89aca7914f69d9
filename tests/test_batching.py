"""Adaptive batching: what a batch runs when some of the requests in it are no longer awaited.

The requests go through a real BentoML dispatcher (``CorkDispatcher``, which splits a request larger than the room
left in a batch) into the service's own batch function, ``Classifier.infer``, on a stand-in model that records
what it was asked to run.
"""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace
from typing import Any

import numpy as np
from bentoml.exceptions import ServiceUnavailable

from service.bentoml_compat import batching, check
from service.request_bodies import InferItem, model_input
from service.service import Classifier

SIZE = (32, 32)
PIXELS = SIZE[0] * SIZE[1] * 3


class _Recording:
    """A model whose probabilities follow from each image alone; records the images of every run."""

    def __init__(self) -> None:
        self.runs: list[np.ndarray] = []

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        self.runs.append(batch.copy())
        means = batch.reshape(len(batch), 3, -1).mean(axis=2)
        return means / means.sum(axis=1, keepdims=True)


def _items(model: str, shades: list[int]) -> list[InferItem]:
    return [InferItem(model=model, pixels=bytes([shade, 255 - shade, 7]) * (PIXELS // 3)) for shade in shades]


def _service(max_batch_size: int) -> tuple[SimpleNamespace, Any, dict[str, _Recording]]:
    """A stand-in service whose ``_infer`` queues in a dispatcher as BentoML's batch_infer does for the service's
    in-process callers; a batch dispatched waits for ``started`` to be set before it runs."""
    models = {"a": _Recording(), "b": _Recording()}
    service = SimpleNamespace(
        loaded={name: SimpleNamespace(size=SIZE, classifier=model) for name, model in models.items()},
        metrics=SimpleNamespace(batched=lambda name, images: None),
    )

    def shed() -> None:
        raise ServiceUnavailable("process is overloaded")  # BentoML's fallback

    # bentoml_compat's fallback, as its queues have: a cancelled caller stays cancelled, a shed one is refused
    fallback = functools.partial(batching._shed, shed)
    dispatcher = type(check._cork_dispatcher())(
        max_latency_in_ms=60_000, max_batch_size=max_batch_size, fallback=fallback, get_batch_size=len
    )

    async def run(batches):
        await service.started.wait()  # a thread free to run the batch
        rows = iter(Classifier.inner.infer.func(service, [item for batch in batches for item in batch]))
        return [[next(rows) for _ in batch] for batch in batches]  # each request's rows, as BentoML splits them

    queued = dispatcher(run)
    service._infer = lambda items, key=None: queued(items)
    service.started = asyncio.Event()
    return service, dispatcher, models


def _alone(items: list[InferItem]) -> np.ndarray:
    """Each item's probabilities, computed by itself."""
    return np.concatenate([_Recording().probabilities(model_input([item], SIZE)) for item in items])


def test_a_request_answered_while_queued_is_not_run_and_its_batch_mates_are_answered_alone():
    """BentoML's --timeout cancels a request waiting in the queue (and answers it 504); its images, still queued,
    are not run for no one: a backlog of them would keep every request after a burst waiting, and timing out in
    turn. Here a request of six images, split across batches of four, times out; two requests queued beside it are
    answered, each image as it would be alone."""
    service, dispatcher, models = _service(max_batch_size=4)
    late = _items("a", [10, 20, 30, 40, 50, 60])
    mates = [_items("a", [70, 80]), _items("b", [90, 100, 110])]

    async def main():
        service.started.set()
        dispatcher._sema.acquire()  # a batch running: the requests queue
        abandoned = asyncio.ensure_future(Classifier.inner._batched(service, late))
        answered = [asyncio.ensure_future(Classifier.inner._batched(service, items)) for items in mates]
        await asyncio.sleep(0.05)
        abandoned.cancel()  # what BentoML's timeout does to the request's task
        await asyncio.gather(abandoned, return_exceptions=True)
        dispatcher._sema.release()  # the running batch ends: the queue is served
        return abandoned.cancelled(), await asyncio.gather(*answered)

    try:
        cancelled, rows = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        dispatcher.shutdown()
    assert cancelled
    for items, got in zip(mates, rows):
        np.testing.assert_allclose(got, _alone(items), rtol=1e-6)
    ran = {name: sum(len(run) for run in model.runs) for name, model in models.items()}
    assert ran == {"a": 2, "b": 3}, ran


def test_the_rest_of_a_split_request_is_not_run_once_a_part_of_it_is_shed():
    """A request larger than a batch is split: its first part is dispatched, the rest queued. When the dispatcher
    sheds the rest, the request is answered 503, and the part already dispatched, still waiting for a thread to run
    on, is not run for no one."""
    service, dispatcher, models = _service(max_batch_size=2)
    items = _items("a", [1, 2, 3, 4, 5])

    async def main():
        task = asyncio.ensure_future(Classifier.inner._batched(service, items))
        while len(dispatcher._queue) != 1 or len(dispatcher._queue[0].data) != 3:
            await asyncio.sleep(0.001)  # until the first two are dispatched
        dispatcher._queue.popleft().future.cancel()  # how BentoML's dispatcher sheds a request
        answer = await task
        service.started.set()
        while dispatcher._sema.is_locked():
            await asyncio.sleep(0.001)  # until the dispatched part has been through the batch function
        return answer

    try:
        answer = asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        dispatcher.shutdown()
    assert answer.reason == "overloaded" and answer.status == 503
    assert [len(run) for run in models["a"].runs] == []
