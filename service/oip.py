"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) on the wire: its JSON types, and the
translation between them and what the service classifies.

Each model takes one of two inputs and answers one output:

- ``input`` (the manifest's input name): ``FP32 [N, 3, H, W]``, the model's own input (RGB in [0, 1]);
- ``images``: ``BYTES [N]``, encoded image files (JPEG, PNG, ...), each element base64 in JSON, decoded and
  resized by the same code as /classify's uploads;
- ``probabilities``: ``FP32 [N, classes]``; or, when the request asks for it with Triton's classification
  extension (output parameter ``"classification": k``), ``BYTES [N, k]`` strings ``"score:index:label"``,
  most likely first.

A request may name its model in ``model_name`` as the kserve SDK does; it must be the one the path names.

Every problem is a :class:`contract.Rejection`, answered ``{"error": message}`` with the reason's status.
Nothing here imports BentoML or starlette; service/oip_http.py serves it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Any, Optional, Protocol, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from .body_limits import too_many_values, without_bom
from .contract import Rejection, as_sent
from .request_fields import out_of_range, tensor_rejection
from .uploads import Upload, decode_base64, resolve_fit

IMAGES_INPUT = "images"
OUTPUT = "probabilities"
# Triton's name for an ONNX Runtime model, which is what every model here is.
PLATFORM = "onnxruntime_onnx"
EXTENSIONS = ["classification"]
# The manifest holds one file per model name, so each model has one version; clients that pin one (the
# protocol's /versions/<v>/ paths, tritonclient's model_version) name this.
VERSION = "1"
BINARY_REFUSAL = (
    "the binary tensor data extension is not supported: send the data as JSON "
    "(tritonclient: set_data_from_numpy(..., binary_data=False))"
)

# The most of a body read for the JSON a binary-extension request begins with, which describes its tensors (names,
# shapes, sizes): their data follows it.
BINARY_HEAD_BYTES = 64 * 1024

# Strict: a string is not an integer here, and a field the protocol does not define is a mistake, not noise.
_STRICT = ConfigDict(strict=True, extra="forbid")


# ---------------------------------------------------------------------------------------------- wire types
class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="FP32, BYTES, ...")
    shape: list[int] = Field(description="-1: any size along that axis (the batch)")


class ServerLive(BaseModel):
    """The body of /v2/health/live: the protocol's answer is its status, but the kserve SDK reads this."""

    live: bool


class ServerReady(BaseModel):
    """The body of /v2/health/ready (200 or 400), which the kserve SDK reads as ServerLive's."""

    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="protocol extensions this server supports")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str] = Field(description="each model has one")
    platform: str
    inputs: list[MetadataTensor] = Field(description="send exactly one of these")
    outputs: list[MetadataTensor]


class OipError(BaseModel):
    """The body of every refusal on /v2."""

    error: str = Field(description="what was wrong")


class RequestInput(BaseModel):
    model_config = _STRICT

    name: str = Field(description=f"the model's FP32 input name (see its metadata) or {IMAGES_INPUT!r}")
    # The documented minimum is checked by hand (_shape_rejection): a client that copies the metadata's -1 is told
    # what -1 means there, not that its request is no inference request.
    shape: list[Annotated[int, WithJsonSchema({"type": "integer", "minimum": 0})]]
    datatype: str = Field(description=f"FP32 for the model's input, BYTES for {IMAGES_INPUT!r}")
    parameters: Optional[dict[str, Any]] = None
    data: list[Any] = Field(
        description="the elements in row-major order, flat or nested; BYTES elements are base64 strings of "
        "encoded image files"
    )


class OutputParameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # others (binary_data, ...) are ignored: JSON answers

    # The range is checked with the model's class count (_outputs), so that 0 and 11 are refused alike.
    classification: Optional[Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1})]] = Field(
        None, description='Triton\'s classification extension: the top k as BYTES "score:index:label"'
    )


class RequestOutput(BaseModel):
    model_config = _STRICT

    name: str = Field(description=f"{OUTPUT!r}")
    parameters: Optional[OutputParameters] = None


class InferRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", protected_namespaces=())

    id: Optional[str] = Field(None, description="echoed in the answer")
    # Not in the protocol's request, but the kserve SDK's REST client sends it in every one.
    model_name: Optional[str] = Field(None, description="if given, the model the path names")
    parameters: Optional[dict[str, Any]] = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=1, description="one input: FP32 pixels or images")
    # Empty, as absent, asks for every output (the protocol's "not specified"; Triton answers both so).
    outputs: Optional[list[RequestOutput]] = Field(
        None, max_length=1, description=f"default (absent or empty): {OUTPUT!r} as probabilities"
    )


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Optional[dict[str, Any]] = None
    data: Union[list[float], list[str]] = Field(description="row-major, flat")


class InferResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: Optional[str] = None
    id: Optional[str] = None
    outputs: list[ResponseOutput]


# ---------------------------------------------------------------------------------------------- translation
class ModelView(Protocol):
    """What the translation needs of a loaded model (loading.LoadedModel)."""

    classes: list[str]
    size: tuple[int, int]

    @property
    def entry(self) -> Any: ...


def package_version() -> str:
    """The installed project's version, which the protocol's server metadata and the OpenAPI document give."""
    try:
        return metadata.version("cifar-classifier")
    except metadata.PackageNotFoundError:  # a Bento holds the source, not the installed package
        return "unknown"


def server_metadata(name: str) -> ServerMetadata:
    return ServerMetadata(name=name, version=package_version(), extensions=EXTENSIONS)


def model_metadata(model: ModelView) -> ModelMetadata:
    height, width = model.size
    return ModelMetadata(
        name=model.entry.name,
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[
            MetadataTensor(name=model.entry.input.name, datatype="FP32", shape=[-1, 3, height, width]),
            MetadataTensor(name=IMAGES_INPUT, datatype="BYTES", shape=[-1]),
        ],
        outputs=[MetadataTensor(name=OUTPUT, datatype="FP32", shape=[-1, len(model.classes)])],
    )


@dataclass(frozen=True)
class InferPlan:
    """A checked request: its ``inputs``, either images (encoded files, fitted as ``fit``) or a tensor (float32
    [N, 3, H, W]), and the outputs asked for, each ``(name, k)`` with k None for the probabilities."""

    id: Optional[str]
    inputs: Union[list[Upload], np.ndarray]
    outputs: list[tuple[str, Optional[int]]]
    fit: str


