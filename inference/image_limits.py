"""What a decode refuses before any pixel is decoded: the errors it raises, the pixel and side limits read from
an image's header, and the checks of the caller's own arguments (a size, a limit).

Its own module so that every step of the decode (the format sniffing, the mode conversion, the decode path itself)
raises the same error types and checks the same limits, with nothing under it but ``inference.errors``.
"""

from __future__ import annotations

import operator

from .errors import UsageError

# Pillow's own bomb guard warns at ~89 MP and fails at twice that; a classifier
# with 32x32 inputs has no use for anything near that, so the limit is far lower.
DEFAULT_MAX_PIXELS = 40_000_000
# Also checked on the header, whatever the pixel limit: a decoder's cost grows with the rows as well as the pixels
# (a 1 x 39,000,000 PNG within the pixel limit took seconds and over a gigabyte to decode and fit), and no photo
# has a side past JPEG's own largest.
MAX_SIDE = 65_535


class ImageDecodeError(ValueError):
    """The bytes are not a readable image (or, as ``ImageTooLarge``, one over the pixel limit)."""


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than allowed: refused before its pixels are decoded."""


class OverPixelLimit(ImageTooLarge):
    """Over the caller's ``max_pixels``, which the caller may raise (a side over ``MAX_SIDE`` is not)."""


def whole_number(value: object) -> int | None:
    """``value`` as an int where it is one (numpy's included; not a bool, a float or a string of digits), else
    None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def _check_max_pixels(max_pixels: int) -> None:
    # None would fail every image with a TypeError, and 0 refuse each as "over the limit of 0"
    if (whole_number(max_pixels) or 0) < 1:
        raise UsageError(
            f"max_pixels is the most pixels an image may have, a positive whole number; got {max_pixels!r}"
        )


def _check_size(size: tuple[int, int]) -> None:
    """A size the fit cannot produce is the caller's error, said as such: not a ZeroDivisionError, IndexError or
    TypeError from the fit's arithmetic."""
    try:
        sides = [operator.index(side) for side in size]
    except TypeError:
        sides = []
    if len(sides) != 2 or min(sides) < 1:
        raise UsageError(f"size is the model input's (height, width), two positive integers; got {size!r}")


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise OverPixelLimit(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
    if max(width, height) > MAX_SIDE:
        raise ImageTooLarge(f"image is {width}x{height}: a side over the limit of {MAX_SIDE} pixels")
