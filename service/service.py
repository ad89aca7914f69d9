"""The BentoML service: top-k CIFAR predictions over HTTP, with adaptive batching across requests.

    POST /classify   multipart/form-data: images (files), k, model, min_confidence, fit -> top-k labels per image;
                     or application/json, the same fields with each image file base64-encoded
    GET  /models     the manifest's models (POST /models too, BentoML APIs being POST)
    POST /infer      the batchable stage: decoded pixels -> probabilities, batched across requests
    /v2/...          the Open Inference Protocol (oip.py, oip_http.py), through the same batchable stage
    GET  /           a page to try the models (page.py); BentoML's API UI at /docs
    GET  /livez /readyz /metrics /docs.json   BentoML's own; /readyz is 503 until this worker's models are loaded

/classify validates and decodes at the edge (numpy/Pillow, in a thread pool) and hands uint8 pixels
to ``infer``, whose BentoML dispatcher groups images from concurrent requests into one ONNX Runtime
batch (bentoml_compat/batching.py calls it in-process). Every refusal is JSON ``{"error": message, "reason":
label}`` with the status contract.REASONS gives the reason (on /v2, the protocol's ``{"error": message}``);
a caller's mistake is counted in ``cifar_rejected_inputs_total{reason=...}``. API keys and CORS, when
configured, are middleware (access.py).

Settings come from environment variables (settings.py), which ``python -m service serve`` sets from
its flags, read once per process in startup.py. The request bodies are request_bodies.py, the middleware in front
of the routes gates.py. Neither torch nor the training package is imported.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Optional, cast

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from inference.messages import counted

from .access import (
    ApiKeyGate,
    ContentTypeGate,
    CorsGate,
    cors_options,
    quiet_callers_mistakes,
    record_refusal,
)
from .bentoml_compat.apis import bind_apis, extend_openapi
from .bentoml_compat.batching import BatchGateway, RouterProbe, answer_shed
from .bentoml_compat.route_labels import label_metrics_by_route
from .confidence import is_confident
from .contract import ClassifyResponse, ModelList, Rejection, not_loaded
from .disconnects import cancel_when_gone, client_left
from .gates import BodyGate, LoadGate, MethodGate, PathGate, PlainRefusalGate, worker_service
from .metrics import ServiceMetrics
from .oip_http import oip_routes
from .openapi import document_openapi
from .page import page_routes
from .process_end import end_worker
from .request_bodies import (
    PIXEL_BYTES,
    ClassifyInput,
    InferInput,
    InferItem,
    NoInput,
    awaited_by_model,
    model_input,
)
from .startup import (
    DEFAULT_K,
    GPUS,
    INTRA_OP_THREADS,
    LIMITS,
    SERVICE_NAME,
    SETTINGS,
    STREAMS,
    WORKER,
    WORKERS,
)
from .uploads import Upload, decode_uploads, resolve_fit

with bentoml.importing():  # onnxruntime may be missing where the Bento is only being built
    from inference.runtime import top_k

    from .loading import BackgroundLoad, LoadedModel, LoadedModels, load_models, model_list

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar")


def _current_request() -> Request | None:
    """The HTTP request this task answers (BentoML's request context), or None outside one."""
    try:
        return SERVICE.context.request
    except LookupError:
        return None


# ---------------------------------------------------------------------------------------------- the service
@bentoml.service(
    name=SERVICE_NAME,
    workers=WORKERS,
    **({"resources": {"gpu": GPUS}} if GPUS else {}),
    threads=STREAMS,  # threads for sync APIs: each running batch of infer takes one
    traffic={"timeout": SETTINGS.timeout_s},
    # The self-proxy (only used if the in-process dispatcher is not found) must not recycle its session
    # under in-flight requests (bentoml/BentoML#5540).
    runner_connection={"max_requests": 2**31 - 1, "max_age": 10.0**9},
    metrics={"enabled": True},
    logging={"access": {"enabled": SETTINGS.access_log == "on"}},
)
class Classifier:
    def __init__(self) -> None:
        self.settings = SETTINGS
        self.ready = False
        self.metrics = ServiceMetrics.get()
        self._decode_limiter = anyio.CapacityLimiter(SETTINGS.decoder_threads(WORKER.cores))
        quiet_callers_mistakes()
        # to_async: set on each instance by BentoML, when it makes one; mypy sees only the class's own attributes.
        self._infer = BatchGateway("infer", lambda: self.to_async.infer, concurrency=STREAMS)  # type: ignore[attr-defined]
        bind_apis(self, ("classify", "infer", "models"))
        # BentoML makes the service before its server accepts a connection: the models load in a thread of their own,
        # so that /livez and /readyz (__is_ready__) answer meanwhile. LoadGate holds the API routes' requests.
        self.loading = BackgroundLoad(self._load, _load_failed)
        self.loading.start()

    def _load(self) -> None:
        self.served: LoadedModels = load_models(SETTINGS, WORKER)
        self.manifest = self.served.manifest
        self.loaded = self.served.models
        self.metrics.serve(list(self.loaded))
        PIXEL_BYTES.clear()
        PIXEL_BYTES.update({name: m.size[0] * m.size[1] * 3 for name, m in self.loaded.items()})
        self.ready = True
        log.info(
            "ready: %s; models %s; default %s (%s); batches of up to %s within %d ms, %d at once "
            "on %d thread(s) each; uploads decoded on up to %d thread(s)",
            WORKER.describe(),
            ", ".join(f"{name} on {m.classifier.placement.describe()}" for name, m in self.loaded.items()),
            self.served.default.name,
            self.served.default.reason,
            counted(SETTINGS.max_batch_size, "image"),
            SETTINGS.max_latency_ms,
            STREAMS,
            INTRA_OP_THREADS,
            self._decode_limiter.total_tokens,
        )

    def __is_ready__(self) -> bool:
        return self.ready

    @bentoml.api(input_spec=ClassifyInput, output_spec=ClassifyResponse)
    async def classify(
        self,
        images: list[Upload],
        k: Optional[int] = None,
        model: Optional[str] = None,
        min_confidence: Optional[float] = None,
        fit: Optional[str] = None,
        rejection: Optional[Rejection] = None,
    ) -> JSONResponse:
        """Top-k classes for each uploaded image, in the order sent.

        multipart/form-data with one or more `images` files, optional `k` (default 5), `model`
        (default: the default on this host, as GET /models says), `min_confidence` (0 to 1: each prediction then says
        whether its top-1 confidence reaches it, as `confident`) and `fit` (one of the `fits` GET /models lists:
        how a photo of another aspect ratio is fitted; default: the model's own). Or application/json with the same
        fields, `images` a list of {"filename", "data": base64 of the file}. A refused request is answered
        {"error": message, "reason": label}, with the status its reason has (listed below).
        """
        if rejection is not None:
            return self._reject(rejection)
        choice = self._choose(model, k)
        if isinstance(choice, Rejection):
            return self._reject(choice)
        loaded, k = choice
        fitted = resolve_fit(fit, loaded.entry.input.fit)
        if isinstance(fitted, Rejection):
            return self._reject(fitted)
        probabilities = await self.predict_uploads(loaded, images, fitted)
        if isinstance(probabilities, Rejection):
            return self._reject(probabilities)
        idx, conf = top_k(probabilities, k)
        classes = loaded.classes
        answer = ClassifyResponse.model_validate(
            {
                "model": loaded.entry.name,
                "predictions": [
                    {
                        "filename": upload.filename,
                        "top_k": [{"label": classes[c], "index": c, "confidence": p} for c, p in zip(ci, pi)],
                        # top_k holds at least one class (k >= 1), and the first is the most likely
                        "confident": None if min_confidence is None else is_confident(pi[0], min_confidence),
                    }
                    for upload, ci, pi in zip(images, idx.tolist(), conf.tolist())
                ],
            }
        )
        self.metrics.answered(loaded.entry.name)
        return JSONResponse(answer.to_json())

    async def predict_uploads(self, loaded: LoadedModel, uploads: list[Upload], fit: str) -> np.ndarray | Rejection:
        """Probabilities [N, classes] of encoded image files, decoded here (fitted as ``fit``, a name from
        ``inference.fits``) and batched with other requests."""
        decoded = await decode_uploads(uploads, loaded.size, SETTINGS.max_pixels, fit, self._decode_limiter)
        if isinstance(decoded, Rejection):
            return decoded
        return await self._batched([InferItem(model=loaded.entry.name, pixels=pixels) for pixels in decoded])

    async def predict_tensor(self, loaded: LoadedModel, tensor: np.ndarray) -> np.ndarray | Rejection:
        """Probabilities [N, classes] of the model's own input, float32 [N, 3, H, W], batched with other requests."""
        rows = np.ascontiguousarray(tensor, dtype="<f4")
        return await self._batched(
            [InferItem(model=loaded.entry.name, pixels=row.tobytes(), dtype="float32") for row in rows]
        )

    async def _batched(self, items: list[InferItem]) -> np.ndarray | Rejection:
        request = _current_request()
        if request is None:
            return await _queued(self._infer, items)
        # A client that closes its connection while its images wait (its own timeout) is answered no more: its
        # images still queued are not run. Its whole body has been read, so the next message is the disconnect.
        answer: np.ndarray | Rejection = client_left()
        with anyio.CancelScope() as waiting:
            # A task of its own, not a task group's: an error of the batch reaches BentoML as it is, not in a group
            watcher = asyncio.ensure_future(cancel_when_gone(request.receive, waiting))
            try:
                answer = await _queued(self._infer, items)
            finally:
                watcher.cancel()
        return answer

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
        input_spec=InferInput,
    )
    def infer(self, items: list[InferItem]) -> list[list[float]]:
        """Class probabilities for decoded images, batched across concurrent requests.

        The stage /classify feeds; callable directly with pixels already decoded and resized to the
        model's input size.
        """
        out: list[list[float]] = [[] for _ in items]  # an abandoned item's row: read by no one
        for name, positions in awaited_by_model(items).items():
            loaded = self.loaded[name]
            batch = model_input([items[i] for i in positions], loaded.size)
            probs = loaded.classifier.probabilities(batch)  # concurrent runs are safe: sessions are thread-safe
            self.metrics.batched(name, len(positions))
            for i, row in zip(positions, probs.tolist()):
                out[i] = row
        return out

    @bentoml.api(route="/models", input_spec=NoInput)
    def models(self) -> ModelList:
        """The models this service can answer with (also as GET /models)."""
        return model_list(self.served, LIMITS)

    def _choose(self, model: Optional[str], k: Optional[int]) -> tuple[LoadedModel, int] | Rejection:
        """The model asked for and the k to answer with, checked against that model."""
        name = model or self.served.default.name
        loaded = self.loaded.get(name)
        if loaded is None:
            return Rejection("unknown_model", f"unknown model {name[:100]!r}; available: {', '.join(self.loaded)}")
        classes = len(loaded.classes)
        if k is None:
            return loaded, min(DEFAULT_K, classes)
        if k > classes:
            return Rejection(
                "bad_k", f"k must be between 1 and {classes} (model {name!r} has {classes} classes), got {k}"
            )
        return loaded, k

    def _reject(self, rejection: Rejection) -> JSONResponse:
        return _refused(rejection, "/classify")  # the one route this answers


