"""Decoding the image modes beyond RGB and grey that files come in: CIELAB, alpha in every form (straight,
premultiplied, a palette's, a colour key), 16-bit grey. Each image is built here and its decoded colours are
checked against the colours it holds, composited on white where it is clear."""

from __future__ import annotations

import io
import struct
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

from conftest import encode_image as _encode
from inference.image_limits import ImageDecodeError
from inference.preprocess import SHRINK_ABOVE_PIXELS, decode_image

SIZE = (8, 8)
# Past SHRINK_ABOVE_PIXELS: averaged down (``shrink``) before it is converted to RGB.
LARGE = (1100, 1000)
RED = (200, 30, 30)


def _decoded(data: bytes) -> np.ndarray:
    return decode_image(data, SIZE, fit="squash").astype(int)


def _on_white(colour: tuple[int, ...], alpha: int) -> np.ndarray:
    return np.array([c * alpha / 255 + 255 * (1 - alpha / 255) for c in colour])


def _tiff(width: int, height: int, photometric: int, extra_sample: int, pixels: bytes) -> bytes:
    """An uncompressed little-endian TIFF of one 8-bit sample plus one extra (alpha) sample per pixel, one
    strip: Pillow writes no grey with associated alpha, which image editors save."""
    entries = [
        (256, 4, 1, struct.pack("<I", width)),
        (257, 4, 1, struct.pack("<I", height)),
        (258, 3, 2, struct.pack("<HH", 8, 8)),
        (259, 3, 1, struct.pack("<HH", 1, 0)),  # no compression
        (262, 3, 1, struct.pack("<HH", photometric, 0)),
        (273, 4, 1, b""),  # the strip's offset, filled in below
        (277, 3, 1, struct.pack("<HH", 2, 0)),
        (278, 4, 1, struct.pack("<I", height)),
        (279, 4, 1, struct.pack("<I", len(pixels))),
        (338, 3, 1, struct.pack("<HH", extra_sample, 0)),  # 1: associated (premultiplied) alpha, 2: straight
    ]
    strip = 8 + 2 + 12 * len(entries) + 4
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + (value or struct.pack("<I", strip))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + pixels


def _colour_mapped_tga(palette: list[tuple[int, int, int, int]], indices: np.ndarray) -> bytes:
    """A colour-mapped TGA with a 32-bit (BGRA) map, top row first: the alpha is in the palette's entries, with
    no colour key, as a 32-bit map holds it."""
    height, width = indices.shape
    header = struct.pack("<BBBHHBHHHHBB", 0, 1, 1, 0, len(palette), 32, 0, 0, width, height, 8, 0x20)
    entries = b"".join(bytes((b, g, r, a)) for r, g, b, a in palette)
    return header + entries + indices.astype(np.uint8).tobytes()


