"""/classify's batches through BentoML's own dispatcher, in-process: BentoML 1.4 has no public way in.

- Batching in-process. BentoML 1.4's documented way for one API to call another of the same service,
  ``self.to_async.infer(...)``, is an HTTP round trip through the whole ASGI stack with the arguments as
  JSON, and in 1.4.30+ its aiohttp session is closed under in-flight requests every
  ``runner_connection.max_requests`` calls (bentoml/BentoML#5540, #5544); it costs several times the
  latency of a direct call (docs/deploy.md, "Inside"). So /classify hands its decoded images straight to
  the dispatcher that serves the batchable API's own HTTP route: same queue, same ``max_batch_size`` /
  ``max_latency_ms``, same adaptive-batch-size histogram on /metrics, no serialisation. The dispatcher
  runs one batch at a time; it is allowed ``concurrency`` (its semaphore widened, and the service given
  as many threads for sync APIs), so that a second batch keeps the cores busy while the event loop
  answers the first. The dispatcher is found once, through the route BentoML registered for the API;
  :class:`RouterProbe` (an ASGI middleware that only passes requests on) remembers the router.
- One queue per model. BentoML keeps one dispatcher per API, and a dispatcher learns one cost per image
  from every batch it runs: with a fast and a slow model behind one API, that estimate is wrong for both,
  and it sheds the fast model's requests for the slow one's cost. :class:`KeyedDispatchers` gives each
  key (the service passes the model's name) its own dispatcher, with the API's limits and a share of its
  semaphore, so that the models' batches together stay within the concurrency allowed.
- A shed request on the batchable API's own route (:func:`answer_shed`). BentoML's dispatcher sheds a request
  by calling its fallback, which raises ServiceUnavailable; the route logs that as an ERROR with its traceback,
  once per request, and answers a bare 503 with neither reason nor Retry-After. The API's own dispatcher is
  given a fallback that returns the service's answer instead (a Response, which the route sends as it is).
  The dispatcher calls the same fallback when the queued caller's own task is cancelled (BentoML's timeout,
  which answers 504 itself): that is no shed, and every dispatcher here lets the cancellation go on instead.

The shed answers live here with the dispatchers because each needs the other: a router found is given the
answers, and a queue key's dispatcher is made with the shed fallback.
"""

from __future__ import annotations

import asyncio
import functools
from contextvars import ContextVar
from typing import Any, Awaitable, Callable

from .version import _unsupported, log

_routers: list[Any] = []


class RouterProbe:
    """Passes every request on unchanged; remembers the router below it, where BentoML's API routes live."""

    def __init__(self, app: Any) -> None:
        self.app = app
        inner, hops = app, 0
        while inner is not None and not hasattr(inner, "routes") and hops < 32:
            inner, hops = getattr(inner, "app", None), hops + 1
        if inner is not None and hasattr(inner, "routes"):
            _routers.append(inner)
            _answer_sheds(inner)

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


def find_dispatcher(api_name: str, concurrency: int = 1) -> Callable[..., Awaitable[Any]] | None:
    """``call(batch, key=None) -> output`` through the adaptive-batching dispatcher of batchable API
    ``api_name``, which may run up to ``concurrency`` batches at once; calls with the same ``key`` share a
    queue, calls with different keys do not (see :class:`KeyedDispatchers`)."""
    for router in reversed(_routers):
        factory = _app_factory(router, api_name)
        if factory is not None:
            _allow_concurrent_batches(factory.dispatchers[api_name], concurrency)
            if not isinstance(factory.dispatchers, KeyedDispatchers):
                factory.dispatchers = KeyedDispatchers(factory.dispatchers, api_name)
            return _caller(factory.batch_infer, factory.dispatchers, api_name)
    return None


def _app_factory(router: Any, api_name: str) -> Any | None:
    """BentoML's ServiceAppFactory behind ``router``'s route for batchable API ``api_name``, or None."""
    for route in getattr(router, "routes", []):
        if getattr(route, "name", None) != api_name:
            continue
        endpoint = getattr(route, "endpoint", None)
        factory = getattr(getattr(endpoint, "func", None), "__self__", None)
        if (
            isinstance(endpoint, functools.partial)
            and factory is not None
            and api_name in getattr(factory, "dispatchers", {})
        ):
            return factory
    return None