def _refused(rejection: Rejection, path: str) -> JSONResponse:
    """The answer to a refused POST to ``path``, an API route, counted and logged as every refusal is."""
    record_refusal(rejection, "POST", path)
    return JSONResponse(rejection.body(), status_code=rejection.status, headers=rejection.headers)


async def _queued(infer: Callable[..., Awaitable[Any]], items: list[InferItem]) -> np.ndarray | Rejection:
    """Probabilities [N, classes] of one model's ``items`` through its batching queue."""
    try:
        # One dispatcher job per request: one per image pays BentoML's per-call bookkeeping per image
        # (docs/measurements.md, "Service internals"); a job larger than the room left in a batch is split.
        # One queue per model: a batch never waits for another model, and each model's cost per image is
        # learnt from its own batches (bentoml_compat/batching.py, KeyedDispatchers).
        rows = await infer(items, key=items[0].model)  # callers pass one model's items
    except BaseException as exc:
        # Cancelled (BentoML's timeout, a client gone), shed or failed: the parts of a split request still queued
        # are not run.
        for item in items:
            item.abandon()
        if isinstance(exc, BentoMLException) and exc.error_code.value == 503:  # shed: over max_latency_ms
            return _overloaded()
        raise
    return np.asarray(rows, dtype=np.float64)


