"""Request metrics labelled by route (:func:`label_metrics_by_route`): BentoML labels its request counters and
histograms with the request's path, so every made-up path and model name would make new series on /metrics,
without bound; they are labelled with the route's template, and a path no route takes with ``UNMATCHED``."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from . import batching
from .version import _unsupported, log

UNMATCHED = "(unmatched)"  # the endpoint label of a request no route takes
_REAL_PATH = "cifar.real_path"  # the scope key the path is kept under while the metrics middleware sees the label


def route_label(scope: dict, routes: Sequence[Any] | None = None) -> str:
    """The template of the route that takes the request (``/v2/models/{name}/infer``), or ``UNMATCHED``: a
    bounded set of labels, whatever paths clients send."""
    from starlette.routing import Match

    if routes is None:
        if not batching._routers:
            return scope["path"]
        routes = batching._routers[-1].routes
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
