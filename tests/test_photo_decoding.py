"""Decoding what photos really are, each against what Pillow (and so a viewer) shows: phone rotations and
multi-picture JPEGs, CMYK, transparency, animations, truncated files, header bombs, HEIC. Every image is made here."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

import inference.image_formats as image_formats
import inference.preprocess as preprocess
from conftest import encode_image as _encode
from inference.errors import UsageError
from inference.fits import fit_image
from inference.image_limits import ImageDecodeError, ImageTooLarge
from inference.preprocess import decode_image, decode_pixels

SIZE = (24, 40)  # (height, width): not square, so a missed turn or a mirrored one shows


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """Gradients, a dark band down the left (any turn or flip moves it) and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 120 + 60], axis=-1)
    pixels[:, : width // 4] *= 0.2
    pixels += rng.normal(0, 4, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _viewer(data: bytes, fit: str = "squash") -> np.ndarray:
    """What a viewer shows, fitted: Pillow's first frame, turned upright, clear pixels on white."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image.convert("RGBA"))
    return np.asarray(fit_image(image.convert("RGB"), SIZE, fit)).astype(int)


def _decoded(data: bytes, fit: str = "squash") -> np.ndarray:
    return decode_image(data, SIZE, fit=fit).astype(int)


# ---------------------------------------------------------------------------------------------- the fit
@pytest.mark.parametrize("decode", [decode_image, decode_pixels, preprocess.decode_rgb])
def test_a_decode_without_the_models_fit_is_refused(decode):
    """A default fit gave a Python caller other pixels than the service gives a model whose card names another
    (a squash card decoded with the default centre crop): no call may leave it out."""
    data = _encode(_photo(), "PNG")
    with pytest.raises(TypeError, match="fit"):
        decode(data)
    with pytest.raises(TypeError):
        decode(data, SIZE, preprocess.DEFAULT_MAX_PIXELS, "squash")  # nor pass it where it reads as something else
    assert decode(data, SIZE, fit="squash") is not None


def test_fitting_without_a_fit_is_refused():
    with pytest.raises(TypeError, match="fit"):
        fit_image(_photo(), SIZE)


@pytest.mark.parametrize("size", [(0, 32), (32, 0), 32, (32,), (32, 32, 3), (32.0, 32), None])
def test_a_size_that_is_no_input_size_is_a_usage_error(size):
    """It was a ZeroDivisionError, an IndexError or a TypeError from inside the fit's arithmetic."""
    for data in (_encode(_photo(), "PNG"), _encode(_photo(), "JPEG")):
        with pytest.raises(UsageError, match=r"size is the model input's \(height, width\)"):
            decode_image(data, size, fit="squash")


def test_numpy_integers_are_a_size():
    assert decode_image(_encode(_photo(), "PNG"), (np.int64(24), np.int64(40)), fit="pad").shape == (24, 40, 3)


# ---------------------------------------------------------------------------------------------- what photos are
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_turns_the_photo_as_a_viewer_does(fmt, orientation):
    """A phone's portrait photo is stored landscape with an orientation tag: each format keeps it."""
    save = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(_photo(), fmt, orientation=orientation, **save)
    expected = _viewer(data)
    assert np.abs(expected - _viewer(_encode(_photo(), "PNG"))).mean() > 10  # the turn changes what is shown
    assert np.abs(_decoded(data) - expected).max() <= 1


def test_a_phones_multi_picture_jpeg_is_read_as_its_first_picture_and_reduced_as_a_jpeg():
    """An MPO (a JPEG followed by a depth map or preview) was decoded at full size and then box-averaged, not
    at a reduced size as every other large JPEG: slower, and other pixels than the same photo saved as JPEG."""
    photo = _photo(2000, 1500, seed=3)
    mpo = _encode(photo, "MPO", orientation=6, save_all=True, append_images=[Image.new("RGB", (2000, 1500), "red")])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    jpeg = _encode(photo, "JPEG", orientation=6)
    for fit in ("squash", "center_crop", "pad"):
        np.testing.assert_array_equal(_decoded(mpo, fit), _decoded(jpeg, fit), err_msg=fit)
    assert np.abs(_decoded(mpo) - _viewer(mpo)).mean() < 1.5  # the photo, upright; not the red second picture


def _as_ycck(cmyk_jpeg: bytes) -> bytes:
    """The same scan marked YCCK (Adobe APP14 transform 2), as Photoshop writes CMYK JPEGs."""
    at = cmyk_jpeg.index(b"Adobe") + 11  # "Adobe", version, flags0, flags1, then the transform byte
    return cmyk_jpeg[:at] + b"\x02" + cmyk_jpeg[at + 1 :]


@pytest.mark.parametrize("kind", ["JPEG", "TIFF", "YCCK"])
def test_cmyk_is_converted_as_pillow_converts_it(kind):
    data = _encode(_photo().convert("CMYK"), "TIFF" if kind == "TIFF" else "JPEG")
    data = _as_ycck(data) if kind == "YCCK" else data
    opened = Image.open(io.BytesIO(data))
    assert opened.mode == "CMYK" and (kind != "YCCK" or opened.info["adobe_transform"] == 2)
    assert np.abs(_decoded(data) - _viewer(data)).max() <= 1


def test_a_progressive_jpeg_is_the_same_photo_as_a_baseline_one():
    data = _encode(_photo(), "JPEG", progressive=True, quality=95)
    assert np.abs(_decoded(data) - _viewer(data)).max() <= 1
    assert np.abs(_decoded(data) - _decoded(_encode(_photo(), "JPEG", quality=95))).mean() < 1


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_clear_pixels_are_composited_on_white(fmt, mode):
    pixels = np.asarray(_photo().convert("RGBA")).copy()
    pixels[:, 32:, 3] = 0  # the right half clear
    data = _encode(Image.fromarray(pixels, "RGBA").convert(mode), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    got = _decoded(data)
    assert got[:, -12:].min() >= 254  # white, not the colour under the clear pixels, nor black
    assert np.abs(got - _viewer(data)).max() <= 1


def test_a_palette_png_with_per_entry_alpha_is_composited_on_white():
    palette = _photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    data = _encode(palette, "PNG", transparency=bytes([0] + [255] * 15))
    got, clear = _decoded(data), np.asarray(Image.open(io.BytesIO(data))) == 0
    assert clear.any() and np.abs(got - _viewer(data)).max() <= 1


def test_sixteen_bit_grey_is_scaled_not_clipped():
    grey = _photo().convert("L")
    deep = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit: white is 65535
    for fmt in ("PNG", "TIFF"):
        got = _decoded(_encode(deep, fmt))
        assert np.abs(got - _decoded(_encode(grey, "PNG"))).max() <= 1, fmt


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_an_animation_is_read_as_its_first_frame(fmt):
    first, then = _photo(), Image.new("RGB", (64, 48), (0, 255, 0))
    save = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(first, fmt, save_all=True, append_images=[then], duration=100, **save)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    got = _decoded(data)
    assert np.abs(got - _decoded(_encode(first, "PNG"))).mean() < 4  # (GIF's palette costs a little)
    assert np.abs(got - _viewer(data)).max() <= 1


# ---------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "fmt, save", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}), ("WEBP", {}), ("TIFF", {})]
)
def test_a_truncated_photo_is_refused_not_decoded_in_part(fmt, save):
    """Cut in the middle of its pixels, or before its last 100 bytes: a refusal, never the top of the photo over
    grey (which Pillow gives where ImageFile.LOAD_TRUNCATED_IMAGES is set)."""
    data = _encode(_photo(640, 480), fmt, **save)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    for cut in (len(data) // 2, len(data) - 100):
        with pytest.raises(ImageDecodeError, match="not a readable image"):
            decode_image(data[:cut], fit="squash")


def _png_header(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes that says it is ``width`` x ``height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "side, said",
    [(50000, "2500000000 pixels"), (7000, "7000x7000 = 49000000 pixels")],  # past Pillow's own limit, and within it
)
def test_a_small_file_declaring_millions_of_pixels_is_refused_before_anything_is_decoded(side, said, monkeypatch):
    def decoded(*args, **kwargs):
        pytest.fail("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    with pytest.raises(ImageTooLarge, match=f"{said}, over the limit of"):
        decode_image(_png_header(side, side), fit="squash")


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    """The first box of an ISO base media file (HEIF's container), then some of a file."""
    brands = major + b"\0\0\0\0" + b"".join(compatible)
    return struct.pack(">I", 8 + len(brands)) + b"ftyp" + brands + bytes(64)


@pytest.mark.parametrize(
    "data, name",
    [
        (_ftyp(b"heic", b"mif1", b"heic"), "HEIC"),  # an iPhone's photo
        (_ftyp(b"mif1", b"mif1", b"heic"), "HEIC"),
        (_ftyp(b"hevc", b"mif1"), "HEIC"),
        (_ftyp(b"mif1", b"mif1", b"miaf"), "HEIF"),
    ],
    ids=["heic", "mif1-heic", "hevc", "mif1"],
)
def test_heic_is_refused_by_name(data, name):
    """Pillow has no HEIC reader: it only said it could not identify the file, which a user takes for damage."""
    with pytest.raises(ImageDecodeError, match=f"^{name} images are not readable here") as caught:
        decode_image(data, fit="squash")
    assert "JPEG" in str(caught.value) and "\n" not in str(caught.value)


def test_avif_is_refused_by_name_where_pillow_has_no_avif_reader(monkeypatch):
    data = _ftyp(b"avif", b"avif", b"mif1", b"miaf")
    monkeypatch.setattr(image_formats, "_decodable", lambda: ("JPEG", "PNG"))
    with pytest.raises(ImageDecodeError, match="^AVIF images are not readable here.*readable formats: JPEG, PNG$"):
        decode_image(data, fit="squash")


def test_an_avif_is_decoded_where_pillow_reads_it():
    if "AVIF" not in image_formats._decodable():
        pytest.skip("this Pillow has no AVIF plugin")
    data = _encode(_photo(), "AVIF", quality=90)
    assert image_formats.container_format(data) == "AVIF"
    assert np.abs(_decoded(data) - _viewer(data)).max() <= 1
