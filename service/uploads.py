"""Reading a /classify request at the edge: size limits, the multipart form or JSON body, the typed fields,
the images.

Nothing here raises for a bad request: every problem becomes a :class:`contract.Rejection` (a reason,
which gives the HTTP status, and a message for the caller), so the API answers all of them in one place
with one JSON shape, and nothing the caller sends can turn into a 5xx.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from collections import Counter
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import ClientDisconnect, Request

from inference.fits import FITS
from inference.preprocess import ImageDecodeError, ImageTooLarge, decode_pixels, in_unit_range

from .confidence import parse_min_confidence
from .contract import BODY_IDLE_S, ReasonName, Rejection, as_sent, is_reason

FIELDS = ("images", "k", "model", "min_confidence", "fit")
# The reason a field's problems are refused with.
FIELD_REASONS: dict[str, ReasonName] = {
    "images": "malformed_request",
    "k": "bad_k",
    "model": "malformed_request",
    "min_confidence": "bad_min_confidence",
    "fit": "bad_fit",
}


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


class _BodyTooLarge(Exception):
    pass


class _TooManyImages(Exception):
    pass


class _Unfinished(Exception):
    pass


def _limited_receive(request: Request, limit: int):
    """The request's receive channel, failing once more than ``limit`` body bytes have arrived, or when none
    arrives for ``BODY_IDLE_S`` (TimeoutError)."""
    receive = request.receive
    seen = 0

    async def limited():
        nonlocal seen
        with anyio.fail_after(BODY_IDLE_S):
            message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message

    return limited


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
    if key in _NUMBERS or text.startswith('"'):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: brackets nested thousands deep
            return text
        if key in _NUMBERS or isinstance(value, str):
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
    encoded = _encoding_refused(request)
    if encoded is not None:
        return encoded
    declared = _declared_length_refused(request, max_body_bytes)
    if declared is not None:
        return declared

    if not _boundary(request.headers.get("content-type", "")):
        return Rejection(
            "malformed_request", f"the Content-Type multipart/form-data names no boundary=... ({MULTIPART_SHAPE})"
        )
    limited = Request(request.scope, _limited_receive(request, max_body_bytes))
    try:
        async with aclosing(limited.stream()) as stream:
            form = await _FormParser(limited, stream, max_images).parse()
    except _BodyTooLarge:
        return _too_large(max_body_bytes)
    except _TooManyImages:
        return Rejection("too_many_images", f"too many images: at most {max_images} per request")
    except ClientDisconnect:
        return _client_closed()
    except TimeoutError:
        return _stalled()
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


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


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
    for key, (types, words) in _JSON_TYPES.items():
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


_JSON_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "k": (int, "a JSON integer"),
    "model": (str, "a model name (a string) or null"),
    "min_confidence": ((int, float), "a JSON number from 0 to 1, or null"),
    "fit": (str, "a fit name (a string) or null"),
}
# The fields that are numbers; the others are names.
_NUMBERS = frozenset(key for key, (types, _) in _JSON_TYPES.items() if types is not str)


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


def decode_base64(text: str) -> bytes:
    """Standard base64 (RFC 4648, padded); line breaks and spaces, as ``base64`` writes them, are ignored.
    ``ValueError`` if it is not base64, saying how to mend the two usual mistakes."""
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: characters outside ASCII
        raise ValueError(f"{exc}{base64_hint(text)}") from None


def base64_hint(text: str) -> str:
    """How to mend what a client most often sends for base64: a browser's data URL (``FileReader`` gives one),
    or the URL-safe alphabet. Empty when neither is recognised."""
    head = text[:200]
    if head.startswith("data:") and ";base64," in head:
        return "; this is a data URL: send only the base64 after 'base64,'"
    if ("-" in text or "_" in text) and not ("+" in text or "/" in text):
        return "; this looks like URL-safe base64 ('-' and '_'): use the standard alphabet ('+' and '/')"
    return ""


def _declared_length_refused(request: Request, max_body_bytes: int) -> Rejection | None:
    """A Content-Length that is no size in bytes, or one over the limit, refused before the body is read."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not (declared.isascii() and declared.isdigit()):
        return Rejection(
            "malformed_request",
            f"invalid Content-Length {declared!r}: send the body's size in bytes as a decimal number, or no "
            "Content-Length",
        )
    if int(declared) > max_body_bytes:
        return _too_large(max_body_bytes, int(declared))
    return None


def without_bom(body: bytes) -> bytes:
    """A JSON body without the UTF-8 byte-order mark some Windows tools write before it, which RFC 8259 (8.1) lets a
    parser skip and ``json.loads`` (/classify) skips; pydantic's parser (/infer, /v2) does not."""
    return body.removeprefix(codecs.BOM_UTF8)