# The queue a batch call joins. BentoML's ``batch_infer`` looks its dispatcher up by API name inside the call,
# in the caller's task, so the key travels as a context variable rather than an argument it does not take.
_queue_key: ContextVar[str | None] = ContextVar("cifar_batch_queue", default=None)


class KeyedDispatchers(dict):
    """BentoML's table of dispatchers by API name, answering for API ``keyed`` one dispatcher per queue key.

    A key's dispatcher is made on its first call, like the API's own: same ``max_latency_ms``,
    ``max_batch_size`` and batch dimension, and the same semaphore, so that every key's batches together run
    at most as many at once as the API's alone would. Each has its own queue and its own latency estimate.
    Calls without a key (the API's own HTTP route) use the API's dispatcher.
    """

    def __init__(self, table: dict, keyed: str) -> None:
        super().__init__(table)
        self.keyed = keyed
        self.by_key: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        key = _queue_key.get()
        if name != self.keyed or key is None:
            return super().__getitem__(name)
        if key not in self.by_key:
            self.by_key[key] = _sibling(super().__getitem__(name))
            log.info("a batching queue of its own for %r", key)
        return self.by_key[key]


def _sibling(dispatcher: Any) -> Any:
    """A new dispatcher with ``dispatcher``'s limits, sharing its semaphore."""
    return type(dispatcher)(
        max_latency_in_ms=round(dispatcher.max_latency * 1000),
        max_batch_size=dispatcher.max_batch_size,
        shared_sema=dispatcher._sema,
        # the in-process callers answer a shed, and are answered a cancellation of their own as CancelledError
        fallback=functools.partial(_shed, getattr(dispatcher, _RAISES, dispatcher.fallback)),
        get_batch_size=dispatcher.get_batch_size,
        batch_dim=dispatcher.batch_dim,
    )


def _caller(
    batch_infer: Callable[..., Awaitable[Any]], dispatchers: dict, api_name: str
) -> Callable[..., Awaitable[Any]]:
    async def call(batch: Any, key: str | None = None) -> Any:
        token = _queue_key.set(key)
        try:
            _forget_stale_wait(dispatchers[api_name])
            return await batch_infer(api_name, (batch,), {})
        finally:
            _queue_key.reset(token)

    return call


_CAPACITY = "_cifar_capacity"  # set on a widened semaphore: how many batches it admits in all


def _allow_concurrent_batches(dispatcher: Any, concurrency: int) -> None:
    """BentoML's CorkDispatcher admits one batch at a time through a ``NonBlockSema(1)``, a plain counter;
    widen it in place. A new semaphore would leave a batch running now to release onto the old one, and
    each batch after it to take from the new one and release onto it: one more admitted for good."""
    sema = getattr(dispatcher, "_sema", None)
    if (
        concurrency > 1
        and sema is not None
        and hasattr(sema, "is_locked")
        and isinstance(getattr(sema, "sema", None), int)
    ):
        capacity = getattr(sema, _CAPACITY, 1)  # BentoML's 1, or what an earlier call made it
        if concurrency > capacity:
            sema.sema += concurrency - capacity
            setattr(sema, _CAPACITY, concurrency)
        log.info("up to %d batches at once", concurrency)
    elif concurrency > 1:
        log.warning(
            "cannot let BentoML's dispatcher run %d batches at once (other internals?): one at a time", concurrency
        )


def _forget_stale_wait(dispatcher: Any) -> None:
    """An idle dispatcher should not hold a lone request back for as long as requests queued in a past burst.

    BentoML's CorkDispatcher waits for company while ``n * (wn + dt + a) <= optimizer.wait * 0.95``, where
    ``optimizer.wait`` is the mean queueing delay of the last 50 batches, its own deliberate waiting
    included: after a burst it keeps delaying requests that arrive alone, and only unlearns it by a few
    percent every 5 s (docs/measurements.md, "Service internals"). When nothing is queued and no batch is
    running, that estimate is stale.
    """
    try:
        if not dispatcher._queue and not dispatcher._sema.is_locked():
            dispatcher.optimizer.wait = 0
    except AttributeError:  # other internals: leave the dispatcher as it is
        pass