def _half_clear(shape: tuple[int, int]) -> np.ndarray:
    """True on the left half: the pixels that are clear."""
    clear = np.zeros(shape, bool)
    clear[:, : shape[1] // 2] = True
    return clear


# ------------------------------------------------------------------------------------------------ alpha
def _straight(mode: str, colour: tuple[int, int, int], alpha: int, fmt: str) -> bytes:
    return _encode(Image.new("RGBA", (16, 16), (*colour, alpha)).convert(mode), fmt)


def _premultiplied_grey(grey: int, alpha: int) -> bytes:
    return _tiff(16, 16, 1, 1, bytes([grey * alpha // 255, alpha]) * 256)


def _palette_key(colour: tuple[int, int, int], alpha: int) -> bytes:
    image = Image.new("P", (16, 16), 1)
    image.putpalette([0, 0, 0, *colour])
    return _encode(image, "PNG", transparency=bytes([255, alpha]))


def _palette_alpha(colour: tuple[int, int, int], alpha: int) -> bytes:
    return _colour_mapped_tga([(0, 0, 0, 255), (*colour, alpha)], np.ones((16, 16)))


GREY = (100, 100, 100)
# What holds a colour at an alpha, and that colour: each way a file carries alpha.
ALPHA_FORMS = {
    "RGBA PNG": (lambda alpha: _straight("RGBA", RED, alpha, "PNG"), RED),
    "LA PNG": (lambda alpha: _straight("LA", GREY, alpha, "PNG"), GREY),
    "PA TIFF": (lambda alpha: _straight("PA", RED, alpha, "TIFF"), RED),
    "P with a per-entry key (PNG tRNS)": (lambda alpha: _palette_key(RED, alpha), RED),
    "P with alpha in its palette (TGA)": (lambda alpha: _palette_alpha(RED, alpha), RED),
    "grey with premultiplied alpha (TIFF)": (lambda alpha: _premultiplied_grey(100, alpha), GREY),
}


@pytest.mark.parametrize("alpha", [0, 128, 255])
@pytest.mark.parametrize("form", list(ALPHA_FORMS))
def test_alpha_is_composited_on_white_alike_in_every_form_a_file_carries_it(form, alpha):
    make, colour = ALPHA_FORMS[form]
    got = _decoded(make(alpha))
    assert np.abs(got - _on_white(colour, alpha)).max() <= 2, got[0, 0]


def test_a_grey_tiff_with_premultiplied_alpha_is_decoded_not_a_conversion_error():
    """Pillow opens it as mode "La", which it converts to nothing but "LA": the decode failed with a bare
    ValueError (a 500 from the service, the scorer's run stopped), not even as an unreadable image."""
    clear = _half_clear((4, 4))
    pixels = np.where(clear[..., None], [0, 0], [100, 255]).astype(np.uint8)
    got = _decoded(_tiff(4, 4, 1, 1, pixels.tobytes()))
    assert (got[:, :3] >= 254).all() and (got[:, 5:] == 100).all()


def test_a_large_grey_tiff_with_premultiplied_alpha_is_decoded_as_a_small_one():
    width, height = LARGE
    assert width * height > SHRINK_ABOVE_PIXELS
    clear = _half_clear((height, width))
    pixels = np.where(clear[..., None], [0, 0], [100, 255]).astype(np.uint8)
    got = _decoded(_tiff(width, height, 1, 1, pixels.tobytes()))
    assert (got[:, :3] >= 254).all() and (got[:, 5:] == 100).all()


@pytest.mark.parametrize("side", [(16, 16), LARGE])
def test_clear_entries_of_a_palette_with_alpha_are_white_not_their_hidden_colour(side):
    """A colour-mapped TGA's 32-bit map holds each entry's alpha, and no "transparency" key says so: its clear
    pixels came out in the colour under them."""
    width, height = side
    indices = np.where(_half_clear((height, width)), 0, 1)
    got = _decoded(_colour_mapped_tga([(*RED, 0), (*RED, 255)], indices))
    assert (got[:, :3] >= 254).all()
    assert np.abs(got[:, 5:] - np.array(RED)).max() <= 1


# ---------------------------------------------------------------------------------------------- CIELAB
def _lab(rgb: Image.Image) -> Image.Image:
    srgb_to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(rgb, srgb_to_lab)
    assert lab is not None  # None only when applied in place
    return lab


PATCHES = [RED, (30, 160, 60), (40, 60, 200), (240, 220, 40), (128, 128, 128), (250, 250, 250), (10, 10, 10)]


def test_a_cielab_tiff_is_converted_colour_managed_not_read_as_rgb():
    """Pillow converts LAB to RGB through littlecms (sRGB from a D50 CIELAB profile): L, a and b read as R, G
    and B would put a red at (112, 192, 175)."""
    strip = Image.new("RGB", (len(PATCHES), 1))
    strip.putdata(PATCHES)
    data = _encode(_lab(strip.resize((8 * len(PATCHES), 8), Image.Resampling.NEAREST)), "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    got = decode_image(data, (8, 8 * len(PATCHES)), fit="squash").astype(int)
    expected = np.repeat(np.array(PATCHES)[None], 8, axis=1).repeat(8, axis=0)
    assert np.abs(got - expected).max() <= 8  # 8-bit L*, a*, b* steps: a saturated blue's red moves by 8


def test_a_cielab_tiff_is_refused_in_one_line_where_pillow_has_no_littlecms(monkeypatch):
    """Without littlecms Pillow's LAB conversion raises an ImportError: a 500 from the service, the scorer's run
    stopped."""
    data = _encode(_lab(Image.new("RGB", (8, 8), RED)), "TIFF")
    monkeypatch.setitem(sys.modules, "PIL._imagingcms", None)  # what features.check("littlecms2") imports
    with pytest.raises(ImageDecodeError, match="CIELAB.*littlecms2.*save the image as RGB") as refused:
        _decoded(data)
    assert "\n" not in str(refused.value)


# --------------------------------------------------------------------------------------------- 16 bits
@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I;16B", "TIFF")])
def test_sixteen_bit_grey_is_scaled_to_eight_bits_in_every_byte_order(mode, fmt):
    level = 30000  # 117 of 255; clipped it would be white
    dtype = ">u2" if mode == "I;16B" else "<u2"
    image = Image.frombytes(mode, (16, 16), np.full((16, 16), level, dtype).tobytes())
    assert (_decoded(_encode(image, fmt)) == round(level * 255 / 65535)).all()
