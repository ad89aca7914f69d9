"""/classify's fields from a JSON body, each image's file base64-encoded.

JSON is the body a client without a multipart encoder can send; it is held to the form's rules (each field once,
no unknown field, no more images than the limit), so that both bodies ask the same question in the same terms.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from starlette.requests import Request

from .body_limits import read_body, too_many_values
from .contract import Rejection, as_sent
from .request_fields import FIELD_REASONS, FIELDS, JSON_TYPES
from .uploads import Upload, decode_base64


class _JsonObject(dict):
    """A JSON object as ``json.loads`` makes it, with the key it was given more than once, if any: json.loads
    keeps the last silently, and a form's repeated field is refused, so this is judged where the object is
    read (a repeated ``k`` is a bad k, as in a form; any other, a malformed request)."""

    repeated: tuple[str, int] | None = None


def _noting_repeats(pairs: list[tuple[str, Any]]) -> _JsonObject:
    found = _JsonObject(pairs)
    if len(found) < len(pairs):  # one pass: an object of a million keys must not cost a million squared
        found.repeated = Counter(name for name, _ in pairs).most_common(1)[0]
    return found


def _repeat_refused(what: str, value: Any) -> Rejection | None:
    repeated = getattr(value, "repeated", None)
    if repeated is None:
        return None
    key, times = repeated
    reason = "malformed_request" if what else FIELD_REASONS.get(key, "malformed_request")
    return Rejection(reason, f"{what}{key[:100]!r} given {times} times: send it once")


async def read_classify_json(request: Request, max_images: int, max_body_bytes: int) -> dict[str, Any] | Rejection:
    """``{"images": [{"filename": ..., "data": base64}, ...], "k": ..., "model": ..., "min_confidence": ...,
    "fit": ...}``:
    the same fields as the form, each image's file base64-encoded."""
    body = await read_body(request, max_body_bytes)
    if isinstance(body, Rejection):
        return body
    return classify_json_fields(body, max_images)


def classify_json_fields(body: bytes, max_images: int) -> dict[str, Any] | Rejection:
    """The fields of a /classify JSON body (``read_classify_json``), as raw values for ``ClassifyInput``."""
    largest = _IMAGE_VALUES * max_images + len(FIELDS) + 1  # the object around them, its fields and the list
    crowded = too_many_values(body, largest, max_images, 'each {"filename": ..., "data": ...}')
    if crowded is not None:
        return crowded
    try:
        raw = json.loads(body, object_pairs_hook=_noting_repeats)
    except ValueError as exc:  # also bytes that are not UTF-8
        return Rejection("malformed_request", f"the JSON body could not be parsed: {exc}"[:300])
    except RecursionError:
        return Rejection("malformed_request", "the JSON body could not be parsed: arrays or objects nested too deep")
    if not isinstance(raw, dict):
        return Rejection("malformed_request", "the JSON body must be an object with an 'images' list")
    rejection = _repeat_refused("", raw)
    if rejection is not None:
        return rejection
    unknown = sorted(key for key in raw if key not in FIELDS)
    if unknown:
        return Rejection(
            "malformed_request", f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(FIELDS)}"[:300]
        )
    for key, (types, words) in JSON_TYPES.items():
        value = raw.get(key)
        # JSON has types, so they count: "3" is not a k here, though a form field can only be text.
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            return Rejection(FIELD_REASONS[key], f"{key!r} must be {words}, got {as_sent(value)}"[:200])
        rejection = _lone_surrogate(repr(key), value) if isinstance(value, str) else None
        if rejection is not None:
            return rejection
    images = raw.get("images", [])
    if not isinstance(images, list):
        return Rejection("malformed_request", '\'images\' must be a list of {"filename": ..., "data": base64}')
    if len(images) > max_images:
        return Rejection("too_many_images", f"too many images: at most {max_images} per request")
    uploads = []
    for i, image in enumerate(images):
        upload = _json_image(i, image)
        if isinstance(upload, Rejection):
            return upload
        uploads.append(upload)
    return {**{key: raw[key] for key in FIELDS[1:] if key in raw}, "images": uploads}


# The JSON values of one image of a /classify body: its object, its file name and its data.
_IMAGE_VALUES = 3


def _json_image(i: int, image: Any) -> Upload | Rejection:
    shape = '{"filename": name, "data": base64 of the file}'
    if not isinstance(image, dict):
        return Rejection("malformed_request", f"images[{i}] must be an object {shape}, got {_json_type(image)}")
    unknown = sorted(set(image) - {"filename", "data"})
    if unknown:
        named = ", ".join(repr(name[:50]) for name in unknown[:5])
        return Rejection("malformed_request", f"images[{i}]: unknown field(s) {named}; an image is {shape}")
    if "data" not in image:
        return Rejection("malformed_request", f"images[{i}] has no 'data': an image is {shape}")
    if not isinstance(image["data"], str):
        return Rejection(
            "malformed_request", f"images[{i}]: 'data' must be a base64 string, got {_json_type(image['data'])}"
        )
    rejection = _repeat_refused(f"images[{i}]: ", image)
    if rejection is not None:
        return rejection
    filename = image.get("filename", "")
    if not isinstance(filename, str):
        return Rejection("malformed_request", f"images[{i}]: 'filename' must be a string")
    rejection = _lone_surrogate(f"images[{i}]: 'filename'", filename)
    if rejection is not None:
        return rejection
    try:
        return Upload(filename, decode_base64(image["data"]))
    except ValueError as exc:
        return Rejection("bad_encoding", f"images[{i}] ({filename[:100]!r}): 'data' is not valid base64 ({exc})")


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for a message to a client that wrote JSON."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _lone_surrogate(what: str, text: str) -> Rejection | None:
    """A lone UTF-16 surrogate ("\\udc00") is valid JSON to ``json.loads`` but not Unicode text: echoed in the
    answer, it could not be encoded. Refused here, as the pydantic-parsed routes refuse it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return Rejection("malformed_request", f"{what} holds a lone surrogate (\\u{ord(text[exc.start]):04x})")
    return None
