"""Every use of BentoML's internals, in one place: what the service needs that BentoML 1.4 has no public API for.

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
- The OpenAPI document: BentoML cannot infer /classify's error answers or GET /models;
  :func:`extend_openapi` lets the service edit the document as a plain dict.
- APIs bound once per instance (:func:`bind_apis`), and upload fields declared as the file parts of a
  multipart form (:func:`declare_multipart`).
- BentoML's API UI page (:func:`openapi_ui_page`), which the service serves at /docs: its own page takes /.
- Request metrics labelled by route (:func:`label_metrics_by_route`): BentoML labels its request counters and
  histograms with the request's path, so every made-up path and model name would make new series on
  /metrics, without bound; they are labelled with the route's template, and a path no route takes
  with ``UNMATCHED``.
- A metrics folder per server (:func:`serve_with_own_metrics`): ``bentoml serve`` keeps its workers' metrics in
  ``$BENTOML_HOME/prometheus_multiproc_dir`` and empties it when it starts, so every other BentoML server
  started on the host would reset this one's /metrics and mix its own counts in.

``SUPPORTED`` says whether the installed BentoML is a version this was written against. When it is not,
or when an internal is not where it should be, each part falls back to BentoML's documented behaviour
(the self-proxy call, BentoML's own document, unbound APIs) and logs a warning.
:func:`check_internals` lists what is missing; tests/test_bentoml_compat.py fails on any of it.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import sys
from collections.abc import Sized
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Awaitable, Callable, Sequence

import bentoml
import click

from inference.interrupts import interrupt_within, say_stopped, stopped_while_importing, stops_recorded

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar.compat")

# The BentoML versions whose internals this module was written against (major.minor); tested with 1.4.39.
SUPPORTED_VERSIONS = ("1.4",)


def _supported(version: str) -> bool:
    return ".".join(version.split(".")[:2]) in SUPPORTED_VERSIONS


SUPPORTED = _supported(bentoml.__version__)


def _unsupported(what: str) -> bool:
    """True (with a warning) when the installed BentoML is not one this module knows."""
    if not SUPPORTED:
        log.warning(
            "BentoML %s is not a version this service was written against (%s): %s",
            bentoml.__version__,
            ", ".join(f"{v}.x" for v in SUPPORTED_VERSIONS),
            what,
        )
    return not SUPPORTED


# ---------------------------------------------------------------------------------------------- batching
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


# ---------------------------------------------------------------------------------------------- the OpenAPI document
def _document(spec: Any) -> dict:
    return spec.asdict()


def _specification(document: dict) -> Any:
    """BentoML's OpenAPISpecification of a document dict: what /docs.json and a Bento's openapi.yaml are made of."""
    from bentoml._internal.service.openapi.specification import OpenAPISpecification
    from bentoml._internal.utils.cattr import bentoml_cattr

    return bentoml_cattr.structure(document, OpenAPISpecification)


def extend_openapi(service: Any, edit: Callable[[dict], dict]) -> bool:
    """Serve ``edit(document)`` wherever BentoML serves ``service``'s OpenAPI document (as a dict, JSON's shape).

    BentoML's service object offers no hook: its class is swapped for a subclass whose ``openapi_spec``
    property edits what BentoML's own returns."""
    if _unsupported("keeping BentoML's own OpenAPI document"):
        return False
    base = type(service)

    class DocumentedService(base):  # type: ignore[misc, valid-type]  # a base known at run time only
        __slots__ = ()

        @property
        def openapi_spec(self):  # BentoML's property, edited
            return _specification(edit(_document(base.openapi_spec.fget(self))))

    try:
        service.__class__ = DocumentedService
    except TypeError as exc:  # a BentoML whose Service cannot be specialised: keep its own document
        log.warning("cannot extend the OpenAPI document (%s)", exc)
        return False
    return True


