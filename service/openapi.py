"""What the OpenAPI document says beyond what BentoML infers: /classify's refusals, its form and JSON body,
GET /models, the Open Inference Protocol's routes, the page, and the API keys when they are asked for.

``document_openapi`` edits the document as a plain dict (JSON's shape); service.py hands it to
``bentoml_compat.apis.extend_openapi``, which owns how BentoML is made to serve the result.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from .access import requires_key
from .contract import REASONS, ClassifyError
from .oip import (
    VERSION,
    InferRequest,
    InferResponse,
    ModelMetadata,
    OipError,
    ServerLive,
    ServerMetadata,
    ServerReady,
    package_version,
)
from .request_fields import FIELDS

# BentoML's own error answers: {"error": message}
_BENTOML_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}
# BentoML's answer to a request not answered within --timeout (every route that classifies)
_TIMED_OUT = (
    "not answered within the server's --timeout seconds: fewer or smaller images per request, or a longer --timeout"
)
# base64 of a whole number of 3-byte groups, in either alphabet: no padding
_BASE64 = "^([A-Za-z0-9+/]*|[A-Za-z0-9_-]*)$"


def _refusal(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClassifyError"}}},
    }


# The statuses of the reasons a client retries later: their answers carry Retry-After (contract.Rejection.headers).
_RETRIED = {reason.status for reason in REASONS.values() if reason.remedy == "later"}
_RETRY_AFTER = {"Retry-After": {"description": "seconds after which to ask again", "schema": {"type": "integer"}}}


def _retry_after(responses: dict) -> None:
    """The Retry-After header on each of ``responses`` (status -> response) that a retried reason answers."""
    for status, response in responses.items():
        if str(status).isdigit() and int(status) in _RETRIED:
            response["headers"] = _RETRY_AFTER


def refusals_by_status(skip: tuple[str, ...] = ()) -> dict[int, str]:
    """Each refusal status of /classify with what it means, from the contract's table, less the reasons
    ``skip`` names (those a route never gives)."""
    whens: dict[int, list[str]] = {}
    for name, reason in REASONS.items():
        if name not in skip:
            whens.setdefault(reason.status, []).append(reason.when)
    return {status: "; ".join(texts) for status, texts in whens.items()}


def document_openapi(document: dict, loaded: Mapping[str, Any] | None, default_k: int, api_keys: bool = False) -> dict:
    """``document`` with /classify's refusals, its form's limits and GET /models added. ``loaded`` (name -> a
    loaded model with ``classes`` and ``size``) is None until the models are loaded, and then bounds k, names
    the models and fixes the length of /infer's pixels. ``api_keys``: the inference routes ask for a key."""
    info = document.setdefault("info", {})
    info["version"] = package_version()  # BentoML writes the Bento's, "None" outside one
    # BentoML's own description is its badges, images from elsewhere that every viewer of /docs would fetch
    info["description"] = (
        "Image classification with the models of the service's manifest (GET /models). POST /classify takes "
        "image files (multipart/form-data, or JSON with each file base64-encoded) and answers each image's top-k "
        "classes with confidences; /v2/... is the Open Inference Protocol that Triton and KServe clients speak. "
        "Every refusal of a request is a 4xx, or a 503 to retry after its Retry-After (overloaded, or the models "
        'still loading), whose JSON says what was wrong: {"error", "reason"}.'
    )
    schemas = document["components"]["schemas"]
    schemas["ClassifyError"] = ClassifyError.model_json_schema()
    # BentoML's own 400 answers (pydantic errors on /models) carry a list in "detail".
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        if name in schemas:
            schemas[name]["properties"]["detail"] = {
                "title": "Error Detail",
                "description": "a message, or a list of validation errors",
            }
    paths = document["paths"]
    for path in ("/classify", "/infer"):  # BentoML leaves the body optional; neither API means anything without one
        paths[path]["post"]["requestBody"]["required"] = True
    classify = paths["/classify"]["post"]
    media = classify["requestBody"]["content"]["multipart/form-data"]
    form = media["schema"]
    form["additionalProperties"] = False  # other fields are refused (400), not ignored
    # Only the form's own fields are parts (ClassifyInput's hidden ``rejection`` is not).
    media["encoding"] = {name: e for name, e in media.get("encoding", {}).items() if name in form["properties"]}
    properties = form["properties"]
    for name in ("model", "min_confidence", "fit"):  # null means "not given", as for an absent field
        properties[name]["nullable"] = True
    properties["fit"]["enum"] = [*properties["fit"]["enum"], None]
    if loaded:
        most = max(len(m.classes) for m in loaded.values())
        properties["k"].update(maximum=most, default=min(default_k, most))
        names = list(loaded)
        properties["model"]["enum"] = [*names, None]
        item = schemas["InferItem"]["properties"]
        item["model"]["enum"] = names
        sizes = {m.size[0] * m.size[1] * 3 for m in loaded.values()}
        # One pixel size for every model, a whole number of 3-byte groups: base64 lengths without padding for
        # uint8 and for float32 pixels (else the length depends on the model, as the description says).
        if len(sizes) == 1 and next(iter(sizes)) % 3 == 0:
            length = sizes.pop() // 3 * 4
            item["pixels"].update(minLength=length, maxLength=4 * length, pattern=_BASE64)
    # The JSON body takes the form's fields, the images base64-encoded.
    classify["requestBody"]["content"]["application/json"] = {"schema": _classify_json(properties)}
    for path in ("/classify", "/infer"):  # both refuse with the contract's table (BodyGate for /infer)
        paths[path]["post"]["responses"].update(
            {status: _refusal(text) for status, text in refusals_by_status().items()}
        )
        # BentoML's own answer, {"error": ...} without a reason: not the caller's mistake, nor one of ours
        paths[path]["post"]["responses"]["504"] = {
            "description": _TIMED_OUT,
            "content": {"application/json": {"schema": _BENTOML_ERROR}},
        }
    models = paths["/models"]
    get = {key: value for key, value in models["post"].items() if key != "requestBody"}
    # GET takes no body, so it has nothing to refuse as malformed (BentoML lists a 400 for every API).
    get["responses"] = {status: r for status, r in get["responses"].items() if str(status) != "400"}
    # LoadGate's, on both methods: a worker still loading its models past --timeout's margin
    get["responses"]["503"] = _refusal(REASONS["loading"].when)
    models["get"] = {**get, "operationId": f"{get['operationId']}_get", "x-bentoml-name": "models_get"}
    # BodyGate's for POST /models (415 also for a compressed body, as on every route)
    body_refusals = [REASONS[name] for name in ("malformed_request", "body_too_large", "unsupported_media_type")]
    models["post"]["responses"] = {
        **models["post"]["responses"],
        **{reason.status: _refusal(reason.when) for reason in body_refusals},
        "503": _refusal(REASONS["loading"].when),
    }
    _document_oip(document, list(loaded) if loaded else None)
    _document_page(paths)
    for operations in paths.values():
        for operation in operations.values():
            if isinstance(operation, dict):
                _retry_after(operation.get("responses", {}))
    _document_readiness(paths)  # after the Retry-After headers: BentoML's 503 sends none
    if api_keys:
        _document_keys(document)
    return document


