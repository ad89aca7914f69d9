"""Reading a /classify request at the edge: size limits, multipart parsing, field checks.

Nothing here raises for a bad request: every problem becomes a :class:`Rejection` (HTTP status, a
reason label for the metrics, a message for the caller), so the API answers all of them in one place
with one JSON shape, and nothing the caller sends can turn into a 5xx.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

FIELDS = ("images", "k", "model", "min_confidence")
# The reason a repeated or file-valued non-image field is refused with.
_FIELD_REASONS = {"k": "bad_k", "model": "malformed_request", "min_confidence": "bad_min_confidence"}


@dataclass(frozen=True)
class Rejection:
    status: int
    reason: str  # one of metrics.REJECTION_REASONS
    message: str

    def body(self) -> dict[str, str]:
        return {"error": self.message, "reason": self.reason}


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


@dataclass(frozen=True)
class ParsedForm:
    uploads: list[Upload]
    fields: dict[str, Any]  # raw values of the fields given ("k", "model", "min_confidence"): checked by the API


class _BodyTooLarge(Exception):
    pass


def _limited_receive(request: Request, limit: int):
    """The request's receive channel, failing once more than ``limit`` body bytes have arrived."""
    receive = request.receive
    seen = 0

    async def limited():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message

    return limited


def _field_value(text: str) -> Any:
    """A non-file form field: JSON (what the OpenAPI document asks for) or, failing that, the plain text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


async def read_classify_form(request: Request, max_images: int, max_body_bytes: int) -> ParsedForm | Rejection:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data":
        return Rejection(415, "unsupported_media_type",
                         f"send the images as multipart/form-data (got {media_type or 'no content type'}): "
                         "one 'images' file part per image, optional 'k', 'model' and 'min_confidence' fields")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_bytes = int(declared)
        except ValueError:
            return Rejection(400, "malformed_request", f"invalid Content-Length {declared!r}")
        if declared_bytes > max_body_bytes:
            return _too_large(max_body_bytes, declared_bytes)

    limited = Request(request.scope, _limited_receive(request, max_body_bytes))
    try:
        form = await limited.form(max_files=max_images + 1, max_fields=len(FIELDS) * 2, max_part_size=4096)
    except _BodyTooLarge:
        return _too_large(max_body_bytes)
    except Exception as exc:  # starlette's HTTPException / MultiPartException, python-multipart's parse errors
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
        if "too many files" in str(detail).lower():
            return Rejection(400, "too_many_images", f"too many images: at most {max_images} per request")
        return Rejection(400, "malformed_request", f"the multipart body could not be parsed: {detail}")
    try:
        return await _check_form(form, max_images)
    finally:
        await form.close()


async def read_body(request: Request, max_body_bytes: int) -> bytes | Rejection:
    """The whole body of a non-multipart request, within the size limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        return _too_large(max_body_bytes, int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            return _too_large(max_body_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int, size: int | None = None) -> Rejection:
    got = f" ({size} bytes)" if size is not None else ""
    return Rejection(413, "body_too_large", f"request body too large{got}: the limit is {limit} bytes")


async def _check_form(form, max_images: int) -> ParsedForm | Rejection:
    unknown = sorted({key for key in form.keys() if key not in FIELDS})
    if unknown:
        return Rejection(400, "malformed_request",
                         f"unknown form field(s) {', '.join(map(repr, unknown))}; expected {', '.join(FIELDS)}")
    values = {}
    for key, reason in _FIELD_REASONS.items():
        given = form.getlist(key)
        if len(given) > 1:
            return Rejection(400, reason, f"{key!r} given {len(given)} times")
        if given:
            value = given[0]
            if isinstance(value, UploadFile):
                return Rejection(400, reason, f"{key!r} must be a plain form field, not a file")
            values[key] = _field_value(value)
    parts = form.getlist("images")
    if not parts:
        return Rejection(400, "no_images", "no images: send one or more files in the 'images' field")
    if len(parts) > max_images:
        return Rejection(400, "too_many_images", f"too many images: {len(parts)} sent, at most {max_images} per request")
    uploads = []
    for i, part in enumerate(parts):
        if not isinstance(part, UploadFile):
            return Rejection(400, "malformed_request",
                             f"images[{i}] is a text field: upload each image as a file (a part with a filename)")
        uploads.append(Upload(part.filename or "", await part.read()))
    return ParsedForm(uploads, values)