# ---------------------------------------------------------------------------------------------- API objects
def bind_apis(instance: Any, names: Sequence[str]) -> None:
    """Bind ``instance``'s APIs once. BentoML's API descriptor builds a new wrapper (inspect.signature,
    functools.wraps) on every attribute access, and its server looks the API up once per request and once
    per batched job; bound once, those look-ups find the same callable in the instance."""
    if _unsupported("API wrappers rebuilt on every access"):
        return
    for name in names:
        instance.__dict__[name] = getattr(type(instance), name).__get__(instance, type(instance))


def declare_multipart(descriptor: type[bentoml.IODescriptor], file_fields: Sequence[str]) -> None:
    """Have BentoML document ``descriptor`` as multipart/form-data whose ``file_fields`` are file parts. It
    recognises a file field only by a path or image type; an upload read into memory is neither."""
    descriptor.media_type = "multipart/form-data"
    descriptor.multipart_fields = list(file_fields)


# ---------------------------------------------------------------------------------------------- the API UI
def openapi_ui_page() -> Path | None:
    """The HTML file BentoML serves at / (its Swagger UI), or None where it is not. It loads its scripts from
    ``./static_content/`` and the document from ``./docs.json``, which BentoML keeps serving, so it works from
    any top-level path."""
    try:
        from _bentoml_impl.server import app
        from bentoml._internal.configuration.containers import BentoMLContainer

        name = "main-ui.html" if BentoMLContainer.new_index else "main-openapi.html"
        page = Path(app.__file__).parent / name
    except Exception as exc:  # other internals
        log.warning("BentoML's API UI page was not found (%s)", exc)
        return None
    return page if page.is_file() else None


# ---------------------------------------------------------------------------------------------- the check
def _cork_dispatcher() -> Any:
    """A dispatcher as BentoML makes one per batchable API (for the check and its test)."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    return CorkDispatcher(max_latency_in_ms=10, max_batch_size=2, fallback=lambda: None)


# ---------------------------------------------------------------------------------------------- metrics labels
UNMATCHED = "(unmatched)"  # the endpoint label of a request no route takes
_REAL_PATH = "cifar.real_path"  # the scope key the path is kept under while the metrics middleware sees the label


def route_label(scope: dict, routes: Sequence[Any] | None = None) -> str:
    """The template of the route that takes the request (``/v2/models/{name}/infer``), or ``UNMATCHED``: a
    bounded set of labels, whatever paths clients send."""
    from starlette.routing import Match

    if routes is None:
        if not _routers:
            return scope["path"]
        routes = _routers[-1].routes
    partial = None  # as Starlette routes: the first full match, else the first that matched the path only
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a route of a kind that cannot judge this scope
            continue
        if match is Match.NONE:
            continue
        inner = getattr(route, "routes", None)  # a mounted app's own routes
        label = route_label({**scope, **child}, inner) if inner else str(getattr(route, "path", "") or UNMATCHED)
        if label == UNMATCHED:
            continue
        if match is Match.FULL:
            return label
        partial = partial or label
    return partial or UNMATCHED


class _RealPath:
    """Below the metrics middleware: everything else (tracing, the access log, the routes) sees the real path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
        await self.app(scope, receive, send)


def label_metrics_by_route(first: Sequence[Callable[[Any], Any]] = ()) -> None:
    """Make BentoML's request-metrics middleware, as the service's app is built, label requests by route. ``first``:
    ASGI middlewares (outermost first) that see each request below that one, before BentoML's tracing and access log
    do."""
    if _unsupported("request metrics keep one series per path, unbounded"):
        return
    try:
        from bentoml._internal.server.http import instruments

        base = instruments.RunnerTrafficMetricsMiddleware
        if getattr(base, "labels_by_route", False):
            return

        class RouteLabelledMetrics(instruments.RunnerTrafficMetricsMiddleware):
            labels_by_route = True

            def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
                for middleware in reversed(first):
                    app = middleware(app)
                super().__init__(_RealPath(app), *args, **kwargs)

            async def __call__(self, scope, receive, send) -> None:
                if scope["type"] == "http" and scope["path"] != "/metrics":
                    label = route_label(scope)
                    if label != scope["path"]:
                        scope = {**scope, "path": label, _REAL_PATH: scope["path"]}
                await super().__call__(scope, receive, send)

        # Ours in BentoML's module, where the app's middlewares import it from when built; mypy refuses any assignment
        # to a name a class statement bound (the ignore).
        instruments.RunnerTrafficMetricsMiddleware = RouteLabelledMetrics  # type: ignore[misc]
    except Exception as exc:  # an internal that moved: labelled by path, as BentoML does
        log.warning("request metrics stay labelled by path (%s: %s)", type(exc).__name__, exc)