def _classify_json(form: dict[str, Any]) -> dict[str, Any]:
    """/classify's JSON body: the form's fields, ``images`` as objects with the file base64-encoded."""
    images = form["images"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["images"],
        "properties": {
            "images": {
                "type": "array",
                "minItems": 1,
                "maxItems": images["maxItems"],
                "description": "one object per image: the file's name (echoed in the answer) and its bytes",
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["data"],
                    "properties": {
                        "filename": {"type": "string", "default": ""},
                        # base64's alphabet and padding; line breaks and spaces (as `base64` writes) are ignored
                        "data": {"type": "string", "format": "byte", "pattern": r"^[A-Za-z0-9+/=\s]*$"},
                    },
                },
            },
            **{name: form[name] for name in FIELDS if name != "images"},
        },
    }


# ---------------------------------------------------------------------------------------------- the protocol
_OIP_TAG = "Open Inference Protocol"


def _openapi30(schema: Any) -> Any:
    """pydantic's JSON Schema in OpenAPI 3.0's dialect: ``anyOf [X, null]`` is ``X`` with ``nullable``, and
    references point into components."""
    if isinstance(schema, list):
        return [_openapi30(value) for value in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [option for option in options if option != {"type": "null"}]
        others = {key: value for key, value in schema.items() if key != "anyOf"}
        inner = rest[0] if len(rest) == 1 else {"anyOf": rest}
        if "$ref" in inner:  # 3.0 ignores siblings of $ref
            inner = {"allOf": [inner]}
        return _openapi30({**others, **inner, "nullable": True})
    out = {key: _openapi30(value) for key, value in schema.items()}
    if isinstance(out.get("$ref"), str):
        out["$ref"] = out["$ref"].replace("#/$defs/", "#/components/schemas/")
    return out


def _component(schemas: dict, model: Any) -> dict[str, str]:
    schema = _openapi30(model.model_json_schema(ref_template="#/components/schemas/{model}"))
    for name, definition in schema.pop("$defs", {}).items():
        schemas[name] = definition
    schemas[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(description: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def _document_oip(document: dict, names: list[str] | None) -> None:
    schemas = document["components"]["schemas"]
    error = _component(schemas, OipError)
    refs = {
        model: _component(schemas, model)
        for model in (InferRequest, InferResponse, ModelMetadata, ServerMetadata, ServerLive, ServerReady)
    }
    name: dict[str, Any] = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    if names:
        name["schema"]["enum"] = names
    # the protocol's body is read as JSON whatever its Content-Type, as its clients send it: 415 only when compressed
    refusals = {
        str(status): _json(text, error) for status, text in refusals_by_status(("unsupported_media_type",)).items()
    }
    refusals["415"] = _json("a compressed body (Content-Encoding): send it uncompressed", error)
    unknown = {"404": _json("unknown model", error)}
    loading = {"503": _json(REASONS["loading"].when, error)}
    # BentoML's --timeout covers the mounted routes too, answered {"error"}: the protocol's own shape
    timed_out = {"504": _json(_TIMED_OUT, error)}

    def get(operation: str, summary: str, responses: dict, parameters: list | None = None) -> dict:
        return {
            "get": {
                "tags": [_OIP_TAG],
                "operationId": operation,
                "summary": summary,
                **({"parameters": parameters} if parameters else {}),
                "responses": responses,
            }
        }

    paths = document["paths"]
    paths["/v2"] = get("oip_server_metadata", "Server metadata", {"200": _json("the server", refs[ServerMetadata])})
    paths["/v2/health/live"] = get("oip_server_live", "Server live", {"200": _json("live", refs[ServerLive])})
    paths["/v2/health/ready"] = get(
        "oip_server_ready",
        "Server ready",
        {
            "200": _json("ready", refs[ServerReady]),
            "400": _json("not ready: the models are loading", refs[ServerReady]),
        },
    )
    paths["/v2/models/{name}"] = get(
        "oip_model_metadata",
        "Model metadata: its inputs (send one of them) and outputs",
        {"200": _json("the model", refs[ModelMetadata]), **unknown, **loading},
        [name],
    )
    paths["/v2/models/{name}/ready"] = get(
        "oip_model_ready",
        "Model ready",
        {"200": {"description": "ready"}, "400": {"description": "not ready"}, **unknown},
        [name],
    )
    paths["/v2/models/{name}/infer"] = {
        "post": {
            "tags": [_OIP_TAG],
            "operationId": "oip_model_infer",
            "summary": "Inference: FP32 pixels or BYTES image files in, probabilities or top-k classes out",
            "description": "Input `images` (BYTES [N], each element a base64 image file) or the model's FP32 "
            "input [N, 3, H, W] (RGB in [0, 1]); output `probabilities` (FP32 [N, classes]), or with the "
            "output parameter `classification: k` the top k as BYTES `score:index:label`. Batched with "
            "/classify's requests.",
            "parameters": [name],
            "requestBody": {"required": True, "content": {"application/json": {"schema": refs[InferRequest]}}},
            # its 503: overloaded, or still loading (both in ``refusals``)
            "responses": {"200": _json("the outputs", refs[InferResponse]), **refusals, **timed_out},
        }
    }
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "enum": [VERSION]}}
    for action in ("", "/ready", "/infer"):
        pinned = copy.deepcopy(paths[f"/v2/models/{{name}}{action}"])
        for operation in pinned.values():
            operation["operationId"] += "_version"
            operation["summary"] += f" (each model has one version, {VERSION!r})"
            operation["parameters"].append(version)
            operation["responses"].setdefault("404", unknown["404"])
        paths[f"/v2/models/{{name}}/versions/{{version}}{action}"] = pinned


def _document_page(paths: dict) -> None:
    html = {"text/html": {"schema": {"type": "string"}}}
    paths["/"] = {
        "get": {
            "operationId": "page",
            "summary": "A page to try the models: drop images, see each one's top classes",
            "responses": {"200": {"description": "the page", "content": html}},
        }
    }
    paths["/docs"] = {
        "get": {
            "operationId": "api_ui",
            "summary": "This document in BentoML's API UI",
            "responses": {
                "200": {"description": "the UI", "content": html},
                "404": _refusal("the UI is not available"),
            },
        }
    }


def _document_readiness(paths: dict) -> None:
    """BentoML documents /readyz as 200 only, but it answers 503 (a short text) until this worker's models are
    loaded: a client or probe generated from the document would meet an answer it does not list."""
    if "/readyz" in paths:
        paths["/readyz"]["get"]["responses"]["503"] = {
            "description": "not ready: this worker's models are still loading",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }


def _document_keys(document: dict) -> None:
    """The inference routes ask for ``Authorization: Bearer KEY``: said in words and statuses, as BentoML's
    document model has no securitySchemes."""
    for path, operations in document["paths"].items():
        if not requires_key(path.replace("{name}", "m")):
            continue
        for operation in operations.values():
            operation["description"] = (
                operation.get("description", "") + "\n\nRequires `Authorization: Bearer KEY` (API keys are configured)."
            ).strip()
            for status in (401, 403):
                operation["responses"].setdefault(
                    str(status), _refusal("; ".join(r.when for r in REASONS.values() if r.status == status))
                )