def read_infer_request(body: bytes, model: ModelView, max_images: int) -> InferPlan | Rejection:
    crowded = _too_many_values(body, model, max_images)
    if crowded is not None:
        # A binary body's raw bytes hold ',' '[' and '{' as JSON does: being binary is what is wrong with it
        return Rejection("bad_tensor", BINARY_REFUSAL) if _declares_binary_data(body) else crowded
    try:
        request = InferRequest.model_validate_json(without_bom(body))
    except ValidationError as exc:
        if _declares_binary_data(body):
            return Rejection("bad_tensor", BINARY_REFUSAL)
        return Rejection("malformed_request", f"not an inference request: {_first_problem(exc)}")
    if request.model_name is not None and request.model_name != model.entry.name:
        return Rejection(
            "malformed_request",
            f"the body's model_name {request.model_name[:100]!r} is not the model the path names, {model.entry.name!r}",
        )
    (given,) = request.inputs
    input_name = model.entry.input.name
    takes = {input_name: "FP32", IMAGES_INPUT: "BYTES"}
    if given.name not in takes:
        return Rejection(
            "bad_tensor", f"unknown input {given.name[:100]!r}: model {model.entry.name!r} takes {_inputs(model)}"
        )
    if given.datatype != takes[given.name]:
        return Rejection(
            "bad_tensor",
            f"input {given.name!r} must be {takes[given.name]}, got {given.datatype[:20]!r}: {_inputs(model)}",
        )
    if given.parameters and "binary_data_size" in given.parameters:
        return Rejection("bad_tensor", BINARY_REFUSAL)
    outputs = _outputs(request.outputs, model)
    if isinstance(outputs, Rejection):
        return outputs
    misshapen = _shape_rejection(given, model)
    if misshapen is not None:
        return misshapen
    count = given.shape[0]
    if count == 0:
        return Rejection("no_images", f"no images: input {given.name!r} has shape {given.shape}")
    if count > max_images:
        return Rejection("too_many_images", f"too many images: at most {max_images} per request, got {count}")
    # The request's parameter "fit" (the same names as /classify's field) picks how BYTES images are fitted.
    requested = (request.parameters or {}).get("fit")
    if requested is not None and not isinstance(requested, str):
        return Rejection("bad_fit", f"parameter 'fit' must be a string, got {as_sent(requested)}"[:200])
    if requested is not None and given.name != IMAGES_INPUT:  # answered without it, the client would think it used
        return Rejection(
            "bad_fit",
            f"parameter 'fit' fits BYTES images (input {IMAGES_INPUT!r}); input {given.name!r} is the model's "
            "pixels, fitted already: drop 'fit'",
        )
    fit = resolve_fit(requested, model.entry.input.fit)
    if isinstance(fit, Rejection):
        return fit
    if given.name == IMAGES_INPUT:
        images = _images(given)
        return images if isinstance(images, Rejection) else InferPlan(request.id, images, outputs, fit)
    tensor = _tensor(given, model)
    return tensor if isinstance(tensor, Rejection) else InferPlan(request.id, tensor, outputs, fit)


def _declares_binary_data(body: bytes) -> bool:
    """Whether the JSON the body begins with gives an input a ``binary_data_size``: the binary extension's request
    without the Inference-Header-Content-Length header that says where its JSON ends (a proxy dropped it, or a
    client built by hand never sent it), which the parser would otherwise call trailing characters or missing data.
    Only the body's first ``BINARY_HEAD_BYTES`` are read: a body over the bound on its values is not parsed."""
    head_bytes = without_bom(body)[:BINARY_HEAD_BYTES]
    if b"binary_data_size" not in head_bytes:
        return False
    try:
        head, _ = json.JSONDecoder().raw_decode(head_bytes.decode("utf-8", "replace").lstrip())
    except (ValueError, RecursionError):  # not even the JSON part parses: the parser's own error says why
        return False
    inputs = head.get("inputs") if isinstance(head, dict) else None
    return isinstance(inputs, list) and any(
        isinstance(tensor, dict)
        and isinstance(tensor.get("parameters"), dict)
        and "binary_data_size" in tensor["parameters"]
        for tensor in inputs
    )


def _too_many_values(body: bytes, model: ModelView, max_images: int) -> Rejection | None:
    """A body holding more JSON values than the largest request the model takes, refused before it is parsed."""
    shape = _tensor_shape(model, max_images)
    # An FP32 input nested along every axis holds its numbers and the arrays around them.
    return too_many_values(body, int(np.cumprod(shape).sum()), max_images, f"as FP32 {shape}")


def _tensor_shape(model: ModelView, count: int) -> list[int]:
    height, width = model.size
    return [count, 3, height, width]


def _inputs(model: ModelView) -> str:
    height, width = model.size
    return (
        f"{model.entry.input.name!r} (FP32 [N, 3, {height}, {width}], RGB in [0, 1]) or {IMAGES_INPUT!r} "
        "(BYTES [N], encoded image files, base64 in JSON)"
    )


def _outputs(asked: Optional[list[RequestOutput]], model: ModelView) -> list[tuple[str, Optional[int]]] | Rejection:
    if not asked:
        return [(OUTPUT, None)]
    out = []
    classes = len(model.classes)
    for output in asked:
        if output.name != OUTPUT:
            return Rejection("bad_tensor", f"unknown output {output.name[:100]!r}: the model's output is {OUTPUT!r}")
        k = output.parameters.classification if output.parameters else None
        if k is not None and not 1 <= k <= classes:
            return Rejection("bad_k", f"classification must be between 1 and {classes} (the model's classes), got {k}")
        out.append((output.name, k))
    return out


