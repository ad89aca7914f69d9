"""decode_image: the one decoder shared by training's folder reader, the service and batch scoring."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import encode_image as _encode
from inference.image_formats import DECODABLE_FORMATS
from inference.image_limits import MAX_SIDE, ImageDecodeError, ImageTooLarge
from inference.preprocess import decode_image, decode_pixels, pixels_to_model_input, to_model_input

# The fit every test here names, as every caller must; most of these images are the input's size and need none.
FIT = "center_crop"


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
    decoded = decode_image(data, size=(24, 40), fit=FIT)
    np.testing.assert_array_equal(decoded, reference)
    stored = decode_image(_encode(image, fmt), size=(24, 40), fit=FIT)  # no EXIF: resized, not rotated
    assert np.abs(decoded.astype(int) - stored.astype(int)).mean() > 20


def test_jpeg_without_exif_is_decoded_exactly_as_pillow_does():
    rng = np.random.default_rng(0)
    data = _encode(Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)), "JPEG")
    np.testing.assert_array_equal(decode_image(data, fit=FIT), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


@pytest.mark.parametrize("data", [b"\xff\xd8\xff" + b"\x00" * 100, b"\x89PNG\r\n\x1a\n" + b"junk" * 10, b"GIF89a"])
def test_data_that_only_starts_like_an_image_is_refused(data):
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(data, fit=FIT)


def test_an_unidentified_image_gets_the_same_message_every_time():
    """Pillow names the stream by its memory address; the message must not (batch scoring's error rows)."""
    messages = set()
    for _ in range(2):
        with pytest.raises(ImageDecodeError) as info:
            decode_image(b"plain text, not an image", fit=FIT)
        messages.add(str(info.value))
    (message,) = messages
    # and says which formats are read (an ICO, a PDF is not one of them)
    assert message == (
        "not a readable image (UnidentifiedImageError: cannot identify image file); readable formats: "
        + ", ".join(DECODABLE_FORMATS)
    )


def test_empty_and_oversized_are_refused():
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"", fit=FIT)
    with pytest.raises(ImageTooLarge, match="over the limit"):  # its own type: the service answers 413 for it
        decode_image(_encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=9_999, fit=FIT)


Image.init()  # every plugin registered, so that SAVE lists all Pillow can write here


@pytest.mark.parametrize("fmt", [f for f in DECODABLE_FORMATS if f in Image.SAVE])
def test_every_decodable_format_that_pillow_writes_here_decodes(fmt):
    """To the pixels Pillow itself reads from the same bytes, fitted as the model's input is."""
    from inference.fits import fit_image

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    data = _encode(image, fmt)
    got = decode_image(data, fit=FIT)
    assert got.shape == (32, 32, 3)
    expected = np.asarray(fit_image(Image.open(io.BytesIO(data)).convert("RGB"), (32, 32), FIT))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1


def test_no_reader_outside_the_list_is_offered_an_upload(monkeypatch):
    """EPS goes to Ghostscript when the host has it: an upload must never reach that plugin, nor any other
    reader outside DECODABLE_FORMATS."""
    from PIL import EpsImagePlugin

    offered = []
    monkeypatch.setattr(EpsImagePlugin, "_accept", lambda prefix: offered.append(prefix) or True)
    Image.init()
    monkeypatch.setitem(Image.OPEN, "EPS", (EpsImagePlugin.EpsImageFile, EpsImagePlugin._accept))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(eps, fit=FIT)
    assert offered == []
    assert "EPS" not in DECODABLE_FORMATS


def test_an_icon_is_not_decoded_since_pillow_decodes_it_before_its_size_can_be_checked(monkeypatch):
    """Pillow's ICO reader decodes the icon's image inside Image.open: a 9400x9400 icon took 380 MB before the
    pixel limit could refuse it. No icon reaches that reader."""
    from PIL import IcoImagePlugin

    offered = []
    monkeypatch.setattr(IcoImagePlugin, "_accept", lambda prefix: offered.append(prefix) or True)
    Image.init()
    monkeypatch.setitem(Image.OPEN, "ICO", (IcoImagePlugin.IcoImageFile, IcoImagePlugin._accept))
    icon = _encode(Image.new("RGBA", (16, 16), (10, 20, 30, 255)), "ICO")
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(icon, fit=FIT)
    assert offered == [] and "ICO" not in DECODABLE_FORMATS


def test_a_side_past_the_limit_is_refused_from_the_header_whatever_the_pixels():
    """A 1 x 39,000,000 PNG is within the pixel limit, but decoding and fitting its rows took seconds and a
    gigabyte; the side limit refuses it from its header."""
    thin = _encode(Image.new("L", (1, MAX_SIDE + 1)), "PNG")
    with pytest.raises(ImageTooLarge, match=f"image is 1x{MAX_SIDE + 1}: a side over the limit of {MAX_SIDE}"):
        decode_image(thin, fit="squash")
    longest = _encode(Image.new("L", (MAX_SIDE, 1), 255), "PNG")
    assert decode_image(longest, fit="pad").shape == (32, 32, 3)  # the limit itself is served


