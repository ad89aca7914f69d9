"""A request's body read within its limits: its size, its encoding, a byte at least every ``BODY_IDLE_S``, and
for JSON the number of values it holds (or, over that, how deep it nests).

Every route reads its body through here, so that nothing a client sends (a body too large, one trickled to hold a
connection, one that hangs up) costs more than a refusal: each problem is a :class:`contract.Rejection`.
"""

from __future__ import annotations

import codecs
import re
from contextlib import aclosing
from typing import Literal

import anyio
import numpy as np
from starlette.requests import ClientDisconnect, Request

from .contract import BODY_IDLE_S, Rejection


class BodyTooLarge(Exception):
    pass


def limited_receive(request: Request, limit: int):
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
                raise BodyTooLarge()
        return message

    return limited


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def headers_refused(request: Request, max_body_bytes: int) -> Rejection | None:
    """What the headers alone refuse, before a byte of the body is read: a compressed body, or a Content-Length
    that is no size or over the limit. Every reader of a body asks this first."""
    return _encoding_refused(request) or _declared_length_refused(request, max_body_bytes)


def _encoding_refused(request: Request) -> Rejection | None:
    """A compressed body (Content-Encoding: gzip, ...) is not decompressed here: refused as HTTP says (415),
    rather than read as bytes that do not parse."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return None
    return Rejection(
        "unsupported_media_type", f"Content-Encoding {encoding[:50]!r} is not read: send the body uncompressed"
    )


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
        return too_large(max_body_bytes, int(declared))
    return None


def too_large(limit: int, size: int | None = None) -> Rejection:
    got = f" ({size} bytes)" if size is not None else ""
    return Rejection("body_too_large", f"request body too large{got}: the limit is {limit} bytes")


def client_closed() -> Rejection:
    return Rejection("client_closed", "the client closed the connection before its whole request arrived")


def stalled() -> Rejection:
    return Rejection("body_stalled", f"no byte of the request body arrived for {BODY_IDLE_S:g} seconds")


async def read_body(request: Request, max_body_bytes: int) -> bytes | Rejection:
    """The whole body of a non-multipart request, within the size limit."""
    refused = headers_refused(request, max_body_bytes)
    if refused is not None:
        return refused
    chunks = []
    limited = Request(request.scope, limited_receive(request, max_body_bytes))
    try:
        async with aclosing(limited.stream()) as stream:
            async for chunk in stream:
                chunks.append(chunk)
    except BodyTooLarge:
        return too_large(max_body_bytes)
    except ClientDisconnect:
        return client_closed()
    except TimeoutError:
        return stalled()
    return b"".join(chunks)


def without_bom(body: bytes) -> bytes:
    """A JSON body without the UTF-8 byte-order mark some Windows tools write before it, which RFC 8259 (8.1) lets a
    parser skip and ``json.loads`` (/classify) skips; pydantic's parser (/infer, /v2) does not."""
    return body.removeprefix(codecs.BOM_UTF8)


# A body over the bound on its values that nests deeper than this is refused as nested, not as values: pydantic's
# parser (/infer, /v2) reads no deeper, and no route's request comes near it.
MAX_DEPTH = 200
# The bytes of a body read at a time for its depth.
_DEPTH_CHUNK = 1 << 13
_BACKSLASH, _QUOTE = ord("\\"), ord('"')
_NOT_BACKSLASH = re.compile(rb"[^\\]")
# Each byte's step in depth, plus one: 2 for '[' and '{', 0 for ']' and '}', 1 for the rest. Translated as bytes, in
# place of indexing an array of steps, which takes eight bytes of index per byte of the body.
_STEPS = bytes(2 if byte in b"[{" else 0 if byte in b"]}" else 1 for byte in range(256))

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
    fault = structure_fault(body, MAX_DEPTH)
    if fault == "nested":
        return Rejection("malformed_request", f"the JSON body nests arrays or objects deeper than {MAX_DEPTH} levels")
    if fault == "unclosed":
        return Rejection("malformed_request", "the JSON body could not be parsed: a string in it is never closed")
    return Rejection(
        "too_many_images",
        f"too many images: at most {max_images} per request, {shape}: at most {limit} JSON values with the rest of "
        f"the request; this body has {separators} ',' '[' and '{{'",
    )


def structure_fault(body: bytes, depth: int) -> Literal["nested", "unclosed"] | None:
    """What is wrong with a JSON body's shape: "nested" where its arrays and objects nest more than ``depth`` deep,
    brackets inside strings not counted; else "unclosed" where a string is still open at its end (the brackets after
    its quote were taken for the string's).
    Asked only of a body over the bound on its values, whose opening brackets would otherwise be counted as values
    (``[[[[...`` as that many images). Read a chunk at a time: a few arrays of its size, not copies of the body."""
    level, inside, start = 0, 0, 0
    while start < len(body):
        end = start + _DEPTH_CHUNK
        if end < len(body) and body[end - 1] == _BACKSLASH:  # an escape is never split between chunks
            # past the run of backslashes by one search: stepped a byte at a time, a 50 MB run takes seconds
            after = _NOT_BACKSLASH.search(body, end)
            end = after.end() if after else len(body)
        # escapes occur only inside strings: without them, each quote left opens or closes one
        chunk = body[start:end].replace(b"\\\\", b"").replace(b'\\"', b"")
        start = end
        if not chunk:
            continue
        steps = np.frombuffer(chunk.translate(_STEPS), np.int8) - 1
        if inside or _QUOTE in chunk:
            quotes = np.cumsum(np.frombuffer(chunk, np.uint8) == _QUOTE, dtype=np.int32) + inside
            steps[quotes % 2 == 1] = 0
            inside = int(quotes[-1]) % 2
        levels = np.cumsum(steps, dtype=np.int32) + level
        if int(levels.max()) > depth:
            return "nested"
        level = int(levels[-1])
    # Valid JSON in UTF-8 leaves no string open, and holds no NUL byte; in UTF-16 or UTF-32 (which json.loads reads)
    # every character is spelt with NULs, and a '"' byte may be part of another character.
    return "unclosed" if inside and b"\0" not in body else None
