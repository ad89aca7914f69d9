"""What this package relies on and the installed BentoML lacks (:func:`check_internals`), named one by one, so that
an upgrade that moves an internal fails tests/test_bentoml_compat.py loudly rather than falling back quietly."""

from __future__ import annotations

import inspect
from collections.abc import Sized
from typing import Any, Callable

import bentoml
import click

from . import version
from .apis import _specification, declare_multipart, openapi_ui_page
from .batching import _sibling


def _cork_dispatcher() -> Any:
    """A dispatcher as BentoML makes one per batchable API (for the check and its test)."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    return CorkDispatcher(max_latency_in_ms=10, max_batch_size=2, fallback=lambda: None)


def check_internals() -> list[str]:
    """What this package relies on and the installed BentoML lacks; empty when everything is where it should be."""
    problems = [] if version.SUPPORTED else [f"BentoML {bentoml.__version__} is not among {version.SUPPORTED_VERSIONS}"]

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