def test_the_pixel_limit_is_ours_even_past_pillows_own(monkeypatch):
    """Pillow refuses in Image.open any image over its module-wide MAX_IMAGE_PIXELS (89.5 M pixels; made small
    here): a larger max_pixels must still decode such an image, and one over both is refused naming ours."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    png = _encode(Image.new("RGB", (100, 100), (200, 10, 10)), "PNG")  # 10,000 pixels: twice Pillow's limit
    assert decode_image(png, max_pixels=20_000, fit=FIT)[0, 0].tolist() == [200, 10, 10]
    # Over both (Pillow warns past its limit and raises past twice it): our limit and the image's size are named,
    # not Pillow's limit and its advice.
    for width, height in ((150, 200), (200, 250)):
        larger = _encode(Image.new("RGB", (width, height)), "PNG")
        with pytest.raises(ImageTooLarge) as refused:
            decode_image(larger, max_pixels=20_000, fit=FIT)
        assert str(refused.value) == f"image is {width * height} pixels, over the limit of 20000"
    with pytest.raises(ImageTooLarge, match="over the limit of 9999"):
        decode_image(png, max_pixels=9_999, fit=FIT)


# ---------------------------------------------------------------------------------------------- plain JPEGs
def _pillow(data: bytes, size=(32, 32)) -> np.ndarray:
    """What Pillow's own JPEG plugin decodes (resized like decode_image when the size differs)."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    if image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _jpeg(image: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **save)
    return buf.getvalue()


def test_real_cifar_jpegs_take_the_plain_path_with_pillows_pixels(shared_archive):
    import tarfile

    from inference.image_formats import plain_jpeg_frame

    seen = 0
    with tarfile.open(shared_archive, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".jpg"):
                data = tar.extractfile(member).read()
                assert plain_jpeg_frame(data) == ("RGB", (32, 32)), member.name
                np.testing.assert_array_equal(decode_image(data, fit=FIT), _pillow(data), err_msg=member.name)
                seen += 1
                if seen == 300:
                    break
    assert seen == 300


def test_plain_path_covers_grey_progressive_and_other_sizes_and_leaves_the_rest_to_pillow():
    from inference.image_formats import plain_jpeg_frame

    rng = np.random.default_rng(1)
    colour = Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    plain = {
        "baseline": (_jpeg(colour), ("RGB", (56, 40))),
        "grey": (_jpeg(colour.convert("L")), ("L", (56, 40))),
        "progressive": (_jpeg(colour, progressive=True), ("RGB", (56, 40))),
        "comment": (_jpeg(colour, comment=b"made here"), ("RGB", (56, 40))),
    }
    for name, (data, frame) in plain.items():
        assert plain_jpeg_frame(data) == frame, name
        np.testing.assert_array_equal(
            decode_image(data, size=(24, 20), fit="squash"), _pillow(data, (24, 20)), err_msg=name
        )
    exif = Image.Exif()
    exif[0x0112] = 3  # rotate 180
    others = {
        "exif": _jpeg(colour, exif=exif),
        "icc": _jpeg(colour, icc_profile=b"\0" * 200),
        "cmyk": _jpeg(colour.convert("CMYK")),
        "png": _encode(colour, "PNG"),
    }
    for name, data in others.items():
        assert plain_jpeg_frame(data) is None, name
        assert decode_image(data, fit=FIT).shape == (32, 32, 3), name


def _segments(data: bytes) -> tuple[list[bytes], bytes]:
    """A JPEG's segments up to and with its start of scan, and the rest."""
    segments, i = [], 2
    while True:
        length = (data[i + 2] << 8) | data[i + 3]
        segments.append(data[i : i + 2 + length])
        i += 2 + length
        if segments[-1][1] == 0xDA:
            return segments, data[i:]