def _shape_rejection(given: RequestInput, model: ModelView) -> Rejection | None:
    """A shape that is not the input's for any N. Checked before N (its first axis) is, so that one image's own
    shape, sent without the batch axis ([3072], [224, 224, 3]), is not refused as that many images."""
    shown = str(given.shape)[:100]
    if any(size < 0 for size in given.shape):
        return Rejection(
            "bad_tensor",
            f"input {given.name!r} has shape {shown}: give each axis's size, the number of images first (a -1 in "
            "the model's metadata means any size, not a size to send)",
        )
    if given.name == IMAGES_INPUT:
        if len(given.shape) == 1:
            return None
        return Rejection("bad_tensor", f"input {IMAGES_INPUT!r} must have shape [N], got {shown}")
    height, width = model.size
    if len(given.shape) == 4 and given.shape[1:] == [3, height, width]:
        return None
    return Rejection("bad_tensor", f"input {given.name!r} must have shape [N, 3, {height}, {width}], got {shown}")


def _images(given: RequestInput) -> list[Upload] | Rejection:
    if len(given.data) != given.shape[0]:
        return Rejection(
            "bad_tensor", f"input {IMAGES_INPUT!r} has shape {given.shape} but {len(given.data)} data elements"
        )
    uploads = []
    for i, element in enumerate(given.data):
        if not isinstance(element, str):
            return Rejection("bad_tensor", f"{IMAGES_INPUT}[{i}] must be a base64 string of an image file")
        try:
            uploads.append(Upload("", decode_base64(element)))  # no file name: images[i] says which
        except ValueError as exc:
            return Rejection("bad_encoding", f"{IMAGES_INPUT}[{i}] is not valid base64 ({exc})")
    return uploads


def _tensor(given: RequestInput, model: ModelView) -> np.ndarray | Rejection:
    expected = _tensor_shape(model, given.shape[0])
    try:
        values = np.asarray(given.data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting
        return Rejection("bad_tensor", f"input {given.name!r}: data is not a regular array of numbers")
    if values.dtype.kind == "O" and all(type(v) in (int, float) for v in values.ravel()):  # an int past 64 bits
        return out_of_range(f"input {given.name!r}")
    if values.dtype.kind not in "fiu":
        return Rejection("bad_tensor", f"input {given.name!r}: FP32 data must be numbers")
    if values.size != int(np.prod(expected)):
        return Rejection("bad_tensor", f"input {given.name!r} has shape {given.shape} but {values.size} data elements")
    tensor = values.astype(np.float32).reshape(expected)
    return tensor_rejection(tensor, f"input {given.name!r}") or tensor


def infer_response(model: ModelView, plan: InferPlan, probabilities: np.ndarray) -> InferResponse:
    """The answer for ``plan`` given the probabilities [N, classes] of its images."""
    from inference.runtime import top_k  # onnxruntime: present wherever a model is loaded

    count, classes = probabilities.shape
    outputs = []
    for name, k in plan.outputs:
        if k is None:
            outputs.append(
                ResponseOutput(
                    name=name,
                    shape=[count, classes],
                    datatype="FP32",
                    data=probabilities.astype(np.float32).ravel().tolist(),
                )
            )
            continue
        index, score = top_k(probabilities, k)
        outputs.append(
            ResponseOutput(
                name=name,
                shape=[count, k],
                datatype="BYTES",
                data=_classification(index.ravel().tolist(), score.ravel().tolist(), model.classes),
            )
        )
    return InferResponse(model_name=model.entry.name, model_version=VERSION, id=plan.id, outputs=outputs)


def _classification(index: Sequence[int], score: Sequence[float], labels: Sequence[str]) -> list[str]:
    # Triton writes the score with C++'s std::to_string, six decimals.
    return [f"{p:f}:{c}:{labels[c]}" for c, p in zip(index, score)]


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"[:300]
