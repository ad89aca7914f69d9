"""decode_image: the one decoder shared by training's folder reader, the service and batch scoring."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from service.preprocess import ImageDecodeError, decode_image


def _encode(image: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    kwargs = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _asymmetric(width: int = 24, height: int = 40) -> Image.Image:
    """Left third dark, the rest light: any rotation or flip moves the dark band."""
    pixels = np.full((height, width, 3), 230, dtype=np.uint8)
    pixels[:, : width // 3] = 20
    return Image.fromarray(pixels)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt):
    image = _asymmetric()
    data = _encode(image, fmt, orientation=6)  # stored 24 wide, 40 high; shown rotated: 40 wide, 24 high
    reference = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert reference.shape == (24, 40, 3)
    decoded = decode_image(data, size=(24, 40))
    np.testing.assert_array_equal(decoded, reference)
    stored = decode_image(_encode(image, fmt), size=(24, 40))  # no EXIF: resized, not rotated
    assert np.abs(decoded.astype(int) - stored.astype(int)).mean() > 20


def test_jpeg_without_exif_is_decoded_exactly_as_pillow_does():
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "JPEG")
    np.testing.assert_array_equal(decode_image(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize("data", [b"\xff\xd8\xff" + b"\x00" * 100, b"\x89PNG\r\n\x1a\n" + b"junk" * 10, b"GIF89a"])
def test_data_that_only_starts_like_an_image_is_refused(data):
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(data)


def test_empty_and_oversized_are_refused():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(_encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=9_999)