def test_an_exif_block_after_the_frame_header_still_turns_the_image():
    """Pillow reads an EXIF block anywhere before the scan; one after the frame header (allowed, though cameras
    write it first) kept the plain path, which never turns, so the image came out lying on its side."""
    from inference.image_formats import plain_jpeg_frame

    halves = np.zeros((32, 64, 3), np.uint8)
    halves[:, :32, 0] = halves[:, 32:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    first = _jpeg(Image.fromarray(halves), exif=exif, quality=95)
    segments, scan = _segments(first)
    assert [s[1] for s in segments[:2]] == [0xE0, 0xE1]  # Pillow writes JFIF, then EXIF, before the frame
    app1 = segments.pop(1)
    after = b"\xff\xd8" + b"".join(segments[:-1]) + app1 + segments[-1] + scan
    assert Image.open(io.BytesIO(after)).getexif()[0x0112] == 6
    assert plain_jpeg_frame(after) is None
    np.testing.assert_array_equal(decode_image(after, fit=FIT), decode_image(first, fit=FIT))
    assert decode_image(after, fit=FIT)[:8, :, 0].mean() > 200  # red (the left half) is on top once turned


def test_a_truncated_plain_jpeg_is_refused_in_pillows_words():
    data = _jpeg(Image.fromarray(np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    with pytest.raises(ImageDecodeError, match="not a readable image") as caught:
        decode_image(data[: len(data) // 2], fit=FIT)
    assert "truncated" in str(caught.value).lower()
    header_only = data[: data.index(b"\xff\xda")]  # everything up to the scan: a frame header, no pixels
    with pytest.raises(ImageDecodeError, match="not a readable image"):
        decode_image(header_only, fit=FIT)


def test_a_plain_jpeg_over_the_pixel_limit_is_refused_before_decoding():
    data = _jpeg(Image.new("RGB", (120, 100)))
    with pytest.raises(ImageTooLarge, match="120x100 = 12000 pixels, over the limit"):
        decode_image(data, max_pixels=11_999, fit=FIT)


def test_model_input_from_packed_pixels_matches_the_arrays():
    """The batch path (decode_pixels, joined, into a caller's buffer) gives the array path's tensor exactly:
    the pixels in float32 times float32(1/255) (as every model was verified with), channels first."""
    rng = np.random.default_rng(3)
    datas = [
        _encode(Image.fromarray(rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)), fmt)
        for i, fmt in enumerate(["JPEG", "PNG", "JPEG"])
    ]
    arrays = [decode_image(d, size=(16, 24), fit=FIT) for d in datas]
    assert [decode_pixels(d, size=(16, 24), fit=FIT) for d in datas] == [a.tobytes() for a in arrays]
    expected = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
    out = np.full((3, 3, 16, 24), np.nan, dtype=np.float32)
    batch = pixels_to_model_input(b"".join(decode_pixels(d, size=(16, 24), fit=FIT) for d in datas), 3, (16, 24), out)
    assert batch is out and batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, expected)
    fresh = to_model_input(arrays)
    assert fresh.dtype == np.float32 and fresh.flags.c_contiguous
    np.testing.assert_array_equal(fresh, expected)


@pytest.mark.parametrize("mode, white", [("I", 2**31 - 1), ("I", 1_000_000), ("F", 1e6)])
def test_a_grey_tiff_past_16_bits_is_scaled_to_its_brightest_pixel(mode, white):
    """32-bit integers (Pillow's mode I) or floats above 65535 were read on the 16-bit scale: all but the darkest
    pixels came out white. No scale says where their white is: the brightest pixel is."""
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8))
    grey.putpixel((0, 0), 255)
    dtype = np.int32 if mode == "I" else np.float32
    deep = Image.fromarray(np.rint(np.asarray(grey, dtype=np.float64) * (white / 255)).astype(dtype), mode)
    data = _encode(deep, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == mode
    got = decode_image(data, fit="squash").astype(int)
    assert np.abs(got - decode_image(_encode(grey, "PNG"), fit="squash").astype(int)).max() <= 1


def _exif_jpeg(pixels: np.ndarray, tags: list[bytes], tail: bytes = b"") -> bytes:
    """A JPEG whose EXIF block holds ``tags`` (12-byte little-endian IFD entries), then ``tail``."""
    import struct

    ifd = b"II*\x00" + struct.pack("<LH", 8, len(tags)) + b"".join(tags) + b"\0\0\0\0" + tail
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", exif=b"Exif\x00\x00" + ifd)
    return buf.getvalue()


def test_a_corrupt_exif_block_is_read_as_far_as_it_goes_without_a_warning():
    """Pillow warns ("Truncated File Read", "Possibly corrupt EXIF data") of a tag whose data is past the block's
    end: from the scorer's decode workers that went to stderr, through its progress bar. The image is decoded as
    before: turned by the orientation tag that is intact."""
    import struct
    import warnings

    pixels = np.asarray(_asymmetric())
    turn = struct.pack("<HHLHH", 0x0112, 3, 1, 6, 0)  # orientation 6: a quarter turn
    past_the_end = struct.pack("<HHLL", 0x010E, 2, 20, 40)  # a 20-byte description at offset 40 of a 46-byte block
    corrupt = _exif_jpeg(pixels, [turn, past_the_end], tail=b"abcdefgh")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = decode_image(corrupt, size=(24, 40), fit="squash")
    assert [str(w.message) for w in caught] == []
    np.testing.assert_array_equal(got, decode_image(_exif_jpeg(pixels, [turn]), size=(24, 40), fit="squash"))
    assert got[:6].mean() < 40 < 200 < got[-12:].mean()  # turned: the left third's dark band is now on top
