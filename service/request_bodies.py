"""The request bodies of the API routes (/classify, /infer, /models), read and checked at the edge: a body either
validates into its fields or is refused with the contract's reason, never BentoML's generic 400 or a 500. Their
docstrings and fields are what the OpenAPI document tells clients.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

import bentoml
import numpy as np
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
from starlette.requests import Request

from inference.fits import FITS, fit_help
from inference.preprocess import pixels_to_model_input

from .bentoml_compat.apis import declare_multipart
from .body_limits import media_type, read_body, too_many_values, without_bom
from .classify_body import read_classify_fields
from .contract import ReasonName, Rejection
from .request_fields import (
    fit_name,
    integer_k,
    model_name,
    refusal_error,
    rejection_from,
    tensor_rejection,
    threshold,
)
from .startup import DEFAULT_K, SETTINGS
from .uploads import Upload

# The key of the request's state under which BodyGate leaves the input it read, for the API's input to take.
GATED_INPUT = "gated_input"
# name -> bytes of one image's uint8 pixels, for validating /infer input; filled when the models are loaded.
PIXEL_BYTES: dict[str, int] = {}
_ITEM_SIZE = {"uint8": 1, "float32": 4}


# ---------------------------------------------------------------------------------------------- inputs
class InferItem(BaseModel):
    """One decoded image for the batchable stage."""

    # extra="forbid": a field this route does not read (a "fit": the pixels are fitted already) is refused, not
    # silently ignored
    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", protected_namespaces=(), extra="forbid")

    model: str = Field(description="a model name from /models")
    # pydantic's schema says format "base64url", though it reads either alphabet; "byte" would say only the standard
    # one. No format, then: the description says what is read, and the document's pattern (service/openapi.py).
    pixels: Annotated[bytes, WithJsonSchema({"type": "string"})] = Field(
        description="uint8 RGB pixels, height x width x 3 in row-major order (the model's input size); with "
        "dtype float32, the model's input itself: float32 little-endian, 3 x height x width, RGB in [0, 1]; "
        "base64 in JSON, in the standard alphabet ('+' and '/') or the URL-safe one ('-' and '_'), padded or not"
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
        if PIXEL_BYTES:
            if self.model not in PIXEL_BYTES:
                raise refusal_error(
                    "unknown_model", f"unknown model {self.model[:100]!r}; available: {', '.join(PIXEL_BYTES)}"
                )
            expected = PIXEL_BYTES[self.model] * _ITEM_SIZE[self.dtype]
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
    given = getattr(request.state, GATED_INPUT, None) or await cls.read(request)
    if isinstance(given, Rejection):
        raise _validation_error(given.reason, given.message)
    return given


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


declare_multipart(ClassifyInput, ["images"])
