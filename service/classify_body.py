"""/classify's fields from its body: the multipart form it is built for, or the JSON body ``classify_json`` reads.

Starlette's multipart parser is wrapped here: left to itself it refuses too many files as it refuses a malformed
body, drops a part the body ends inside, and calls every parse error "Invalid multipart data.". Nothing here
raises for a bad request: each problem is a :class:`contract.Rejection` that says what went wrong.
"""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect, Request

from .body_limits import (
    BodyTooLarge,
    client_closed,
    headers_refused,
    limited_receive,
    media_type,
    stalled,
    too_large,
)
from .classify_json import read_classify_json
from .contract import Rejection
from .request_fields import FIELD_REASONS, FIELDS, NUMBERS
from .uploads import Upload


async def read_classify_fields(request: Request, max_images: int, max_body_bytes: int) -> dict[str, Any] | Rejection:
    """/classify's fields, as raw values for ``ClassifyInput``, from a multipart form or a JSON body."""
    # A field in the URL (`/classify?k=1&model=x`) would be left unread, the request answered with the defaults
    # as if that were asked; another query parameter (a cache-buster) asks nothing and is let be.
    in_url = sorted({key for key in request.query_params if key in FIELDS})
    if in_url:
        return Rejection(
            "malformed_request",
            f"{', '.join(map(repr, in_url))} in the URL's query string: /classify reads its fields from the body "
            "only; send them as form fields (or keys of the JSON body)",
        )
    if media_type(request) == "application/json":
        return await read_classify_json(request, max_images, max_body_bytes)
    return await read_classify_form(request, max_images, max_body_bytes)


class _TooManyImages(Exception):
    pass


class _Unfinished(Exception):
    pass


class _FormParser(MultiPartParser):
    """Starlette's multipart parser, which stops at the first ``images`` file over the limit with an exception
    of its own: starlette's own limit on files raises the same exception type as a malformed body."""

    def __init__(self, request: Request, stream: Any, max_images: int) -> None:
        super().__init__(
            request.headers, stream, max_files=max_images + 1, max_fields=len(FIELDS) * 2, max_part_size=4096
        )
        self.max_images = max_images
        self.images = 0
        self.in_part = False

    async def parse(self) -> Any:
        form = await super().parse()
        if self.in_part:
            # python-multipart drops a part the body ends inside: the request would read as one without it.
            await form.close()
            raise _Unfinished()
        return form

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self.in_part = True

    def on_part_end(self) -> None:
        self.in_part = False
        super().on_part_end()
        name, value = self.items[-1]
        if name == "images" and isinstance(value, UploadFile):
            self.images += 1
            if self.images > self.max_images:
                raise _TooManyImages()


def _field_value(key: str, text: str) -> Any:
    """A non-file form field. A number (``k``, ``min_confidence``) as JSON, what the OpenAPI document asks for
    (``null``: not given), or failing that the text. A name (``model``, ``fit``) as the text, since a model may
    be named ``null`` or ``1e5``; quoted as a JSON string, the string inside (BentoML's client sends every
    field as JSON)."""
    if key in NUMBERS or text.startswith('"'):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
            return text
        if key in NUMBERS or isinstance(value, str):
            return value
    return text


async def read_classify_form(request: Request, max_images: int, max_body_bytes: int) -> dict[str, Any] | Rejection:
    """The fields given, as raw values for ``ClassifyInput``: ``images`` a list of :class:`Upload`, the others
    decoded from JSON or left as text."""
    given = media_type(request)
    if given != "multipart/form-data":
        return Rejection(
            "unsupported_media_type",
            f"send the images as multipart/form-data (got {given or 'no content type'}): "
            "one 'images' file part per image, optional 'k', 'model', 'min_confidence' and 'fit' fields; "
            "or as application/json with each image base64-encoded",
        )
    refused = headers_refused(request, max_body_bytes)
    if refused is not None:
        return refused

    if not _boundary(request.headers.get("content-type", "")):
        return Rejection(
            "malformed_request", f"the Content-Type multipart/form-data names no boundary=... ({MULTIPART_SHAPE})"
        )
    limited = Request(request.scope, limited_receive(request, max_body_bytes))
    try:
        async with aclosing(limited.stream()) as stream:
            form = await _FormParser(limited, stream, max_images).parse()
    except BodyTooLarge:
        return too_large(max_body_bytes)
    except _TooManyImages:
        return Rejection("too_many_images", f"too many images: at most {max_images} per request")
    except ClientDisconnect:
        return client_closed()
    except TimeoutError:
        return stalled()
    except _Unfinished:
        return Rejection(
            "malformed_request", "the multipart body ends inside a part: its closing boundary (--BOUNDARY--) is missing"
        )
    except Exception as exc:  # starlette's MultiPartException, python-multipart's parse errors
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        # starlette says "Invalid multipart data." of every python-multipart error; the cause says which
        cause = str(exc.__cause__) if exc.__cause__ is not None else ""
        if "header size" in cause.lower():  # a header line over its limit: a file name of several KB
            detail = f"{cause.rstrip('.')} (a part's header line, its file name included, is limited to 4 KB)"
        elif cause:
            detail = f"{cause.rstrip('.')} ({MULTIPART_SHAPE})"
        return Rejection("malformed_request", f"the multipart body could not be parsed: {detail}")
    try:
        return await _check_form(form)
    finally:
        await form.close()


# What a parse error of python-multipart means to a client that did not build its body with an HTTP library.
MULTIPART_SHAPE = (
    "the body must be parts that each start with '--' and the boundary the Content-Type names; "
    "let the HTTP client build it: curl -F images=@cat.jpg, requests' files=, a browser's FormData"
)


def _boundary(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type, unquoted; empty if it names none."""
    for parameter in content_type.split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"')
    return ""


async def _check_form(form) -> dict[str, Any] | Rejection:
    unknown = sorted({key for key in form.keys() if key not in FIELDS})
    if unknown:
        return Rejection(
            "malformed_request", f"unknown form field(s) {', '.join(map(repr, unknown))}; expected {', '.join(FIELDS)}"
        )
    values: dict[str, Any] = {}
    for key in FIELDS[1:]:
        given = form.getlist(key)
        if len(given) > 1:
            return Rejection(FIELD_REASONS[key], f"{key!r} given {len(given)} times: send it once")
        if given:
            value = given[0]
            if isinstance(value, UploadFile):
                return Rejection(FIELD_REASONS[key], f"{key!r} must be a plain form field, not a file")
            values[key] = _field_value(key, value)
    uploads = []
    for i, part in enumerate(form.getlist("images")):
        if not isinstance(part, UploadFile):
            return Rejection(
                "malformed_request",
                f"images[{i}] is a text field: upload each image as a file, a part with a filename "
                "(curl: -F images=@cat.jpg)",
            )
        uploads.append(Upload(part.filename or "", await part.read()))
    values["images"] = uploads
    return values