async def read_body(request: Request, max_body_bytes: int) -> bytes | Rejection:
    """The whole body of a non-multipart request, within the size limit."""
    encoded = _encoding_refused(request)
    if encoded is not None:
        return encoded
    declared = _declared_length_refused(request, max_body_bytes)
    if declared is not None:
        return declared
    chunks = []
    limited = Request(request.scope, _limited_receive(request, max_body_bytes))
    try:
        async with aclosing(limited.stream()) as stream:
            async for chunk in stream:
                chunks.append(chunk)
    except _BodyTooLarge:
        return _too_large(max_body_bytes)
    except ClientDisconnect:
        return _client_closed()
    except TimeoutError:
        return _stalled()
    return b"".join(chunks)


# The JSON values a body may hold besides those its images take: the fields around them.
ENVELOPE_VALUES = 1024


# A JSON string: quote, then runs of plain bytes and escapes (an escaped quote does not end it), quote. Unrolled so
# that the regular expression engine does not backtrack over a long string.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)


def _separators(text: bytes) -> int:
    return text.count(b",") + text.count(b"[") + text.count(b"{")


def _fewest_strings(body: bytes) -> int:
    """How many strings a JSON body holds at least: every '\\"' may be an escaped quote, every other quote opens or
    closes one."""
    return (body.count(b'"') - body.count(b'\\"')) // 2


def too_many_values(body: bytes, largest: int, max_images: int, shape: str) -> Rejection | None:
    """A JSON body holding more values than the largest request its route takes (``largest`` values: ``max_images``
    images, each as ``shape`` says) and ``ENVELOPE_VALUES``, refused before it is parsed. Parsed, each value is a
    Python object of 30 to 60 bytes where the JSON spends 2 to 4: a 32 MB body of numbers or empty arrays costs
    seconds and hundreds of MB before its length can be checked.

    Every value but the first in an array or object follows a comma, so a body holds at most one value more than
    its commas and opening brackets. They are counted in the raw bytes, where those inside strings count too (base64
    has none). A body over the bound that way is counted again without the ones inside its strings, so that file
    names full of commas are not refused; unless it holds more than twice the bound in strings (each is a key or a
    value, and an object has as many values as keys), whose matching would cost more than its refusal."""
    limit = largest + ENVELOPE_VALUES
    separators = _separators(body)
    if separators >= limit and _fewest_strings(body) <= 2 * limit:
        separators -= sum(_separators(string.group()) for string in _JSON_STRING.finditer(body))
    if separators < limit:
        return None
    return Rejection(
        "too_many_images",
        f"too many images: at most {max_images} per request, {shape}: at most {limit} JSON values with the rest of "
        f"the request; this body has {separators} ',' '[' and '{{'",
    )


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


def _stalled() -> Rejection:
    return Rejection("body_stalled", f"no byte of the request body arrived for {BODY_IDLE_S:g} seconds")


def _encoding_refused(request: Request) -> Rejection | None:
    """A compressed body (Content-Encoding: gzip, ...) is not decompressed here: refused as HTTP says (415),
    rather than read as bytes that do not parse."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    return Rejection(
        "unsupported_media_type", f"Content-Encoding {encoding[:50]!r} is not read: send the body uncompressed"
    )


def _client_closed() -> Rejection:
    return Rejection("client_closed", "the client closed the connection before its whole request arrived")


def _too_large(limit: int, size: int | None = None) -> Rejection:
    got = f" ({size} bytes)" if size is not None else ""
    return Rejection("body_too_large", f"request body too large{got}: the limit is {limit} bytes")


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


# ---------------------------------------------------------------------------------------------- the typed fields
def refusal_error(reason: ReasonName, message: str) -> PydanticCustomError:
    """A validation error that names its reason, so that the answer needs no guessing from pydantic's words."""
    return PydanticCustomError(reason, "{message}", {"message": message})


def integer_k(value: Any) -> int | None:
    """``k`` as sent: a JSON integer, or text that reads as one; JSON null or an empty form field means not
    given (as for every optional field: a browser form sends an input left blank as one)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise refusal_error("bad_k", f"k must be an integer, got {value[:50]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise refusal_error("bad_k", f"k must be an integer, got {as_sent(value)}"[:200])
    return value


def model_name(value: Any) -> str | None:
    """``model`` as sent: a name; empty means the default, as does JSON null."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise refusal_error("malformed_request", f"'model' must be a model name, got {as_sent(value)}"[:200])
    return value


def threshold(value: Any) -> float | None:
    """``min_confidence`` as sent: a number from 0 to 1 (JSON or text); JSON null or an empty form field means
    none."""
    if value is None or value == "":
        return None
    try:
        return parse_min_confidence(value)
    except ValueError as exc:
        raise refusal_error("bad_min_confidence", f"min_confidence {exc}") from None