def _overloaded() -> Rejection:
    """The refusal of a request the batching queue shed, on every route alike (BentoML's own words for it, "process
    is overloaded", say neither why nor what to do)."""
    return Rejection(
        "overloaded", f"overloaded, try again: the request would wait longer than {SETTINGS.max_latency_ms} ms"
    )


def _infer_overloaded() -> JSONResponse:
    """The answer to a request to /infer that BentoML's dispatcher shed, as /classify and /v2 answer theirs
    (``_queued``): an overload is the service's load, no server error."""
    return _refused(_overloaded(), "/infer")


def _load_failed(exc: BaseException) -> None:
    """A worker that cannot load its models stops, with the status uvicorn gives a failed start-up (3), and BentoML
    starts another; one that stayed up would look merely slow to its probes."""
    log.critical("cannot load the models, so this worker stops: %s", exc, exc_info=exc)
    end_worker(3)


# ---------------------------------------------------------------------------------------------- GET /models


def _current_instance() -> Any:
    """The worker's service once its models are loaded; None before (at build time, while the worker loads)."""
    instance = worker_service()
    return instance if getattr(instance, "ready", False) else None


async def _get_models(request: Request) -> JSONResponse:
    instance = _current_instance()
    if instance is None:  # LoadGate refuses it first in a server; here for a request that reaches the route itself
        refused = not_loaded()
        record_refusal(refused, request.method, request.url.path)
        return JSONResponse(refused.body(), status_code=refused.status, headers=refused.headers)
    return JSONResponse(model_list(instance.served, LIMITS).model_dump(mode="json"))


