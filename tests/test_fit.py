"""Fitting photos of another shape (inference.fits) and decoding large JPEGs at a reduced size (inference.preprocess).

Every image is generated here: marker images whose expected pixels are known, and smooth "photos"
(gradients, shapes and sensor-like noise) saved as JPEG at camera sizes.
"""

from __future__ import annotations

import ast
import io
from typing import get_args

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin

import inference.image_formats as image_formats
import inference.pixel_modes as pixel_modes
import inference.preprocess as preprocess
from conftest import ROOT
from conftest import encode_image as _encode
from inference.fits import FITS, LEGACY_FIT, PAD_COLOR, FitName, fit_image, get_fit
from inference.image_limits import ImageTooLarge
from inference.manifest import InputSpec, ModelCard, load_manifest
from inference.precisions import PRECISIONS, PrecisionName
from inference.preprocess import dct_reduction, decode_image

RED, BLUE, GREY = (230, 20, 20), (20, 20, 230), (100, 100, 100)


def _marked(width: int = 160, height: int = 120) -> Image.Image:
    """Grey, a red square in the centre, a blue band down the left tenth."""
    pixels = np.full((height, width, 3), GREY, dtype=np.uint8)
    side = min(width, height) // 6
    pixels[height // 2 - side // 2 : height // 2 + side // 2, width // 2 - side // 2 : width // 2 + side // 2] = RED
    pixels[:, : width // 10] = BLUE
    return Image.fromarray(pixels)


def _mask(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.abs(pixels.astype(int) - colour).sum(axis=2) < 60


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return rows.mean(), cols.mean()


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """Something like a photo: smooth gradients, a few hard-edged shapes, and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([x / width * 200 + 30, y / height * 180 + 40, (x + y) / (width + height) * 120 + 60], axis=-1)
    for _ in range(6):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.05, 0.2) * min(width, height)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    pixels += rng.normal(0, 6, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------- the table
def test_the_manifests_name_types_are_the_tables_names_in_order():
    """FitName and PrecisionName are spelt out for the type checker; the schema's enums list them, in the tables'
    order."""
    assert get_args(FitName) == tuple(FITS)
    assert get_args(PrecisionName) == tuple(PRECISIONS)


_DECODERS = {"decode_image", "decode_pixels", "decode_rgb", "decode_chunk", "decode_into"}


def _calls_without_a_named_fit(path) -> list[str]:
    """Calls of the decoders in ``path`` that name no ``fit=`` (nor forward ``*args``/``**kwargs`` that may, nor
    leave it out on purpose, marked for mypy)."""
    found, text = [], path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text, str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        forwards = any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords)
        meant = "type: ignore[call-arg]" in lines[node.lineno - 1]  # a test of the missing fit's refusal
        if name in _DECODERS and not forwards and not meant and "fit" not in {k.arg for k in node.keywords}:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_decoder_call_in_the_project_names_its_fit():
    """The fit is keyword-only and has no default: a call that leaves it out, or passes it in the place it had
    before, is a TypeError only when it runs, and a scorer or service path catches every exception of a decode
    as the file's error. Checked here for every call, run by a test or not."""
    sources = [
        p
        for folder in ("inference", "service", "export", "training", "bench", "tests")
        for p in (ROOT / folder).rglob("*.py")
    ]
    missing = [where for path in sources for where in _calls_without_a_named_fit(path)]
    assert missing == [], "decoder calls without fit=: " + ", ".join(missing)


def test_an_unknown_fit_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown fit 'stretch'; valid: center_crop, squash, pad"):
        get_fit("stretch")
    with pytest.raises(ValueError, match="unknown fit"):
        decode_image(_encode(_marked()), fit="stretch")


@pytest.mark.parametrize("fit", list(FITS))
@pytest.mark.parametrize("source", [(160, 120), (120, 160), (1000, 7), (7, 1000), (32, 32), (5, 5)])
@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_every_fit_gives_exactly_the_size_asked_for(fit, source, size):
    assert fit_image(_photo(*source), size, fit).size == (size[1], size[0])


@pytest.mark.parametrize("fit", list(FITS))
def test_an_image_of_the_models_shape_is_left_alone_so_cifar_is_unaffected(fit):
    image = _photo(32, 32)
    np.testing.assert_array_equal(np.asarray(fit_image(image, (32, 32), fit)), np.asarray(image))
    bigger_square = _photo(96, 96)  # any square source: crop, squash and pad are the same plain bilinear resize
    np.testing.assert_array_equal(
        np.asarray(fit_image(bigger_square, (32, 32), fit)),
        np.asarray(bigger_square.resize((32, 32), Image.Resampling.BILINEAR)),
    )


# ---------------------------------------------------------------------------------------------- the expected pixels
@pytest.mark.parametrize("fit", list(FITS))
@pytest.mark.parametrize("shape", [(160, 120), (120, 160)])
def test_a_centred_marker_stays_centred(fit, shape):
    pixels = decode_image(_encode(_marked(*shape), "PNG"), fit=fit)
    rows, cols = _centroid(_mask(pixels, RED))
    assert abs(rows - 15.5) < 0.6 and abs(cols - 15.5) < 0.6, (rows, cols)


def test_center_crop_keeps_the_marker_square_and_cuts_the_sides():
    pixels = decode_image(_encode(_marked(), "PNG"), fit="center_crop")
    red = _mask(pixels, RED)
    height, width = np.ptp(np.nonzero(red)[0]) + 1, np.ptp(np.nonzero(red)[1]) + 1
    assert abs(height - width) <= 1  # the 4:3 frame is not squeezed
    assert not _mask(pixels, BLUE).any()  # the left band is outside the centre crop


def test_squash_is_the_straight_resize_of_before():
    image = _marked()
    expected = np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(_encode(image, "PNG"), fit="squash"), expected)
    jpeg = _encode(_photo(640, 480))
    before = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(decode_image(jpeg, fit="squash", reduce=False), before)
    red = _mask(decode_image(_encode(_marked(320, 120), "PNG"), fit="squash"), RED)
    assert np.ptp(np.nonzero(red)[0]) > np.ptp(np.nonzero(red)[1])  # squeezed: taller than wide now


def test_pad_keeps_the_whole_frame_between_grey_bars():
    pixels = decode_image(_encode(_marked(), "PNG"), fit="pad")  # 160x120 -> 32x24 inside, 4 rows above and below
    assert (pixels[:4] == PAD_COLOR).all() and (pixels[-4:] == PAD_COLOR).all()
    assert not (pixels[4:-4] == PAD_COLOR).all(axis=2).any()
    assert _mask(pixels, BLUE)[4:-4, :2].all()  # the left band is kept
    portrait = decode_image(_encode(_marked(120, 160), "PNG"), fit="pad")  # bars left and right
    assert (portrait[:, :4] == PAD_COLOR).all() and (portrait[:, -4:] == PAD_COLOR).all()


# ---------------------------------------------------------------------------------------------- reduced-size decoding
def test_the_reduction_keeps_twice_the_detail_the_fit_needs():
    assert dct_reduction((4000, 3000), (32, 32), "center_crop") == 8
    assert dct_reduction((640, 480), (32, 32), "center_crop") == 4  # 480/8 = 60 < 64
    assert dct_reduction((128, 128), (32, 32), "center_crop") == 2
    assert dct_reduction((100, 100), (32, 32), "center_crop") == 1
    # pad uses the whole frame, scaled by its longer side: a 4000x500 panorama keeps 64 pixels across
    assert dct_reduction((4000, 500), (32, 32), "pad") == 8
    assert dct_reduction((4000, 500), (32, 32), "center_crop") == 4  # 500/4 = 125 >= 64, 500/8 = 62 < 64


@pytest.mark.parametrize("fit", list(FITS))
@pytest.mark.parametrize(
    "seed, shape", [(0, (4000, 3000)), (1, (2000, 1500)), (2, (640, 480)), (3, (1080, 1920)), (4, (632, 474))]
)
def test_reduced_decode_matches_the_full_decode(fit, seed, shape):
    data = _encode(_photo(*shape, seed=seed), quality=90)
    reduced, full = decode_image(data, fit=fit), decode_image(data, fit=fit, reduce=False)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 1.5


@pytest.mark.parametrize("orientation", [None, *range(1, 9)])
def test_a_reduced_jpeg_of_sides_the_factor_does_not_divide_keeps_its_geometry(orientation):
    """1001 / 8 = 125.125: the last column of the reduced decode stands for an eighth of one of the frame's, at the
    right edge as stored and wherever the EXIF turn or flip puts it. Stretched over a whole column, the hard
    edges of these blocks came out up to a fifth of an output pixel off: 6 levels from the full decode's on
    average, where the reduction alone costs under 0.5."""
    rng = np.random.default_rng(7)
    blocks = np.kron(rng.integers(0, 256, (3, 20, 3), dtype=np.uint8), np.ones((334, 51, 1), dtype=np.uint8))
    data = _encode(Image.fromarray(blocks[:999, :1001]), orientation=orientation, quality=95)
    for fit in FITS:
        reduced, full = decode_image(data, fit=fit), decode_image(data, fit=fit, reduce=False)
        assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 1.5, fit


@pytest.mark.parametrize("orientation", [None, 1])
@pytest.mark.parametrize("shape", [(3, 2000), (2000, 5)])
def test_a_jpeg_narrower_than_the_reduction_is_decoded(orientation, shape):
    """Padded, a 2000-pixel strip is reduced by 8, past its other side: Pillow's draft divided by the 0 pixels
    asked for, and the photo was refused as "not a readable image"."""
    data = _encode(Image.new("RGB", shape, RED), orientation=orientation)
    for fit in FITS:
        np.testing.assert_array_equal(decode_image(data, fit=fit), decode_image(data, fit=fit, reduce=False))


def _transparent(image: Image.Image) -> Image.Image:
    """RGBA: a clear hole (black underneath, which must not show) and a half-clear lower part."""
    pixels = np.asarray(image.convert("RGBA")).copy()
    height, width = pixels.shape[:2]
    pixels[height // 5 : height // 2, width // 5 : width // 2] = (0, 0, 0, 0)
    pixels[2 * height // 3 :, :, 3] = 100
    return Image.fromarray(pixels)


def _colour_keyed(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """RGB or grey with a colour key (a PNG tRNS chunk, as PNG optimisers write): a black hole, clear."""
    pixels = np.asarray(image.convert(mode)).copy()
    height, width = pixels.shape[:2]
    pixels[pixels == 0] = 1  # black only in the hole
    pixels[height // 5 : height // 2, width // 5 : width // 2] = 0
    keyed = Image.fromarray(pixels, mode)
    keyed.info["transparency"] = (0, 0, 0) if mode == "RGB" else 0
    return keyed


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("shape", [(64, 48), (1500, 1100)])
def test_a_colour_keyed_png_is_put_on_white_like_its_rgba_twin(mode, shape):
    """The clear pixels of a colour-keyed PNG show white, as those of the same picture with an alpha channel
    do, at full size and when a large image is shrunk before conversion; they were decoded as black."""
    keyed = _colour_keyed(_photo(*shape, seed=3), mode)
    twin = keyed.convert("RGBA")  # Pillow's own reading of the key
    assert np.asarray(twin)[shape[1] // 3, shape[0] // 3, 3] == 0
    # The twin put on white by hand, saved without alpha: what both must decode to, whatever _to_rgb does.
    rgba = np.asarray(twin).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    on_white = Image.fromarray(np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8), "RGB")
    for fit in FITS:
        got = decode_image(_encode(keyed, "PNG", transparency=keyed.info["transparency"]), fit=fit)
        expected = decode_image(_encode(twin, "PNG"), fit=fit)
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, fit
        white = decode_image(_encode(on_white, "PNG"), fit=fit)
        assert np.abs(got.astype(int) - white.astype(int)).max() <= 1, fit


def _png16(samples: np.ndarray, key: tuple[int, ...]) -> bytes:
    """A 16-bit grey ([H, W]) or RGB ([H, W, 3]) PNG with a colour key (tRNS), which Pillow cannot write."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = samples.shape[:2]
    header = struct.pack(">IIBBBBB", width, height, 16, 2 if samples.ndim == 3 else 0, 0, 0, 0)
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"tRNS", struct.pack(f">{len(key)}H", *key)),
            chunk(b"IDAT", zlib.compress(rows)),
            chunk(b"IEND", b""),
        ]
    )


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("shape", [(64, 48), (1500, 1100)])
def test_a_16_bit_colour_keyed_png_is_put_on_white_like_its_8_bit_twin(mode, shape):
    """A 16-bit PNG's key names 16-bit values: grey lost it in the conversion to 8 bits, and RGB kept it at 16
    bits against pixels Pillow had cut to 8, so that no pixel matched: the clear pixels showed their colour."""
    keyed = _colour_keyed(_photo(*shape, seed=6), mode)
    pixels = np.asarray(keyed).astype(np.int64)
    pixels[pixels == 9] = 8
    pixels[pixels == 0] = 9  # the hole in a colour no other pixel has, not black (0 is 0 on both scales)
    key8 = (9, 9, 9) if mode == "RGB" else 9
    twin = Image.fromarray(pixels.astype(np.uint8), mode)
    # a low byte unlike the high one: Pillow compares a 16-bit key's low byte with its 8-bit pixels (the high)
    data = _png16(pixels * 256 + 37, tuple(np.atleast_1d(key8) * 256 + 37))
    for fit in FITS:
        expected = decode_image(_encode(twin, "PNG", transparency=key8), fit=fit).astype(int)
        got = decode_image(data, fit=fit).astype(int)
        assert np.abs(got - expected).max() <= 1, fit


def test_a_dark_16_bit_pgm_is_read_on_its_16_bit_scale():
    """Pillow reads a PGM whose maxval is over 255 as 32-bit integers on the 65535 scale: values that happen to
    stay under 256 are a near-black picture, not an 8-bit one."""
    dark = np.full((32, 32), 200, dtype=">u2")
    assert decode_image(b"P5 32 32 65535\n" + dark.tobytes(), fit="squash").max() <= 1
    bright = b"P5 32 32 1000\n" + np.full((32, 32), 1000, dtype=">u2").tobytes()  # maxval 1000 is white
    assert decode_image(bright, fit="squash").min() == 255


def _grey16(image: Image.Image) -> Image.Image:
    return Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_a_float_tiff_decodes_as_its_8_bit_grey(scale):
    """A 32-bit float grey TIFF (a microscope's or a numpy pipeline's) in [0, 1] or in [0, 255] gives the
    picture its 8-bit version gives; Pillow's own conversion clipped [0, 1] to near black."""
    grey = _photo(64, 48).convert("L")
    floats = Image.fromarray(np.asarray(grey, dtype=np.float32) * np.float32(scale / 255.0), "F")
    for fit in FITS:
        expected = decode_image(_encode(grey, "PNG"), fit=fit).astype(int)
        got = decode_image(_encode(floats, "TIFF"), fit=fit).astype(int)
        assert np.abs(got - expected).max() <= 1, fit


def test_a_float_tiff_that_overshoots_1_is_still_read_as_0_to_1():
    """A [0, 1] image resized with a bicubic filter rings a little past 1 at its edges: it is the same picture
    with its brightest pixels clipped, not a [0, 255] image (which read so came out black)."""
    grey = _photo(64, 48).convert("L")
    floats = np.asarray(grey, dtype=np.float32) / np.float32(255.0)
    floats[0, :8] = 1.05  # the overshoot
    expected = decode_image(_encode(grey, "PNG"), fit="squash").astype(int)
    got = decode_image(_encode(Image.fromarray(floats, "F"), "TIFF"), fit="squash").astype(int)
    assert np.abs(got - expected)[2:].max() <= 1  # below the row the overshoot's 8 pixels blur into
    assert got.mean() > 100


@pytest.mark.parametrize("shape", [(64, 48), (1500, 1100)])
def test_a_16_bit_grey_png_decodes_as_its_8_bit_twin(shape):
    """16-bit samples are read on their own scale (65535 is white), at full size and shrunk."""
    grey = _photo(*shape, seed=4).convert("L")
    for fit in FITS:
        expected = decode_image(_encode(grey, "PNG"), fit=fit).astype(int)
        got = decode_image(_encode(_grey16(grey), "PNG"), fit=fit).astype(int)
        assert np.abs(got - expected).max() <= 1, fit


LARGE_NON_JPEGS = {
    "rgba png": (lambda photo: _transparent(photo), "PNG", None),
    "palette png": (lambda photo: photo.quantize(64), "PNG", None),
    "16-bit grey png": (_grey16, "PNG", None),
    "bilevel png": (lambda photo: photo.convert("1"), "PNG", None),
    "rgb webp, turned": (lambda photo: photo, "WEBP", 6),
}


@pytest.mark.parametrize("case", list(LARGE_NON_JPEGS))
def test_a_large_image_of_another_format_is_shrunk_before_conversion(case, monkeypatch):
    """No reduced decode outside JPEG: the loaded image is box-averaged by a whole factor before it is
    turned, converted or composited. The result is not bit-identical to the full-size path (box averages
    then a bilinear resize weigh the source pixels a little differently from one bilinear resize), hence
    the tolerance; the extent keeps a last partial block from stretching the geometry."""
    make, fmt, orientation = LARGE_NON_JPEGS[case]
    save = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(make(_photo(1500, 1100, seed=5)), fmt, orientation=orientation, **save)
    shown = (1100, 1500) if orientation else (1500, 1100)
    converted = []
    to_rgb = pixel_modes._to_rgb
    monkeypatch.setattr(pixel_modes, "_to_rgb", lambda image: converted.append(image.size) or to_rgb(image))
    for fit in FITS:
        factor = preprocess.reduction(shown, (32, 32), fit)
        assert factor > 2, fit
        reduced = decode_image(data, fit=fit).astype(int)
        full = decode_image(data, fit=fit, reduce=False).astype(int)
        assert converted == [(-(-shown[0] // factor), -(-shown[1] // factor)), shown], fit
        converted.clear()
        difference = np.abs(reduced - full)
        assert difference.mean() < 0.5 and difference.max() < 12, (fit, difference.mean(), difference.max())


def test_an_image_of_at_most_a_megapixel_is_decoded_as_before():
    """Bit for bit: too small to reduce, or small enough that its full-size copies cost little."""
    for shape in [(100, 100), (127, 64), (32, 32), (1000, 1000), (128, 96)]:  # the last two could be reduced
        data = _encode(_transparent(_photo(*shape)), "PNG")
        image = Image.open(io.BytesIO(data))
        image.load()
        shrunk, frame, extent = preprocess.shrink(image, (32, 32), "center_crop")
        assert shrunk is image and frame == shape and extent == (0, 0, *shape)
        for fit in FITS:
            np.testing.assert_array_equal(decode_image(data, fit=fit), decode_image(data, fit=fit, reduce=False))
    assert preprocess.reduction((6000, 6000), (32, 32), "center_crop") == 93  # 6000 / 93 = 64.5: still twice 32
    assert preprocess.reduction((128, 128), (32, 32), "center_crop") == 2


def test_the_plain_path_reduces_as_pillows_draft_does(monkeypatch):
    data = _encode(_photo(2000, 1500))
    assert image_formats.plain_jpeg_frame(data) is not None
    decoded_sizes = []
    frombytes = Image.frombytes

    def spy(mode, size, *args):
        decoded_sizes.append(size)
        return frombytes(mode, size, *args)

    monkeypatch.setattr(preprocess.Image, "frombytes", spy)
    ours = decode_image(data, fit="center_crop")
    assert decoded_sizes == [(250, 188)]  # 2000x1500 / 8, rounded up
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", (250, 187))
    assert image.size == (250, 188)
    # 1500 / 8 = 187.5: the last row stands for half a row of the frame
    extent = (0, 0, 250, 187.5)
    np.testing.assert_array_equal(
        ours, np.asarray(fit_image(image.convert("RGB"), (32, 32), "center_crop", frame=(2000, 1500), extent=extent))
    )


@pytest.mark.parametrize("orientation, turned", [(6, True), (8, True), (3, False)])
def test_exif_rotated_photos_come_out_upright(orientation, turned):
    """A phone's portrait photo: stored landscape, shown turned. Reduced, fitted to a landscape input, it is
    the upright photo's fit; without the turn it would be far off."""
    stored = _photo(1600, 900, seed=4)
    data = _encode(stored, orientation=orientation)
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert upright.size == ((900, 1600) if turned else (1600, 900))
    for fit in FITS:
        expected = np.asarray(fit_image(upright, (24, 40), fit)).astype(int)
        decoded = decode_image(data, size=(24, 40), fit=fit).astype(int)
        assert np.abs(decoded - expected).mean() < 1.5, fit
        unturned = np.asarray(fit_image(Image.open(io.BytesIO(data)).convert("RGB"), (24, 40), fit)).astype(int)
        assert np.abs(unturned - expected).mean() > 10, fit


def test_a_quarter_turned_photo_is_reduced_by_its_shown_shape(monkeypatch):
    """Stored 4000 wide and 600 high, shown 600 wide: cropped to a 32-high, 320-wide input the shown width
    600 needs 640 pixels, so no reduction; judged by the stored shape it would be reduced by 8."""
    drafts = []
    jpeg = JpegImagePlugin.JpegImageFile
    draft = jpeg.draft
    monkeypatch.setattr(jpeg, "draft", lambda self, mode, size: drafts.append(size) or draft(self, mode, size))
    data = _encode(_photo(600, 4000).transpose(Image.Transpose.ROTATE_90), orientation=6)
    decode_image(data, size=(32, 320), fit="center_crop")
    decode_image(_encode(_photo(4000, 3000)), size=(32, 32), fit="center_crop")  # EXIF-free: the plain path
    decode_image(_encode(_photo(4000, 3000), orientation=1), size=(32, 32), fit="center_crop")
    assert drafts == [(500, 375)]


@pytest.mark.parametrize("orientation", [None, 6])
def test_the_pixel_limit_refuses_a_bomb_from_its_header(orientation, monkeypatch):
    data = _encode(_photo(3000, 2000), orientation=orientation)
    header_only = data[: data.index(b"\xff\xda")]  # no pixel data at all: refused all the same

    def decoded(*args, **kwargs):
        pytest.fail("pixels were decoded")

    monkeypatch.setattr(preprocess.Image, "frombytes", decoded)  # the plain path's decoder
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)  # the general path's
    for sample in (data, header_only):
        with pytest.raises(ImageTooLarge, match="3000x2000 = 6000000 pixels, over the limit of 5999999"):
            decode_image(sample, max_pixels=5_999_999, fit="center_crop")


# ---------------------------------------------------------------------------------------------- the model card
def test_a_card_without_a_fit_reads_as_squash_and_a_bad_one_is_refused():
    old = {"shape": [3, 32, 32], "mean": [0.5] * 3, "std": [0.25] * 3}
    assert InputSpec.model_validate(old).fit == LEGACY_FIT == "squash"
    assert InputSpec.model_validate({**old, "fit": "pad"}).fit == "pad"
    with pytest.raises(ValueError, match="fit"):
        InputSpec.model_validate({**old, "fit": "stretch"})
    assert set(ModelCard.model_json_schema()["$defs"]["InputSpec"]["properties"]["fit"]["enum"]) == set(FITS)


def test_the_shipped_models_from_before_fits_read_as_squash():
    """The ResNet-9 files were exported before cards named a fit: they keep serving as they always have."""
    manifest = load_manifest(ROOT / "models", verify=False)
    legacy = [m for m in manifest.models if m.arch == "resnet9_half"]
    assert legacy and {m.input.fit for m in legacy} == {"squash"}
