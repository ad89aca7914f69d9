"""Where white is in deep grey images, and large CMYK and CIELAB images: the file's bit depth sets the scale
(not its brightest pixel), and an image's colours do not depend on whether it is over ``SHRINK_ABOVE_PIXELS``.
Each image is built here."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image, ImageCms

from conftest import encode_image as _encode
from inference.preprocess import SHRINK_ABOVE_PIXELS, decode_image

SIZE = (8, 8)
SMALL = (1000, 1000)  # converted at full size
LARGE = (1100, 1000)  # averaged down (``shrink``) before it is fitted
SIGNED = 2  # TIFF SampleFormat


def _decoded(data: bytes, reduce: bool = True) -> np.ndarray:
    return decode_image(data, SIZE, fit="squash", reduce=reduce).astype(int)


def _grey_tiff(width: int, height: int, bits: int, sample_format: int, pixels: bytes) -> bytes:
    """An uncompressed little-endian grey TIFF of one strip, in a depth Pillow does not write (it writes every
    mode "I" image as 32 bits)."""
    entries = [
        (256, 4, struct.pack("<I", width)),
        (257, 4, struct.pack("<I", height)),
        (258, 3, struct.pack("<HH", bits, 0)),
        (259, 3, struct.pack("<HH", 1, 0)),  # no compression
        (262, 3, struct.pack("<HH", 1, 0)),  # black is zero
        (273, 4, b""),  # the strip's offset, filled in below
        (277, 3, struct.pack("<HH", 1, 0)),
        (278, 4, struct.pack("<I", height)),
        (279, 4, struct.pack("<I", len(pixels))),
        (339, 3, struct.pack("<HH", sample_format, 0)),
    ]
    strip = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1) + (value or struct.pack("<I", strip))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels


def _signed16(value: int) -> bytes:
    return _grey_tiff(16, 16, 16, SIGNED, np.full((16, 16), value, "<i2").tobytes())


def _twelve_bit(value: int) -> bytes:
    """Two 12-bit samples in three bytes, most significant bits first, as TIFF packs them."""
    pair = (value << 12) | value
    return _grey_tiff(16, 16, 12, 1, pair.to_bytes(3, "big") * (16 * 16 // 2))


# ---------------------------------------------------------------------------------------- grey depths
@pytest.mark.parametrize("reduce", [True, False])
def test_a_dark_signed_16_bit_tiff_stays_dark(reduce):
    """Pillow opens a signed 16-bit TIFF as mode "I", as it opens a 32-bit one: with no pixel over 255 it was
    read on the 8-bit scale, a near-black picture (200 of 32767) shown as a mid grey."""
    assert Image.open(io.BytesIO(_signed16(200))).mode == "I"
    assert _decoded(_signed16(200), reduce).max() <= 2
    assert _decoded(_signed16(32767), reduce).min() == 255  # white: the largest value the file's samples hold


@pytest.mark.parametrize("reduce", [True, False])
def test_a_12_bit_tiff_is_read_on_its_12_bit_scale(reduce):
    """Pillow holds 12-bit samples in 16 bits unscaled: white (4095) was read as 4095 of 65535, a dark grey."""
    assert _decoded(_twelve_bit(4095), reduce).min() == 255
    assert _decoded(_twelve_bit(200), reduce).max() == round(200 * 255 / 4095)


def test_a_dark_16_bit_pgm_stays_dark_decoded_at_full_size():
    """``reduce=False`` turns the image first (``exif_transpose`` copies it, without its format), after which
    the PGM was no longer known as one and its dark pixels were read on the 8-bit scale."""
    dark = b"P5 32 32 65535\n" + np.full((32, 32), 200, dtype=">u2").tobytes()
    assert _decoded(dark, reduce=False).max() <= 1
    assert _decoded(dark).max() <= 1


def test_a_32_bit_tiff_of_8_bit_values_is_still_read_as_8_bit():
    """Pillow writes any mode "I" image, an 8-bit picture converted to it included, as a 32-bit TIFF: 32 bits
    say nothing of where white is, so the values still do."""
    data = _encode(Image.new("L", (16, 16), 200).convert("I"), "TIFF")
    assert Image.open(io.BytesIO(data)).tag_v2[258] == (32,)
    assert (_decoded(data) == 200).all()


# ---------------------------------------------------------------------------------- large CMYK, CIELAB
def _stripes(mode: str, first: tuple[int, ...], second: tuple[int, ...], side: tuple[int, int]) -> bytes:
    """One-pixel stripes of two colours, as a TIFF: any fit's output pixel covers many of both."""
    width, height = side
    columns = np.where(np.arange(width) % 2 == 0, 0, 1)
    pixels = np.array([first, second], np.uint8)[columns][None].repeat(height, axis=0)
    return _encode(Image.fromarray(pixels, mode), "TIFF")


def _lab(rgb: tuple[int, int, int]) -> tuple[int, ...]:
    srgb_to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(Image.new("RGB", (1, 1), rgb), srgb_to_lab)
    assert lab is not None
    return tuple(lab.getpixel((0, 0)))  # type: ignore[arg-type]


STRIPES = {
    # pure black ink beside pure cyan: Pillow's conversion multiplies by K, so averaged first R came out 63
    "CMYK": ((0, 0, 0, 255), (255, 0, 0, 0)),
    "LAB": (_lab((250, 30, 30)), _lab((20, 40, 240))),
}


@pytest.mark.parametrize("mode", list(STRIPES))
def test_a_large_cmyk_or_cielab_image_has_the_colours_of_a_small_one(mode):
    """Neither conversion to RGB is linear, so averaging before it moved a large image's colours; converted
    first, the image over a megapixel decodes as the same picture under it does."""
    assert LARGE[0] * LARGE[1] > SHRINK_ABOVE_PIXELS >= SMALL[0] * SMALL[1]
    first, second = STRIPES[mode]
    small = _decoded(_stripes(mode, first, second, SMALL))
    large = _decoded(_stripes(mode, first, second, LARGE))
    assert np.abs(large - small).max() <= 1, (large[0, 0], small[0, 0])
    assert np.abs(large - _decoded(_stripes(mode, first, second, LARGE), reduce=False)).max() <= 1
