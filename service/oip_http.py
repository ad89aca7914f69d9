"""The Open Inference Protocol's REST routes (service/oip.py has its types), mounted on the BentoML service.

    GET  /v2                          server metadata
    GET  /v2/health/live|ready        200, or 400 while the models load (as Triton answers); {"live"|"ready": bool}
    GET  /v2/models/{name}            model metadata: inputs, outputs, datatypes, shapes
    GET  /v2/models/{name}/ready
    POST /v2/models/{name}/infer

and the same under /v2/models/{name}/versions/1/ (each model has one version). Inference goes through the
service's own batchable API (:class:`Engine`), so these requests and /classify's share batches. Any other
path under /v2/models/ is answered in the protocol's error shape, never BentoML's plain text.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Protocol

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .access import record_refusal
from .body_limits import media_type, read_body
from .contract import Rejection, not_loaded
from .oip import (
    BINARY_REFUSAL,
    VERSION,
    InferPlan,
    ModelView,
    OipError,
    ServerLive,
    ServerReady,
    infer_response,
    model_metadata,
    read_infer_request,
    server_metadata,
)
from .uploads import Upload


class Engine(Protocol):
    """What the routes need of the running service (service.Classifier)."""

    loaded: Mapping[str, ModelView]
    ready: bool

    async def predict_uploads(self, model: Any, uploads: list[Upload], fit: str) -> np.ndarray | Rejection: ...

    async def predict_tensor(self, model: Any, tensor: np.ndarray) -> np.ndarray | Rejection: ...


FORM_REFUSAL = (
    'a multipart form is not an inference request: send the protocol\'s JSON, {"inputs": [...]} with the images as '
    "BYTES, each base64 (GET /v2/models/NAME shows the inputs), or POST the form to /classify"
)
STATISTICS_REFUSAL = (
    "this server does not implement Triton's statistics extension (GET /v2 lists the extensions it does): "
    "GET /metrics has its request counts and latencies"
)


def oip_routes(
    engine: Callable[[], Optional[Engine]], server_name: str, max_images: int, max_body_bytes: int
) -> list[BaseRoute]:
    """The routes, given a function that returns the running service (None until it is loaded)."""

    def refuse(rejection: Rejection, request: Request, headers: Mapping[str, str] | None = None) -> JSONResponse:
        """The refusal in the protocol's shape, its status and headers the contract's (``headers`` added: an Allow)."""
        record_refusal(rejection, request.method, request.url.path)
        return JSONResponse(
            OipError(error=rejection.message).model_dump(),
            status_code=rejection.status,
            headers={**rejection.headers, **(headers or {})},
        )

    def no_statistics(request: Request) -> JSONResponse:
        """Triton's statistics extension (tritonclient's get_inference_statistics), which this server does not
        have: said so, not as a model named "stats" it does not know (nor counted as the caller's mistake)."""
        return refuse(Rejection("no_such_path", STATISTICS_REFUSAL), request)

    def unknown(running: Engine, request: Request) -> Rejection | None:
        """Why the model the path names, at the version it names if it names one, is not served here; None if it is."""
        name, version = request.path_params["name"], request.path_params.get("version")
        if name not in running.loaded:
            return Rejection("unknown_model", f"unknown model {name[:100]!r}; available: {', '.join(running.loaded)}")
        if version in (None, VERSION):
            return None
        return Rejection(
            "unknown_model", f"model {name[:100]!r} has no version {version[:20]!r}; its one version is {VERSION!r}"
        )

    def located(request: Request) -> tuple[Engine, Any] | Response:
        """The running service and the model the path names, or the answer that says why not."""
        running = engine()
        if running is None:  # /classify waits for the models a while (LoadGate); a client here is told when to ask
            return refuse(not_loaded(), request)
        missing = unknown(running, request)
        if missing is not None:
            return refuse(missing, request)
        return running, running.loaded[request.path_params["name"]]

    async def server(request: Request) -> Response:
        return JSONResponse(server_metadata(server_name).model_dump())

    async def live(request: Request) -> Response:
        return JSONResponse(ServerLive(live=True).model_dump())

    async def ready(request: Request) -> Response:
        running = engine()
        now = running is not None and running.ready
        return JSONResponse(ServerReady(ready=now).model_dump(), status_code=200 if now else 400)

    async def metadata(request: Request) -> Response:
        running = engine()
        if request.path_params["name"] == "stats" and (running is None or "stats" not in running.loaded):
            return no_statistics(request)
        found = located(request)
        if isinstance(found, Response):
            return found
        return JSONResponse(model_metadata(found[1]).model_dump())

    async def model_ready(request: Request) -> Response:
        running = engine()
        if running is None:
            return Response(status_code=400)
        missing = unknown(running, request)
        if missing is not None:
            # The protocol's "no" to a readiness poll, which a gateway may repeat every few seconds for a model served
            # elsewhere: a question, not an input, so neither a counted refusal nor a line in the log.
            return JSONResponse(OipError(error=missing.message).model_dump(), status_code=missing.status)
        return Response(status_code=200 if running.ready else 400)

    async def infer(request: Request) -> Response:
        found = located(request)
        if isinstance(found, Response):
            return found
        running, model = found
        if "inference-header-content-length" in request.headers:  # the body is JSON followed by raw tensor bytes
            return refuse(Rejection("bad_tensor", BINARY_REFUSAL), request)
        # /classify's form (curl -F) sent here: the JSON parser's error about it would mislead
        if media_type(request) == "multipart/form-data":
            return refuse(Rejection("malformed_request", FORM_REFUSAL), request)
        body = await read_body(request, max_body_bytes)
        if isinstance(body, Rejection):
            return refuse(body, request)
        plan = read_infer_request(body, model, max_images)
        if isinstance(plan, Rejection):
            return refuse(plan, request)
        probabilities = await _predict(running, model, plan)
        if isinstance(probabilities, Rejection):
            return refuse(probabilities, request)
        return JSONResponse(infer_response(model, plan, probabilities).model_dump(mode="json", exclude_none=True))

    actions = (("", metadata, "GET"), ("/ready", model_ready, "GET"), ("/infer", infer, "POST"))
    model_routes = [
        Route(f"/v2/models/{{name}}{versioned}{action}", handler, methods=[method])
        for versioned in ("", "/versions/{version}")
        for action, handler, method in actions
    ]

    async def elsewhere(request: Request) -> Response:
        """Any other path under /v2/models/: a name with '/' in it, a trailing slash, a route's wrong method.
        Answered in the protocol's shape, not BentoML's plain text."""
        path = request.url.path
        if path.rstrip("/") == "/v2/models":  # the protocol has no list of models; this service has one
            return refuse(
                Rejection(
                    "no_such_path",
                    "the Open Inference Protocol has no list of models: GET /models lists this service's; "
                    "a model's metadata is GET /v2/models/NAME",
                ),
                request,
            )
        if request.method == "GET" and path.rstrip("/").endswith("/stats"):  # a model's (or a version's) statistics
            return no_statistics(request)
        for route in model_routes:
            if route.path_regex.match(path):
                allowed = ", ".join(sorted({*(route.methods or ()), "OPTIONS"}))
                if request.method == "OPTIONS":  # what the route takes (a CORS preflight was answered before this)
                    return Response(status_code=204, headers={"Allow": allowed})
                refused = Rejection(
                    "method_not_allowed", f"{request.method} is not allowed on {path[:200]}; use {allowed}"
                )
                return refuse(refused, request, {"Allow": allowed})
        return refuse(
            Rejection(
                "no_such_path",
                f"no such route: {path[:200]}; a model's routes are /v2/models/NAME[/versions/{VERSION}]"
                "[/ready|/infer]",
            ),
            request,
        )

    return [
        Route("/v2", server, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        *model_routes,
        # Last: a route above that matched the path but not the method is answered here.
        *(
            Route(path, elsewhere, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
            for path in ("/v2/models", "/v2/models/{rest:path}")  # the first answered as is, not redirected
        ),
    ]


async def _predict(running: Engine, model: Any, plan: InferPlan) -> np.ndarray | Rejection:
    if isinstance(plan.inputs, np.ndarray):
        return await running.predict_tensor(model, plan.inputs)
    return await running.predict_uploads(model, plan.inputs, plan.fit)
