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
batch (bentoml_compat.py calls it in-process). Every refusal is JSON ``{"error": message, "reason":
label}`` with the status contract.REASONS gives the reason (on /v2, the protocol's ``{"error": message}``);
a caller's mistake is counted in ``cifar_rejected_inputs_total{reason=...}``. API keys and CORS, when
configured, are middleware (access.py).

Settings come from environment variables (settings.py), which ``python -m service serve`` sets from
its flags. Neither torch nor the training package is imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Awaitable, Callable, Literal, Mapping, Optional, cast

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from inference.fits import FITS, fit_help
from inference.manifest import ManifestError, load_manifest
from inference.messages import counted
from inference.preprocess import pixels_to_model_input

from . import bentoml_compat
from .access import (
    ApiKeyGate,
    ContentTypeGate,
    CorsGate,
    cors_options,
    quiet_callers_mistakes,
    record_refusal,
    send_rejection,
)
from .bentoml_compat import BatchGateway, RouterProbe, label_metrics_by_route
from .confidence import is_confident
from .contract import ClassifyResponse, Limits, ModelList, ReasonName, Rejection, not_loaded
from .gpus import gpu_report
from .metrics import ServiceMetrics
from .oip_http import oip_routes
from .openapi import document_openapi
from .page import page_routes
from .process_end import end_worker
from .settings import ServiceSettings, SettingsError, cpu_count, start_notes
from .uploads import (
    Upload,
    decode_uploads,
    fit_name,
    integer_k,
    media_type,
    model_name,
    read_body,
    read_classify_fields,
    refusal_error,
    rejection_from,
    resolve_fit,
    tensor_rejection,
    threshold,
    too_many_values,
    without_bom,
)
from .workers import place_worker, worker_count

with bentoml.importing():  # onnxruntime may be missing where the Bento is only being built
    from inference.runtime import top_k, wants_cuda

    from .loading import (
        CHECKED_ENV,
        BackgroundLoad,
        LoadedModel,
        LoadedModels,
        check_model_files,
        checked_before,
        load_models,
        model_list,
    )

# Under "bentoml": the logger BentoML configures (INFO) in its server processes.
log = logging.getLogger("bentoml.cifar")

# Read when BentoML imports this module in each worker: the decorators below need them at class creation.
# `bentoml serve` (the container's command) imports it directly, without `python -m service serve`'s checks:
# a bad CIFAR_* value or key file is then one line and exit 2, not BentoML's traceback of the import.
try:
    SETTINGS = ServiceSettings.checked()
    if bentoml.server_context.worker_index is None:
        # The server's own process, not a worker: a missing or tampered model folder (a mount that is not
        # there) is refused here once; a worker would raise it in tracebacks, and outside a container BentoML
        # starts the worker again every few seconds. The workers check the files again as they load them.
        # onnxruntime is there to open them where check_model_files is (not where a Bento is built).
        opens = "check_model_files" in globals()
        if not (opens and checked_before(Path(SETTINGS.models_dir), os.environ)):
            manifest = load_manifest(SETTINGS.models_dir, verify=True)
            if opens:
                check_model_files(manifest, Path(SETTINGS.models_dir))
except (SettingsError, ManifestError) as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


def _on_gpu() -> bool:
    try:
        return wants_cuda(SETTINGS.device)
    except NameError:  # onnxruntime not importable where the service is only being built
        return False


def says_the_settings(worker_index: int | None, environ: Mapping[str, str], command: str | None) -> bool:
    """Whether this process says what the start runs with (``start_notes``: the settings given, the warnings): the
    process of `bentoml serve` itself (``command``: the click command importing the service), once, not each
    worker, nor `bentoml build`, a test or a script that imports the module; and not a server that `python -m
    service serve` became, which said it before (its mark of the manifest it checked is in the environment)."""
    try:
        mark = CHECKED_ENV
    except NameError:  # onnxruntime not importable where the service is only being built: no server runs here
        return False
    return command in ("serve", "serve-http") and worker_index is None and not environ.get(mark)


def _bentoml_command() -> str | None:
    """The name of the bentoml command importing this module, if one is (``bentoml serve``, ``bentoml build``)."""
    import click

    context = click.get_current_context(silent=True)
    return None if context is None else context.info_name


ON_GPU = _on_gpu()
if says_the_settings(bentoml.server_context.worker_index, os.environ, _bentoml_command()):
    for note in start_notes(os.environ, {}, SETTINGS, on_gpu=ON_GPU, cores=cpu_count()):
        print(note, file=sys.stderr, flush=True)
# One worker per visible GPU unless --workers says otherwise; BentoML makes GPUS devices visible to the workers
# (resources below) and each takes its own by its index (service/workers.py).
GPUS = len(gpu_report().gpus) if ON_GPU else 0
WORKERS = worker_count(SETTINGS.workers, GPUS)
WORKER = place_worker(bentoml.server_context.worker_index, WORKERS, GPUS, cpu_count())
STREAMS = SETTINGS.inference_streams(ON_GPU, WORKER.cores)
INTRA_OP_THREADS = SETTINGS.intra_op_threads(ON_GPU, WORKER.cores)

LIMITS = Limits(
    max_images=SETTINGS.max_images,
    max_body_bytes=SETTINGS.max_body_bytes,
    max_pixels=SETTINGS.max_pixels,
    timeout_s=SETTINGS.timeout_s,
)
DEFAULT_K = 5
SERVICE_NAME = "cifar_classifier"
# name -> bytes of one image's uint8 pixels, for validating /infer input; filled when the models are loaded.
_PIXEL_BYTES: dict[str, int] = {}
_ITEM_SIZE = {"uint8": 1, "float32": 4}


# ---------------------------------------------------------------------------------------------- inputs
class InferItem(BaseModel):
    """One decoded image for the batchable stage."""

    # extra="forbid": a field this route does not read (a "fit": the pixels are fitted already) is refused, not
    # silently ignored
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", protected_namespaces=(), extra="forbid")

    model: str = Field(description="a model name from /models")
    pixels: bytes = Field(
        description="uint8 RGB pixels, height x width x 3 in row-major order (the model's input size); with "
        "dtype float32, the model's input itself: float32 little-endian, 3 x height x width, RGB in [0, 1]; "
        "base64 in JSON"
    )
    dtype: Literal["uint8", "float32"] = Field(default="uint8", description="how pixels is to be read")
    # Set when no one awaits this item's row any more (its request timed out, or a part of it was shed): a batch
    # that takes it runs only its batch-mates. A queued backlog of abandoned images would keep the next requests
    # waiting.
    _abandoned: bool = PrivateAttr(default=False)

    def abandon(self) -> None:
        self._abandoned = True

    @property
    def abandoned(self) -> bool:
        return self._abandoned

    @model_validator(mode="after")
    def _fits_model(self) -> "InferItem":
        if _PIXEL_BYTES:
            if self.model not in _PIXEL_BYTES:
                raise refusal_error(
                    "unknown_model", f"unknown model {self.model[:100]!r}; available: {', '.join(_PIXEL_BYTES)}"
                )
            expected = _PIXEL_BYTES[self.model] * _ITEM_SIZE[self.dtype]
            if len(self.pixels) != expected:
                raise refusal_error(
                    "bad_tensor",
                    f"model {self.model!r} takes {expected} bytes of {self.dtype} pixels per image, "
                    f"got {len(self.pixels)}",
                )
        if self.dtype == "float32":
            refused = tensor_rejection(np.frombuffer(self.pixels, dtype="<f4"), "float32 pixels")
            if refused is not None:
                raise refusal_error(refused.reason, refused.message)
        return self


def awaited_by_model(items: list[InferItem]) -> dict[str, list[int]]:
    """The positions in ``items`` of each model's items whose rows someone still awaits (not ``abandoned``)."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if not item.abandoned:
            groups.setdefault(item.model, []).append(i)
    return groups


# The JSON values of one item of an /infer body: its object and its fields.
_ITEM_VALUES = 1 + len(InferItem.model_fields)


def model_input(items: list[InferItem], size: tuple[int, int]) -> np.ndarray:
    """The float32 [N, 3, H, W] batch of items for one model, decoded pixels and float tensors alike."""
    if all(item.dtype == "uint8" for item in items):
        return pixels_to_model_input(b"".join(item.pixels for item in items), len(items), size)
    batch = np.empty((len(items), 3, *size), dtype=np.float32)
    for dtype in _ITEM_SIZE:
        rows = [row for row, item in enumerate(items) if item.dtype == dtype]
        if rows:
            joined = b"".join(items[row].pixels for row in rows)
            batch[rows] = (
                pixels_to_model_input(joined, len(rows), size)
                if dtype == "uint8"
                else np.frombuffer(joined, dtype="<f4").reshape(len(rows), 3, *size)
            )
    return batch


# The docstrings of the request types are the OpenAPI document's descriptions of the bodies, which clients read.
class InferInput(bentoml.IODescriptor):
    """application/json: {"items": [...]}, each an image already decoded to the model's input size."""

    # extra="forbid": a field beside items (a "fit", a "k") would be left unread, the pixels answered without it
    model_config = ConfigDict(extra="forbid")

    items: Annotated[list[InferItem], Field(min_length=1, max_length=SETTINGS.max_batch_size)]

    @classmethod
    async def read(cls, request: Request) -> "InferInput | Rejection":
        """The body, read within the limit; BodyGate reads it so before BentoML would, so that a refusal is the
        contract's (its reason, status and count), not BentoML's generic 400."""
        given = media_type(request)
        if given not in ("application/json", ""):
            return Rejection("unsupported_media_type", f"send JSON (application/json), not {given}")
        body = await read_body(request, SETTINGS.max_body_bytes)
        if isinstance(body, Rejection):
            return body
        return cls.parse(body)

    @classmethod
    def parse(cls, body: bytes) -> "InferInput | Rejection":
        # pydantic checks the length of ``items`` once the whole list is parsed: a body holding more values than
        # the most items take is refused first.
        most = SETTINGS.max_batch_size
        largest = _ITEM_VALUES * most + 2  # the object around them and its list
        crowded = too_many_values(body, largest, most, 'each {"model", "pixels", "dtype"}')
        if crowded is not None:
            return crowded
        try:
            return cls.model_validate_json(without_bom(body) or b"{}")
        except ValidationError as exc:
            return rejection_from(exc)

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> "InferInput":
        return await _gated(cls, request)


class NoInput(bentoml.IODescriptor):
    """No parameters: an empty body or an empty JSON object."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def read(cls, request: Request) -> "NoInput | Rejection":
        body = await read_body(request, 4096)
        if isinstance(body, Rejection):
            return body
        body = without_bom(body)
        if not body.strip():
            return cls()
        given = media_type(request)
        if given not in ("application/json", ""):  # as /infer answers a body of another kind
            return Rejection("unsupported_media_type", f"send JSON (application/json), or no body, not {given}")
        try:
            return cls.model_validate_json(body)
        except ValidationError as exc:
            return rejection_from(exc)

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> "NoInput":
        return await _gated(cls, request)


async def _gated(cls, request: Request):
    """The input ``BodyGate`` read for this request, or (no gate in front) read here, where a refusal can only be
    BentoML's 400."""
    given = getattr(request.state, BodyGate.STATE, None) or await cls.read(request)
    if isinstance(given, Rejection):
        raise _validation_error(given.reason, given.message)
    return given


class LoadGate:
    """ASGI middleware: a request to an API route (``API_METHODS``) that arrives while this worker loads its models
    waits for them before its body is read and checked against them, up to ``LOAD_WAIT_MARGIN_S`` before
    --timeout; still loading then (or no service made yet), it is refused 503 ``loading`` with Retry-After.
    BentoML's 504 at --timeout would tell the client to send fewer images. Health, metrics and the protocol's routes
    answer meanwhile; a method the route does not take is refused at once (MethodGate)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        allowed = API_METHODS.get(scope["path"], ()) if scope["type"] == "http" else ()
        if scope.get("method") in allowed and scope["method"] != "OPTIONS":
            instance = _instance()
            if instance is None or not await _loaded_within(instance, SETTINGS.timeout_s - LOAD_WAIT_MARGIN_S):
                await send_rejection(scope, send, not_loaded())
                return
        await self.app(scope, receive, send)


# How long before --timeout a request waiting for the models is refused: its answer must leave before BentoML's own
# timer, which started with the request, answers 504.
LOAD_WAIT_MARGIN_S = 1.0


async def _loaded_within(instance: Any, seconds: float) -> bool:
    """Whether the worker's models are loaded, waiting for them up to ``seconds``."""
    if instance.ready:
        return True
    with anyio.move_on_after(max(0.0, seconds)):
        await instance.loading.wait()
    return bool(instance.ready)


class BodyGate:
    """ASGI middleware: reads and checks the body of a POST to a JSON API that BentoML would parse (``READERS``),
    answers a refusal itself, in the contract's reason, status and count rather than BentoML's generic 400,
    and leaves what it read in the request's state for the API's input, so the body is parsed once."""

    STATE = "gated_input"
    READERS = {"/infer": InferInput.read, "/models": NoInput.read}

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        # The exact path: BentoML serves no "/infer/", which PathGate refuses (404 naming the path without the
        # slash) whatever its body; read here, a bad body would be refused as if the path were served.
        read = self.READERS.get(scope["path"]) if scope["type"] == "http" else None
        if read is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        given = await read(Request(scope, receive))
        if isinstance(given, Rejection):
            await send_rejection(scope, send, given)
            return
        scope.setdefault("state", {})[self.STATE] = given
        items = given.items if isinstance(given, InferInput) else []
        # A task of its own, not a task group's: an error of the app reaches the server as it is, not in a group
        watcher = asyncio.ensure_future(_abandon_when_gone(receive, items)) if items else None
        replaced = False

        async def answer(message: Message) -> None:
            # A client gone while its images waited is answered 499 in the log and the request metrics, as
            # /classify's and /v2's are: BentoML's route would answer 200, with empty rows, to no one.
            nonlocal replaced
            if replaced:  # the route's answer to no one, already answered for
                return
            if message["type"] == "http.response.start" and _left(watcher):
                replaced = True
                await send_rejection(scope, send, _client_left())
                return
            await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            if watcher is not None:
                watcher.cancel()
            # Answered, or cancelled by BentoML's timeout (which answers 504 itself): a row of this request still
            # queued in BentoML's own batching queue is run for no one otherwise.
            for item in items:
                item.abandon()


async def _client_gone(receive: Callable[[], Awaitable[Message]]) -> None:
    """Returns once the client has closed its connection. Awaited only once the request's body has been read whole,
    when the server's next message is the disconnect, or the end of its own answer."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _left(watcher: "asyncio.Future[None] | None") -> bool:
    """Whether the client of a request that ``watcher`` (``_abandon_when_gone``) watches has closed its connection."""
    return watcher is not None and watcher.done() and not watcher.cancelled() and watcher.exception() is None


async def _abandon_when_gone(receive: Callable[[], Awaitable[Message]], items: list["InferItem"]) -> None:
    await _client_gone(receive)
    for item in items:
        item.abandon()


async def _cancel_when_gone(receive: Callable[[], Awaitable[Message]], scope: anyio.CancelScope) -> None:
    await _client_gone(receive)
    scope.cancel()


def _current_request() -> Request | None:
    """The HTTP request this task answers (BentoML's request context), or None outside one."""
    try:
        return SERVICE.context.request
    except LookupError:
        return None


def _validation_error(kind: ReasonName, message: str) -> ValidationError:
    """A pydantic error, which BentoML answers as 400 {"error", "detail"} like its own validation errors."""
    return ValidationError.from_exception_data(
        "request", [{"type": refusal_error(kind, message), "loc": (), "input": None}]
    )


class ClassifyInput(bentoml.IODescriptor):
    """multipart/form-data, one file part per image; or application/json, the same fields with each image
    {"filename": name, "data": base64 of the file}."""

    # Parsed by hand, not by BentoML, so that the limits hold and bad input is a 4xx.
    # A request either validates into these fields, or it is refused: then ``rejection`` says why and the
    # others keep their defaults (which is why ``images``, required on the wire, has one here).
    # ``k``, ``model`` and ``min_confidence`` are None when not given.
    model_config = ConfigDict(json_schema_extra={"required": ["images"]})

    images: Annotated[
        list[Annotated[Upload, WithJsonSchema({"type": "string", "format": "binary"})]],
        Field(
            min_length=1,
            max_length=SETTINGS.max_images,
            description=f"one file per image (JPEG, PNG, BMP, GIF, TIFF, WebP, ...), at most {SETTINGS.max_images}; "
            "any size up to the pixel limit, any mode (grayscale, RGBA, palette, CMYK, 16-bit); EXIF "
            "rotation is applied and images are fitted (see fit) and resized (bilinear) to the model's input "
            "size, 32x32 for CIFAR",
            default_factory=list,
        ),
    ]
    # Not given: 5, or every class of a model with fewer; the most a model allows is checked against that model.
    k: Annotated[
        Optional[Annotated[int, Field(ge=1)]],
        BeforeValidator(integer_k),
        WithJsonSchema({"type": "integer", "minimum": 1}),
        Field(
            description="how many classes to return per image, at most the model's class count; default 5, or all "
            "classes of a model with fewer",
            json_schema_extra={"default": DEFAULT_K},
        ),
    ] = None
    model: Annotated[
        Optional[str],
        BeforeValidator(model_name),
        Field(description="a model name from /models; default: the default on this host (GET /models)"),
    ] = None
    min_confidence: Annotated[
        Optional[Annotated[float, Field(ge=0.0, le=1.0)]],
        BeforeValidator(threshold),
        Field(
            description='mark each prediction whose top-1 confidence is below this (0 to 1) with "confident": false '
            '(and the others true) instead of leaving it out; default: no threshold and no "confident" '
            "field"
        ),
    ] = None
    fit: Annotated[
        Optional[str],
        BeforeValidator(fit_name),
        WithJsonSchema({"type": "string", "enum": list(FITS)}),
        Field(
            description="how an image of another aspect ratio than the model's input is fitted to it: "
            f"{fit_help()}; default: the model's own (/models lists it)"
        ),
    ] = None
    rejection: SkipJsonSchema[Optional[Rejection]] = None

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> "ClassifyInput":
        fields = await read_classify_fields(request, SETTINGS.max_images, SETTINGS.max_body_bytes)
        if isinstance(fields, Rejection):
            return cls(rejection=fields)
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            return cls(rejection=rejection_from(exc))


bentoml_compat.declare_multipart(ClassifyInput, ["images"])


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
        bentoml_compat.bind_apis(self, ("classify", "infer", "models"))
        # BentoML makes the service before its server accepts a connection: the models load in a thread of their own,
        # so that /livez and /readyz (__is_ready__) answer meanwhile. LoadGate holds the API routes' requests.
        self.loading = BackgroundLoad(self._load, _load_failed)
        self.loading.start()

    def _load(self) -> None:
        self.served: LoadedModels = load_models(SETTINGS, WORKER)
        self.manifest = self.served.manifest
        self.loaded = self.served.models
        self.metrics.serve(list(self.loaded))
        _PIXEL_BYTES.clear()
        _PIXEL_BYTES.update({name: m.size[0] * m.size[1] * 3 for name, m in self.loaded.items()})
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
        answer: np.ndarray | Rejection = _client_left()
        with anyio.CancelScope() as waiting:
            # A task of its own, not a task group's: an error of the batch reaches BentoML as it is, not in a group
            watcher = asyncio.ensure_future(_cancel_when_gone(request.receive, waiting))
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
        # learnt from its own batches (bentoml_compat.KeyedDispatchers).
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


def _client_left() -> Rejection:
    return Rejection("client_closed", "the client closed the connection before its answer was ready")


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
def _instance() -> Any:
    try:
        return bentoml.get_current_service()
    except BentoMLException:  # not instantiated (yet): at build time, or before the worker made it
        return None


def _current_instance() -> Any:
    """The worker's service once its models are loaded; None before (at build time, while the worker loads)."""
    instance = _instance()
    return instance if getattr(instance, "ready", False) else None


async def _get_models(request: Request) -> JSONResponse:
    instance = _current_instance()
    if instance is None:  # LoadGate refuses it first in a server; here for a request that reaches the route itself
        refused = not_loaded()
        record_refusal(refused, request.method, request.url.path)
        return JSONResponse(refused.body(), status_code=refused.status, headers=refused.headers)
    return JSONResponse(model_list(instance.served, LIMITS).model_dump(mode="json"))


# The methods of the paths BentoML's API routes serve (/models also has the mounted GET listing). BentoML answers
# any other method, OPTIONS included, with a plain-text 405 naming POST alone.
API_METHODS: dict[str, tuple[str, ...]] = {
    "/classify": ("POST", "OPTIONS"),
    "/infer": ("POST", "OPTIONS"),
    "/models": ("GET", "HEAD", "POST", "OPTIONS"),
}


class MethodGate:
    """ASGI middleware: OPTIONS on an API path answers what the path takes (204, ``Allow``), and another method
    it does not take is refused in the contract's shape (405 ``method_not_allowed``) with the same ``Allow``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        allowed = API_METHODS.get(scope["path"]) if scope["type"] == "http" else None
        if allowed is None or (scope["method"] in allowed and scope["method"] != "OPTIONS"):
            await self.app(scope, receive, send)
            return
        allow = {"Allow": ", ".join(allowed)}
        if scope["method"] == "OPTIONS":
            await Response(status_code=204, headers=allow)(scope, receive, send)
            return
        await send_rejection(scope, send, _not_allowed(scope, allow["Allow"]), allow)


def _not_allowed(scope, allow: str) -> Rejection:
    """The refusal of a method the path does not take; ``allow``: the methods it does, as the Allow header."""
    message = f"{scope['method'][:20]} is not allowed on {scope['path'][:200]}; it takes {allow or 'other methods'}"
    return Rejection("method_not_allowed", message)


class PathGate:
    """ASGI middleware: a path no route takes is refused in the shape of every other refusal (404
    ``no_such_path``, naming the API's paths). BentoML's router answers it with the text "Not Found", which a
    client reading every other refusal's JSON cannot parse; that router is BentoML's, outside the app mounted
    here, so an exception handler of ours never sees the request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or bentoml_compat.route_label(scope) != bentoml_compat.UNMATCHED:
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        bare = path.rstrip("/")
        if bare and bare != path and bentoml_compat.route_label({**scope, "path": bare}) != bentoml_compat.UNMATCHED:
            message = f"no {path[:200]!r} on this service: did you mean {bare[:200]!r}, without the trailing slash?"
        else:
            message = _no_such_path(path)
        await send_rejection(scope, send, Rejection("no_such_path", message))


def _no_such_path(path: str) -> str:
    return (
        f"no {path[:200]!r} on this service: the API is /classify, /infer, /models and /v2/... "
        "(the Open Inference Protocol), described at /docs.json"
    )


class PlainRefusalGate:
    """ASGI middleware: the 404 and 405 that the routers answer in plain text ("Method Not Allowed" for a POST
    to a GET-only route such as /readyz or /v2, "Not Found" for a missing file under /static) become the
    contract's refusal, as PathGate's and MethodGate's are; a 405 keeps the route's ``Allow``. Only a plain-text
    answer is replaced: the routes' own JSON refusals pass as they are."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        replaced = False

        async def guarded(message) -> None:
            nonlocal replaced
            if replaced:  # the plain body, already answered for
                return
            if message["type"] == "http.response.start" and message["status"] in (404, 405):
                headers = Headers(raw=message["headers"])
                if headers.get("content-type", "").startswith("text/plain"):
                    replaced = True
                    await send_rejection(scope, send, *self._refusal(scope, message["status"], headers))
                    return
            await send(message)

        await self.app(scope, receive, guarded)

    @staticmethod
    def _refusal(scope, status: int, headers: Headers) -> tuple[Rejection, dict[str, str]]:
        if status == 404:
            return Rejection("no_such_path", _no_such_path(scope["path"])), {}
        allow = headers.get("allow", "")
        return _not_allowed(scope, allow), ({"Allow": allow} if allow else {})


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
bentoml_compat.answer_shed("infer", _infer_overloaded)
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


bentoml_compat.extend_openapi(Classifier, _document)