# ---------------------------------------------------------------------------------------------- shed requests
# API name -> the answer to a request its own route's dispatcher sheds (answer_shed)
_shed_answers: dict[str, Callable[[], Any]] = {}
_RAISES = "_cifar_raises"  # kept on a dispatcher given an answer: BentoML's fallback, which raises


def answer_shed(api_name: str, answer: Callable[[], Any]) -> None:
    """Answer a request to batchable API ``api_name``'s own HTTP route that BentoML's dispatcher sheds (its
    queueing would pass ``max_latency_ms``) with ``answer()``, a Starlette Response.

    The dispatcher sheds a request by returning what its ``fallback`` returns, and BentoML's route sends a
    Response an API returns as it is; BentoML's fallback raises ServiceUnavailable instead, which the route
    logs as an ERROR with its traceback and answers as a bare 503. Only the API's own dispatcher answers: the
    queue keys' (:class:`KeyedDispatchers`, the in-process callers) raise BentoML's ServiceUnavailable on a
    shed, and their callers turn it into their own refusal. Takes effect when the app is built
    (:class:`RouterProbe`), or at once if it has been."""
    if _unsupported("a request the dispatcher sheds is logged as an error and answered with a bare 503"):
        return
    _shed_answers[api_name] = answer
    for router in _routers:
        _answer_sheds(router)


def _answer_sheds(router: Any) -> None:
    for api_name, answer in _shed_answers.items():
        factory = _app_factory(router, api_name)
        # the API's own dispatcher, whichever queue key the caller has set
        dispatcher = None if factory is None else dict.__getitem__(factory.dispatchers, api_name)
        if dispatcher is None or not callable(getattr(dispatcher, "fallback", None)):
            log.warning(
                "BentoML's dispatcher for %r was not found (a BentoML version with other internals?): a request "
                "it sheds is answered with BentoML's bare 503 and logged as an error",
                api_name,
            )
            continue
        if not hasattr(dispatcher, _RAISES):
            setattr(dispatcher, _RAISES, dispatcher.fallback)
        dispatcher.fallback = functools.partial(_shed, answer)


def _shed(answer: Callable[[], Any]) -> Any:
    """The dispatcher's fallback, called as its caller's wait ends in CancelledError: ``answer()`` when the
    dispatcher cancelled the queued request (a shed); when the caller's task itself was cancelled (the
    server's timeout, which answers 504 itself; a client gone), that cancellation goes on, as no answer reaches
    anyone."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError()
    return answer()


class BatchGateway:
    """Resolves the in-process dispatcher on first use; falls back to BentoML's self-proxy if it cannot."""

    def __init__(
        self, api_name: str, fallback: Callable[[], Callable[[Any], Awaitable[Any]]], concurrency: int = 1
    ) -> None:
        self.api_name = api_name
        self.concurrency = concurrency
        self._fallback = fallback
        self._call: Callable[..., Awaitable[Any]] | None = None
        self.in_process = False

    def resolve(self) -> Callable[..., Awaitable[Any]]:
        if self._call is None:
            call = (
                None
                if _unsupported("batching through the self-proxy call")
                else find_dispatcher(self.api_name, self.concurrency)
            )
            if call is not None:
                self._call, self.in_process = call, True
                log.info("batching %r in-process through BentoML's dispatcher", self.api_name)
            else:
                log.warning(
                    "BentoML's dispatcher for %r was not found (a BentoML version with other internals?): "
                    "batching through the slower self-proxy call instead",
                    self.api_name,
                )
                fallback = self._fallback()
                self._call = lambda batch, key=None: fallback(batch)  # the proxy has one queue for all
        return self._call

    async def __call__(self, batch: Any, key: str | None = None) -> Any:
        """``batch`` through the dispatcher; calls with the same ``key`` are batched together, in-process."""
        return await self.resolve()(batch, key)