def fit_name(value: Any) -> str | None:
    """``fit`` as sent: a name from ``inference.fits.FITS``; empty means the model's own, as does JSON null."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in FITS:
        raise refusal_error("bad_fit", _unknown_fit(value))
    return value


def _unknown_fit(value: Any) -> str:
    return f"fit must be one of {', '.join(FITS)}, got {as_sent(value)}"[:200]


_BOUNDS = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le")}


def rejection_from(error: ValidationError) -> Rejection:
    """The first problem pydantic found with a request's fields, as the refusal the contract names for it."""
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "request"
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    where = where[:200] or "request"
    kind = first["type"]
    if is_reason(kind):
        return Rejection(kind, first["msg"])  # raised by the validators above, in the contract's words
    if kind == "bytes_invalid_encoding":  # /infer's pixels
        hint = base64_hint(first["input"]) if isinstance(first["input"], str) else ""
        return Rejection("bad_encoding", f"{where} is not valid base64 ({first['ctx']['encoding_error']}){hint}")
    if field == "images" and first["type"] == "too_short":
        return Rejection("no_images", "no images: send one or more files in the 'images' field")
    if field == "items" and first["type"] == "too_short":  # /infer's
        return Rejection("no_images", "no items: send one or more in 'items'")
    if first["type"] == "extra_forbidden":
        return Rejection("malformed_request", f"unknown field {where}: this route does not read it")
    if field in ("images", "items") and first["type"] == "too_long":  # items: /infer's images
        limit, count = first["ctx"]["max_length"], first["ctx"].get("actual_length")
        got = f", got {count}" if count is not None else ""
        return Rejection("too_many_images", f"too many images: at most {limit} per request{got}")
    reason = FIELD_REASONS.get(field, "malformed_request")
    if first["type"] in _BOUNDS:
        words, key = _BOUNDS[first["type"]]
        return Rejection(reason, f"{field} must be {words} {first['ctx'][key]}, got {_shown(first['input'])}"[:200])
    return Rejection(reason, f"{where}: {first['msg']}"[:300])


def _shown(value: Any) -> str:
    """A request's value as the client wrote it (JSON's ``true``, not Python's ``True``)."""
    try:
        return json.dumps(value)[:100]
    except (TypeError, ValueError):
        return repr(value)[:100]


def tensor_rejection(values: np.ndarray, what: str) -> Rejection | None:
    """A model input given as floats that no decoded image can be: NaN, infinite or outside [0, 1]. The models
    would answer it with probabilities of NaN, or with confidence about pixels they never saw."""
    if in_unit_range(values):
        return None
    return out_of_range(what)


def out_of_range(what: str) -> Rejection:
    """The refusal of model input values outside [0, 1] (``tensor_rejection``'s)."""
    return Rejection("bad_tensor", f"{what}: values must be in [0, 1] (RGB scaled from 0..255)")


# ---------------------------------------------------------------------------------------------- decoding
def resolve_fit(requested: str | None, model_fit: str) -> str | Rejection:
    """The fit to decode with: the request's (any route's field, already a name or None) or the model's own."""
    if requested is None:
        return model_fit
    if requested not in FITS:
        return Rejection("bad_fit", _unknown_fit(requested))
    return requested


async def decode_uploads(
    uploads: list[Upload],
    size: tuple[int, int],
    max_pixels: int,
    fit: str,
    limiter: anyio.CapacityLimiter | None = None,
) -> list[bytes] | Rejection:
    """Every upload as the model's input pixels, fitted the way ``fit`` (a name from ``inference.fits``; see
    ``resolve_fit``) says, or the first one's problem. One worker-thread call per image: a cancelled request
    (its timeout) stops between images instead of decoding all of them first; ``limiter`` bounds the threads
    all requests decode on together."""
    out = []
    for i, upload in enumerate(uploads):
        pixels = await anyio.to_thread.run_sync(decode_upload, i, upload, size, max_pixels, fit, limiter=limiter)
        if isinstance(pixels, Rejection):
            return pixels
        out.append(pixels)
    return out


def decode_upload(i: int, upload: Upload, size: tuple[int, int], max_pixels: int, fit: str) -> bytes | Rejection:
    """``images[i]`` as the model's input pixels, or its problem."""
    where = f"images[{i}] ({upload.filename!r})" if upload.filename else f"images[{i}]"
    if not upload.data:
        return Rejection("empty_file", f"{where} is an empty file (0 bytes)")
    try:
        return decode_pixels(upload.data, size, max_pixels, fit=fit)
    except ImageTooLarge as exc:
        return Rejection("image_too_large", f"{where}: {exc}")
    except ImageDecodeError as exc:
        return Rejection("not_an_image", f"{where}: {exc}")
