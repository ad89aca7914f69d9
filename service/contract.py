"""The HTTP contract of /classify and /models: the answers' types, and the reasons a request is refused.

The Open Inference Protocol routes (service/oip.py) refuse for the same reasons, with the same statuses,
in that protocol's own error shape.

``REASONS`` is the one table of refusals: for each reason, its HTTP status, what it means, and what a
client sending many images should do about it. The service answers from it (``Rejection``), the
OpenAPI document is written from it (service/openapi.py) and the scorer's client acts on it
(service/score/remote.py). Nothing here imports BentoML or starlette.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Optional, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

# What a client sending many images does about a refusal: "stop" (every request would be refused the
# same way), "fewer" images per request, each image "alone" (one image spoilt the request), or retry
# "later".
Remedy = Literal["stop", "fewer", "alone", "later"]


# A body from which no byte arrives for this long is refused (408): a stalled client, or one trickling its body
# to hold a connection, frees its request slot long before --timeout (60 s) would answer it as the server's 504.
BODY_IDLE_S = 20.0


@dataclass(frozen=True)
class Reason:
    status: int
    when: str  # for people: the OpenAPI document's description of the status
    remedy: Remedy
    counted: bool = True  # the caller's mistake: counted in cifar_rejected_inputs_total{reason}


REASONS: dict[str, Reason] = {
    "unsupported_media_type": Reason(
        415, "neither multipart/form-data nor application/json, or a compressed body (Content-Encoding)", "stop"
    ),
    "body_too_large": Reason(413, "request body over the size limit", "fewer"),
    "malformed_request": Reason(
        400, "a malformed form or JSON body (it does not parse, an unknown field, images sent as text)", "alone"
    ),
    "bad_encoding": Reason(400, "an image's data in a JSON body is not valid base64", "alone"),
    "bad_tensor": Reason(
        400,
        "an inference protocol input or output, or /infer pixels, the model does not take (name, datatype, shape or "
        "data)",
        "stop",
    ),
    "no_images": Reason(400, "no images", "stop"),
    "too_many_images": Reason(400, "too many images", "fewer"),
    "empty_file": Reason(400, "an empty file", "alone"),
    "not_an_image": Reason(400, "not an image, or a truncated one", "alone"),
    "image_too_large": Reason(413, "an image over the pixel or side limit, or a JPEG of too many scans", "alone"),
    "bad_k": Reason(400, "a bad k", "stop"),
    "bad_min_confidence": Reason(400, "a bad min_confidence", "stop"),
    "bad_fit": Reason(400, "an unknown fit", "stop"),
    "unknown_model": Reason(404, "unknown model", "stop"),
    "no_such_path": Reason(404, "a path the service does not serve", "stop", counted=False),
    "method_not_allowed": Reason(
        405, "a method the path does not take (the Allow header names those it does)", "stop", counted=False
    ),
    "cors_refused": Reason(
        400,
        "a browser's CORS preflight from an origin, or for a method or header, the service does not allow",
        "stop",
        counted=False,
    ),
    "unauthorized": Reason(401, "no API key, where the service requires one", "stop"),
    "forbidden": Reason(403, "an API key the service does not know", "stop"),
    "overloaded": Reason(
        503, "overloaded: the request would wait longer than the batching latency limit", "later", counted=False
    ),
    # A worker answers its probes while it loads its models: a request it cannot serve yet is told to come back, as
    # an overloaded one is, not held past --timeout into BentoML's 504 (whose remedy is fewer images).
    "loading": Reason(503, "the models are not loaded yet: a worker starting", "later", counted=False),
    "body_stalled": Reason(
        408, f"no byte of the request body arrived for {BODY_IDLE_S:g} seconds", "alone", counted=False
    ),
    # nginx's status for it: the answer reaches no one, but the access log and the request metrics record it,
    # and not as the server's failure
    "client_closed": Reason(
        499,
        "the client closed the connection before its whole request arrived, or before its answer was ready (its "
        "images still queued are then not run)",
        "alone",
        counted=False,
    ),
}
# The label values of cifar_rejected_inputs_total.
REJECTION_REASONS: tuple[str, ...] = tuple(name for name, reason in REASONS.items() if reason.counted)
# The table's names, in its order (the OpenAPI document lists them so). Spelt out, since a type checker cannot read
# a Literal off the table; tests/test_contract.py checks that they agree.
ReasonName = Literal[
    "unsupported_media_type",
    "body_too_large",
    "malformed_request",
    "bad_encoding",
    "bad_tensor",
    "no_images",
    "too_many_images",
    "empty_file",
    "not_an_image",
    "image_too_large",
    "bad_k",
    "bad_min_confidence",
    "bad_fit",
    "unknown_model",
    "no_such_path",
    "method_not_allowed",
    "cors_refused",
    "unauthorized",
    "forbidden",
    "overloaded",
    "loading",
    "body_stalled",
    "client_closed",
]


class ClassifyError(BaseModel):
    """The body of every refusal of /classify."""

    error: str = Field(description="what was wrong, for a person")
    reason: ReasonName = Field(description="what was wrong, for a program (also the metrics label)")


def is_reason(name: str) -> TypeGuard[ReasonName]:
    """Whether ``name``, a string from elsewhere (pydantic's error type), is a key of ``REASONS``."""
    return name in REASONS


@dataclass(frozen=True)
class Rejection:
    """A refused request: its reason (a key of ``REASONS``, which gives the status) and a message for the caller."""

    reason: ReasonName
    message: str

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown rejection reason {self.reason!r}; add it to contract.REASONS")

    @property
    def status(self) -> int:
        return REASONS[self.reason].status

    def body(self) -> dict[str, str]:
        return ClassifyError(error=self.message, reason=self.reason).model_dump(mode="json")

    @property
    def headers(self) -> dict[str, str]:
        """The answer's headers: when to retry a refusal worth retrying, how to authenticate a missing key."""
        if REASONS[self.reason].remedy == "later":
            return {"Retry-After": "1"}
        if self.status == 401:
            return {"WWW-Authenticate": "Bearer"}
        return {}


def as_sent(value: Any) -> str:
    """A value of a request, for a message to its sender: a string quoted, anything else as JSON writes it (``true``,
    ``{"a": 1}``), the way the client wrote it, not as Python shows it (``True``, ``{'a': 1}``)."""
    if isinstance(value, str):
        return repr(value[:100])
    try:
        return json.dumps(value)[:100]
    except (TypeError, ValueError):
        return repr(value)[:100]


def not_loaded() -> Rejection:
    """The refusal of a request that needs the models while this worker still loads them, on every route alike."""
    return Rejection("loading", "the models are not loaded yet (the service is starting): try again after Retry-After")


class TopK(BaseModel):
    label: str
    index: int = Field(description="class index in the model's output")
    confidence: float = Field(ge=0.0, le=1.0, description="softmax probability")


class Prediction(BaseModel):
    filename: str = Field(description="the uploaded file's name, as sent")
    top_k: list[TopK] = Field(description="the k most likely classes, most likely first")
    confident: Optional[bool] = Field(
        None,
        description="whether the top-1 confidence is at least min_confidence; "
        "present only when the request gave min_confidence",
    )


class ClassifyResponse(BaseModel):
    model: str = Field(description="the model that answered")
    predictions: list[Prediction] = Field(description="one entry per image, in the order sent")

    def to_json(self) -> dict:
        """The answer's JSON: ``confident`` only where a threshold was given."""
        return self.model_dump(mode="json", exclude_none=True)


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    dataset: str
    arch: str
    classes: list[str]
    precision: str
    accuracy: Optional[float] = Field(description="validation top-1 accuracy recorded at export")
    input_size: list[int] = Field(description="[height, width] images are resized to")
    fit: str = Field(description="how an image of another aspect ratio is fitted unless a request names another")
    default: bool = Field(description="whether requests without `model` get this one here")
    # Optional: a service without per-device defaults does not send them, and clients read both.
    default_for: list[str] = Field(
        default_factory=list, description="the kinds of host (cpu, cuda) whose default the manifest makes it"
    )
    provider: Optional[str] = Field(
        None, description="the ONNX Runtime provider every node of this model runs on here (CUDA or CPU)"
    )
    fallback: Optional[str] = Field(
        None, description="why a model meant for CUDA runs on the CPU here (--device auto); absent when it does not"
    )
    # Optional: a client of a service from before it was sent cannot tell, and must not read its absence as "no".
    calibrated: Optional[bool] = Field(
        None,
        description="whether its confidences are calibrated: a temperature fitted at export divides its logits inside "
        "the graph (the card's calibration)",
    )


class FitInfo(BaseModel):
    name: str
    help: str = Field(description="what it does to an image of another aspect ratio")


class Limits(BaseModel):
    """What one request may hold here; past them it is refused (413 or 400, see the reasons)."""

    max_images: int = Field(description="images in one request")
    max_body_bytes: int = Field(description="bytes of one request body")
    max_pixels: int = Field(description="pixels (width x height) of one image")
    # Optional: a service without it does not send it, and clients read both.
    timeout_s: Optional[int] = Field(
        None, description="seconds a request may take here before it is answered 504 (the service's --timeout)"
    )


class ModelList(BaseModel):
    default: str = Field(description="the model requests without `model` get here")
    default_reason: Optional[str] = Field(None, description="why that one: the manifest's rule for this host")
    device: Optional[str] = Field(None, description="where the default runs here: cpu or cuda")
    models: list[ModelInfo]
    # Optional: a service without them does not send them, and clients read both.
    fits: list[FitInfo] = Field(default_factory=list, description="the fits a request may name (`fit`)")
    limits: Optional[Limits] = Field(None, description="what one request may hold here")