# @bentoml.service made Classifier a bentoml.Service; mypy keeps a decorated class's own type, which has none of a
# Service's methods, so they are called through this name.
SERVICE = cast(bentoml.Service, Classifier)
SERVICE.mount_asgi_app(
    Starlette(
        routes=[
            Route("/models", _get_models, methods=["GET"]),
            *oip_routes(_current_instance, SERVICE_NAME, SETTINGS.max_images, SETTINGS.max_body_bytes),
            *page_routes(),
        ]
    ),
    path="/",
    name="models_get",
)
# The first added is the outer: CORS answers a browser's preflight before a key is asked for.
if SETTINGS.cors_origin_list:
    SERVICE.add_asgi_middleware(CorsGate, **cors_options(SETTINGS.cors_origin_list))
if SETTINGS.api_keys or SETTINGS.api_keys_file:
    SERVICE.add_asgi_middleware(ApiKeyGate, keys=SETTINGS.api_key_set())
SERVICE.add_asgi_middleware(LoadGate)
SERVICE.add_asgi_middleware(BodyGate)
SERVICE.add_asgi_middleware(MethodGate)
SERVICE.add_asgi_middleware(PathGate)
SERVICE.add_asgi_middleware(PlainRefusalGate)
SERVICE.add_asgi_middleware(RouterProbe)
answer_shed("infer", _infer_overloaded)
label_metrics_by_route(first=[ContentTypeGate])


# ---------------------------------------------------------------------------------------------- OpenAPI
def _document(document: dict) -> dict:
    instance = _current_instance()
    return document_openapi(
        document,
        getattr(instance, "loaded", None),
        DEFAULT_K,
        api_keys=bool(SETTINGS.api_keys or SETTINGS.api_keys_file),
    )


extend_openapi(Classifier, _document)
