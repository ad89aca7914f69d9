"""An image as a request sends it (a file part, or base64 in JSON), and the model's pixels it becomes.

Every route that takes image files decodes them through here (/classify, and the Open Inference Protocol's
``images`` input), so each refuses the same bad image in the same words, under the same limits, and fits it to
the model the same way.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread

from inference.fits import FITS
from inference.image_limits import ImageDecodeError, ImageTooLarge
from inference.preprocess import decode_pixels

from .contract import Rejection, as_sent


@dataclass(frozen=True)
class Upload:
    filename: str
    data: bytes


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


def resolve_fit(requested: str | None, model_fit: str) -> str | Rejection:
    """The fit to decode with: the request's (any route's field, already a name or None) or the model's own."""
    if requested is None:
        return model_fit
    if requested not in FITS:
        return Rejection("bad_fit", unknown_fit(requested))
    return requested


def unknown_fit(value: Any) -> str:
    return f"fit must be one of {', '.join(FITS)}, got {as_sent(value)}"[:200]


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
    # as_sent shortens it: a client's name of any length would otherwise come back whole in the refusal and the log
    where = f"images[{i}] ({as_sent(upload.filename)})" if upload.filename else f"images[{i}]"
    if not upload.data:
        return Rejection("empty_file", f"{where} is an empty file (0 bytes)")
    try:
        return decode_pixels(upload.data, size, max_pixels, fit=fit)
    except ImageTooLarge as exc:
        return Rejection("image_too_large", f"{where}: {exc}")
    except ImageDecodeError as exc:
        return Rejection("not_an_image", f"{where}: {exc}")