# ---------------------------------------------------------------------------------------------- metrics folder
METRICS_FOLDER = "cifar-metrics"  # beside BentoML's own prometheus_multiproc_dir, which a plain `bentoml serve` empties


def metrics_folder(port: int) -> Path:
    """The folder of the metrics of the server on ``port``: one server per port, so no other server's."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.bentoml_home.get()) / METRICS_FOLDER / f"port-{port}"


def serve_with_own_metrics(argv: list[str], port: int) -> int:
    """``bentoml ARGV`` (its command line's entry point, in this process) with the workers' metrics in
    ``metrics_folder(port)``, which BentoML empties at the start as it would its shared one: the exit status."""
    if not _unsupported("the metrics stay in BentoML's shared folder, which other servers on this host empty"):
        try:
            from bentoml._internal.configuration.containers import BentoMLContainer

            BentoMLContainer.prometheus_multiproc_dir.set(str(metrics_folder(port)))
        except Exception as exc:  # an internal that moved: BentoML's shared folder, as `bentoml serve` has it
            log.warning("metrics stay in BentoML's shared folder (%s: %s)", type(exc).__name__, exc)
    with stops_recorded() as seen:
        try:
            from bentoml_cli.cli import cli
        except (KeyboardInterrupt, Exception) as exc:  # Ctrl-C in the second of imports before BentoML handles it
            return stopped_while_importing(exc, seen)  # pydantic-core's SchemaError, for one, may be a stop

    sys.argv = ["bentoml", *argv]
    return run_command(cli, argv)


def run_command(command: click.Command, argv: list[str]) -> int:
    """Run click ``command`` on ``argv`` as its standalone entry point does and return the exit status, except for a
    stop (Ctrl-C, or a termination inference/interrupts.py turns into one) before BentoML's process manager takes
    the signals over: it ends as every other command's stop does, ``interrupted`` and 128 + the signal (click's entry
    point says ``Aborted!`` after a blank line, status 1)."""
    try:
        with command.make_context("bentoml", list(argv)) as ctx:
            command.invoke(ctx)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:  # a prompt declined: click's own answer
        print("Aborted!", file=sys.stderr, flush=True)
        return 1
    except (KeyboardInterrupt, Exception) as exc:
        # A stop may come back inside another error: an ImportError from ONNX Runtime's native module, which
        # BentoML's loader reports as a failed import of the service.
        stop = interrupt_within(exc)
        if stop is not None:
            return say_stopped(stop, "interrupted")
        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def check_internals() -> list[str]:
    """What this module relies on and the installed BentoML lacks; empty when everything is where it should be."""
    problems = [] if SUPPORTED else [f"BentoML {bentoml.__version__} is not among {SUPPORTED_VERSIONS}"]

    def check(what: str, test: Callable[[], bool]) -> None:
        try:
            ok = test()
        except Exception as exc:  # an import or attribute that moved
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
        else:
            if not ok:
                problems.append(what)

    def app_factory() -> Any:
        from _bentoml_impl.server.app import ServiceAppFactory

        return ServiceAppFactory

    def sdk(name: str) -> Any:
        from _bentoml_sdk.method import APIMethod
        from _bentoml_sdk.service.factory import Service

        return {"APIMethod": APIMethod, "Service": Service}[name]

    check(
        "CorkDispatcher has _queue, optimizer.wait and a NonBlockSema _sema with is_locked() and sema",
        lambda: (
            lambda d: (
                isinstance(d._queue, Sized)
                and hasattr(d.optimizer, "wait")
                and callable(d._sema.is_locked)
                and isinstance(d._sema.sema, int)
            )
        )(_cork_dispatcher()),
    )
    check(
        "ServiceAppFactory keeps its dispatchers by API name and has batch_infer(name, args, kwargs)",
        lambda: (
            "self.dispatchers[name]" in inspect.getsource(app_factory().__init__)
            and list(inspect.signature(app_factory().batch_infer).parameters)[:4]
            == ["self", "name", "input_args", "input_kwargs"]
        ),
    )
    check(
        "batch_infer looks its dispatcher up as self.dispatchers[name] in the caller's task",
        lambda: "await self.dispatchers[name](" in inspect.getsource(app_factory().batch_infer),
    )
    check(
        "a dispatcher can be made like another, sharing its semaphore",
        lambda: (
            lambda d: (lambda s: s._sema is d._sema and s.max_latency == d.max_latency and s is not d)(_sibling(d))
        )(_cork_dispatcher()),
    )
    check(
        "ServiceAppFactory routes an API to functools.partial(self.api_endpoint_wrapper, name)",
        lambda: "functools.partial(self.api_endpoint_wrapper, name)" in inspect.getsource(app_factory()),
    )
    check(
        "an API's arguments are the input descriptor's fields",
        lambda: "for k in input_data.model_fields" in inspect.getsource(app_factory().api_endpoint),
    )
    check(
        "a dispatcher answers a request it sheds with what its fallback returns, and the API's route sends a "
        "Response as it is",
        lambda: (
            "return self.fallback()" in inspect.getsource(type(_cork_dispatcher()).__call__)
            and callable(_cork_dispatcher().fallback)
            and "if isinstance(output, Response):" in inspect.getsource(app_factory().api_endpoint)
        ),
    )
    check(
        "Service.openapi_spec is a property",
        lambda: isinstance(inspect.getattr_static(sdk("Service"), "openapi_spec"), property),
    )
    check("APIMethod is a descriptor", lambda: hasattr(sdk("APIMethod"), "__get__"))
    check("BentoML's API UI page is a file", lambda: openapi_ui_page() is not None)
    check(
        "the OpenAPI specification converts to a dict and back",
        lambda: (
            _specification(
                {"openapi": "3.0.2", "info": {"title": "t", "version": "1"}, "paths": {}, "servers": []}
            ).asdict()["info"]["title"]
            == "t"
        ),
    )

    def multipart() -> bool:
        class Probe(bentoml.IODescriptor):
            files: list[int] = []
            note: str = ""

        declare_multipart(Probe, ["files"])
        return Probe.mime_type() == "multipart/form-data" and Probe.multipart_fields == ["files"]

    check("IODescriptor reads media_type and multipart_fields", multipart)

    def metrics_middleware() -> bool:
        from bentoml._internal.server.http import instruments

        source = inspect.getsource(app_factory().middlewares.fget)
        bentomls: type = instruments.RunnerTrafficMetricsMiddleware
        while getattr(bentomls, "labels_by_route", False):  # ours, put in its place once the service was imported
            bentomls = bentomls.__mro__[1]
        call = inspect.getsource(bentomls.__call__)
        return (
            "from bentoml._internal.server.http.instruments import" in source
            and "RunnerTrafficMetricsMiddleware" in source
            and 'endpoint = scope["path"]' in call
            and "await self.app(scope, receive" in call
        )

    check(
        "the app's middlewares import RunnerTrafficMetricsMiddleware when built, and it labels by scope['path']",
        metrics_middleware,
    )

    def own_metrics() -> bool:
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml_cli.cli import cli

        return isinstance(cli, click.Command) and callable(BentoMLContainer.prometheus_multiproc_dir.set)

    check(
        "BentoMLContainer.prometheus_multiproc_dir can be set, and bentoml_cli.cli.cli is the command line (a click "
        "command)",
        own_metrics,
    )
    return problems
