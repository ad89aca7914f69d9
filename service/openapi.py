"""What the OpenAPI document says beyond what BentoML infers: /classify's refusals, its form, GET /models.

``document_openapi`` edits the document as a plain dict (JSON's shape); service.py hands it to
``bentoml_compat.extend_openapi``, which owns how BentoML is made to serve the result.
"""

from __future__ import annotations

from typing import Any, Mapping

from .contract import REASONS, ClassifyError

# base64 of a whole number of 3-byte groups, in either alphabet: no padding
_BASE64 = "^([A-Za-z0-9+/]*|[A-Za-z0-9_-]*)$"


def _refusal(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClassifyError"}}},
    }


def refusals_by_status() -> dict[int, str]:
    """Each refusal status of /classify with what it means, from the contract's table."""
    whens: dict[int, list[str]] = {}
    for reason in REASONS.values():
        whens.setdefault(reason.status, []).append(reason.when)
    return {status: "; ".join(texts) for status, texts in whens.items()}


def document_openapi(document: dict, loaded: Mapping[str, Any] | None, default_k: int) -> dict:
    """``document`` with /classify's refusals, its form's limits and GET /models added. ``loaded`` (name -> a
    loaded model with ``classes`` and ``size``) is None until the models are loaded, and then bounds k, names
    the models and fixes the length of /infer's pixels."""
    schemas = document["components"]["schemas"]
    schemas["ClassifyError"] = ClassifyError.model_json_schema()
    # BentoML's own 400 answers (pydantic errors on /infer and /models) carry a list in "detail".
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
        # One pixel size for every model, a whole number of 3-byte groups: one exact base64 length, no padding
        # (else the length depends on the model, as the description says).
        if len(sizes) == 1 and next(iter(sizes)) % 3 == 0:
            length = sizes.pop() // 3 * 4
            item["pixels"].update(minLength=length, maxLength=length, pattern=_BASE64)
    classify["responses"].update({status: _refusal(text) for status, text in refusals_by_status().items()})
    models = paths["/models"]
    get = {key: value for key, value in models["post"].items() if key != "requestBody"}
    models["get"] = {**get, "operationId": f"{get['operationId']}_get", "x-bentoml-name": "models_get"}
    return document
