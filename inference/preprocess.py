"""Image decoding and preprocessing shared by the service, batch scoring and training's folder reader.

One implementation on purpose: the pixels a model is trained on and the
pixels it is served must come out of the same steps (EXIF rotation, RGB
conversion, fitting to the model's input size the way ``inference.fits`` names).

A JPEG much larger than the model's input is decoded at a reduced size (libjpeg's DCT scaling, by 2, 4
or 8) while it stays at least twice the size the fit needs; the resize then averages what is left. Other
formats have no reduced decode: right after loading, one over a megapixel is shrunk by a whole factor
(``Image.reduce``, box averages) under the same rule, before anything else copies it at full size but a
CMYK or CIELAB image's conversion to RGB, which is not linear and so comes first.

What a photo is read as: an animation (GIF, WebP, APNG) or a multi-picture file (MPO, TIFF pages) as its first
frame; transparent pixels (alpha, straight or premultiplied, a palette's or a colour key's) composited on white,
as a viewer shows them; CMYK JPEGs (and YCCK ones, which libjpeg reads as CMYK) through Pillow's conversion, CIELAB
TIFFs through its colour-managed one (littlecms2: refused where Pillow lacks it); 16-bit and float grey
scaled to 8 bits (``_to_8bit``); a truncated file refused, never decoded in part. An embedded ICC profile is
ignored: the samples are read as sRGB, as CIFAR's were, so a wide-gamut photo (Display P3, Adobe RGB) comes out
a little less saturated than a colour-managed viewer shows it, the same way in training and in serving. HEIC is
refused by name.
"""

from __future__ import annotations

import functools
import io
import math
import operator
import os
import re
import warnings
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError, features

from .errors import UsageError
from .fits import Extent, fit_image, get_fit

# Pillow's own bomb guard warns at ~89 MP and fails at twice that; a classifier
# with 32x32 inputs has no use for anything near that, so the limit is far lower.
DEFAULT_MAX_PIXELS = 40_000_000
# Also checked on the header, whatever the pixel limit: a decoder's cost grows with the rows as well as the pixels
# (a 1 x 39,000,000 PNG within the pixel limit took seconds and over a gigabyte to decode and fit), and no photo
# has a side past JPEG's own largest.
MAX_SIDE = 65_535
# Scans a JPEG may have. Each scan of a progressive JPEG passes over every block of its components, and a scan of
# nothing but end-of-band runs takes a few bytes: a small file of such scans at the pixel limit keeps a decoding
# thread busy for minutes (docs/deploy.md, the refusals). Encoders write a few dozen at most.
MAX_JPEG_SCANS = 100
_START_OF_SCAN_MARKER = b"\xff\xda"
# A non-JPEG image up to this size is fitted from its full-size pixels, as it always was: its full-size
# copies (turned, converted, composited) cost little, a 6000x6000 RGBA PNG's about 1 s and 400 MiB
# (docs/measurements.md, "Decoding").
SHRINK_ABOVE_PIXELS = 1_000_000
# The file names of DECODABLE_FORMATS (below), which the scorer and training's folder reader pick up: every name
# Pillow registers for them, or a file it reads would be skipped as "not an image" (a browser saves JPEGs as .jfif).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".bmp", ".dib", ".gif", ".tif", ".tiff", ".webp"}
    | {".ppm", ".pgm", ".pbm", ".pnm", ".pfm", ".tga", ".icb", ".vda", ".vst", ".qoi", ".avif", ".avifs"}
    | {".jp2", ".j2k", ".j2c", ".jpc", ".jpf", ".jpx"}
)


def is_image_name(name: str) -> bool:
    """Whether a file name is an image's: an image extension, and not the AppleDouble metadata ("._cat.jpg")
    that copies and archives made on a Mac leave beside each file, which holds no image."""
    base = os.path.basename(name)
    return not base.startswith("._") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


# Naming the format up front skips Pillow's probe of every registered format, a tenth of a small JPEG's
# decoding time (docs/measurements.md, "Decoding"). Anything else is probed as usual.
_JPEG_MAGIC = b"\xff\xd8\xff"
_MAGIC_FORMATS = ((_JPEG_MAGIC, ("JPEG",)), (b"\x89PNG\r\n\x1a\n", ("PNG",)))
# The only formats Pillow may open here (uploads are untrusted): the raster formats images are sent in. Left
# out on purpose: EPS, which Pillow hands to Ghostscript when the host has it, and the scientific, video and
# legacy formats (FITS, HDF5, GRIB, MPEG, WMF, PSD, ...) that no photo comes in and each add a parser. Nor ICO:
# Pillow decodes an icon's image while opening it, before its size can be checked against the pixel limit.
DECODABLE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "QOI", "AVIF", "JPEG2000")
# What Pillow names a JPEG: a phone's multi-picture JPEG (MPO: the photo, then a depth map or preview) is one,
# read as its first picture, and decoded reduced as any JPEG is.
_JPEG_FORMATS = ("JPEG", "MPO")
# The brands an ISO base media file (HEIF's container) lists in its first box, "ftyp", and the format each names:
# Pillow has no reader for HEIC, a phone's default, and reads AVIF only with its plugin.
_FTYP_BRANDS = {
    **dict.fromkeys((b"avif", b"avis"), "AVIF"),
    **dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"), "HEIC"),
    **dict.fromkeys((b"mif1", b"msf1"), "HEIF"),
}
# The reductions libjpeg's DCT scaling offers Pillow, largest first.
_DCT_REDUCTIONS = (8, 4, 2)
# EXIF orientations that turn the stored frame a quarter: its width is the shown height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# How exif_transpose moves a pixel for each EXIF orientation: (swap the axes, then mirror left-right, mirror top-bottom)
_ORIENTATION_MOVES = {
    2: (False, True, False),
    3: (False, True, True),
    4: (False, False, True),
    5: (True, False, False),
    6: (True, True, False),
    7: (True, True, True),
    8: (True, False, True),
}


class ImageDecodeError(ValueError):
    """The bytes are not a readable image (or, as ``ImageTooLarge``, one over the pixel limit)."""


class ImageTooLarge(ImageDecodeError):
    """The image has more pixels than allowed: refused before its pixels are decoded."""


class OverPixelLimit(ImageTooLarge):
    """Over the caller's ``max_pixels``, which the caller may raise (a side over ``MAX_SIDE`` is not)."""


def decode_image(
    data: bytes,
    size: tuple[int, int] = (32, 32),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    fit: str,
    reduce: bool = True,
) -> np.ndarray:
    """Decode image bytes to uint8 [H, W, 3] RGB of ``size`` (height, width); see ``decode_rgb``."""
    return np.asarray(decode_rgb(data, size, max_pixels, fit=fit, reduce=reduce), dtype=np.uint8)


def decode_pixels(
    data: bytes,
    size: tuple[int, int] = (32, 32),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    fit: str,
    reduce: bool = True,
) -> bytes:
    """``decode_image``'s pixels packed as bytes (H x W x 3), the form batches are joined from: cheaper than
    through an array (docs/measurements.md, "Decoding")."""
    return decode_rgb(data, size, max_pixels, fit=fit, reduce=reduce).tobytes()


def decode_rgb(
    data: bytes,
    size: tuple[int, int] = (32, 32),
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    fit: str,
    reduce: bool = True,
) -> Image.Image:
    """Decode an image file's bytes (a bytearray or memoryview of them too; a PIL image is ``to_rgb_image``'s) to an
    RGB image of ``size`` (height, width), fitted the way ``fit`` (a name from
    ``inference.fits.FITS``) says; ``ImageDecodeError`` if they are not an image. The pixel limit is checked
    on the header's size before anything is decoded. ``reduce=False`` decodes a large JPEG at full size
    (the reference the reduced decode is measured against).

    ``fit`` has no default: a model is served the fit its card names (``card.input.fit``), and a default that
    differed from it gave a caller other pixels than the service and the scorer give the same model."""
    data = _file_bytes(data)
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    get_fit(fit)  # an unknown name is the caller's error, not the image's
    _check_size(size)
    _check_max_pixels(max_pixels)
    if data.startswith(_JPEG_MAGIC):
        _check_scans(data)
    frame = plain_jpeg_frame(data)
    if frame is not None:
        mode, (width, height) = frame
        _check_pixels(width, height, max_pixels)
        factor = dct_reduction((width, height), size, fit) if reduce else 1
        try:
            # The decoder Pillow's JPEG plugin would run, with the arguments it would pass (the reduction
            # as its draft() would), minus the plugin's Python header parsing, which took a third of a
            # CIFAR JPEG's time; identical pixels (docs/measurements.md, "Decoding").
            shape = (-(-width // factor), -(-height // factor))
            image = Image.frombytes(mode, shape, data, "jpeg", mode, "", factor, 0)
        except Exception:  # truncated or corrupt: the general path below says so in Pillow's words
            pass
        else:
            extent = (0, 0, width / factor, height / factor)  # a last partial block is one whole pixel of the image
            return to_rgb_image(image, size, exif=False, fit=fit, frame=(width, height), extent=extent)
    with warnings.catch_warnings():
        # Pillow warns of what it skips in a damaged file (an EXIF tag past the block's end, a malformed MPO) and
        # reads the rest, as this does: the warning only reached stderr, through the scorer's progress bar.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _decode_any(data, size, max_pixels, fit, reduce)


def dct_reduction(source: tuple[int, int], size: tuple[int, int], fit: str) -> int:
    """The largest JPEG DCT reduction (8, 4, 2, or 1: none) that keeps the part of a ``source`` (width,
    height, as shown) the fit uses at least twice ``size`` (height, width): what the resize then averages
    still has two source pixels per output pixel, so the result differs from a full decode's only by
    resampling."""
    most = reduction(source, size, fit)
    return next((factor for factor in _DCT_REDUCTIONS if factor <= most), 1)


def _allow_in_pillow(max_pixels: int) -> None:
    """Pillow refuses on its own, in ``Image.open``, any image over its module-wide ``MAX_IMAGE_PIXELS`` (about
    89.5 million pixels): a larger ``max_pixels`` is raised there. Only ever raised, since threads decoding
    with other limits share it; each call's own limit is ``_check_pixels``."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


# How Pillow's DecompressionBombWarning/Error states the image's size ("Image size (N pixels) exceeds ...").
_PILLOW_SIZE = re.compile(r"Image size \((\d+) pixels\)")


def _decode_any(data: bytes, size: tuple[int, int], max_pixels: int, fit: str, reduce: bool) -> Image.Image:
    """The general path, with Pillow's DecompressionBombWarning an error (``decode_rgb`` sets the filters)."""
    _allow_in_pillow(max_pixels)
    _refuse_unreadable_container(data)
    stream = io.BytesIO(data)
    try:
        image: Image.Image = Image.open(stream, formats=_format_hint(data) or _decodable())
        _check_pixels(*image.size, max_pixels)
        frame = None  # the geometry is the loaded image's own, unless it is decoded reduced
        shows: tuple[float, float] | None = None  # the part of a reduced JPEG, as stored, that shows the frame
        orientation = 1
        if reduce and image.format in _JPEG_FORMATS:
            orientation = _orientation(image)
            width, height = image.size
            frame = (height, width) if orientation in _QUARTER_TURNS else (width, height)
            factor = dct_reduction(frame, size, fit)
            if factor > 1:  # Pillow's JPEG plugin picks the same reduction for this size (Image.draft)
                # at least 1 a side, which Pillow divides by; under the factor, it then reduces less (``shows`` says)
                drafted = image.draft(image.mode, (max(1, width // factor), max(1, height // factor)))
                shows = None if drafted is None else drafted[1][2:]
        image.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's limit is at least max_pixels (_allow_in_pillow), so the image is over ours too: ours is named,
        # with the size Pillow read (its own limit and advice mean nothing to the user).
        found = _PILLOW_SIZE.search(str(exc))
        pixels = f"{found[1]} pixels" if found else "larger"
        raise OverPixelLimit(f"image is {pixels}, over the limit of {max_pixels}") from exc
    except Exception as exc:  # Pillow raises many types for bad data; all mean the same to the caller
        # Pillow names a stream it cannot identify by its repr, a memory address: the same file must get the
        # same message in every process (a batch scorer's error rows are compared and resumed across runs).
        message = str(exc).replace(f" {stream!r}", "")
        # Unidentified: not one of the formats Pillow is allowed to open here (an ICO, a PDF, or no image at all).
        formats = (
            f"; readable formats: {', '.join(DECODABLE_FORMATS)}" if isinstance(exc, UnidentifiedImageError) else ""
        )
        raise ImageDecodeError(f"not a readable image ({type(exc).__name__}: {message}){formats}") from exc
    # A JPEG keeps its orientation only in an EXIF block; without one there is nothing to rotate, and
    # exif_transpose's parse is skipped. Other formats keep it elsewhere (TIFF tags).
    exif = not (image.format in _JPEG_FORMATS and "exif" not in image.info)
    extent = None if shows is None else _shown_extent(image.size, shows, orientation)
    if reduce and frame is None:  # not a JPEG: nothing was reduced while decoding
        image, frame, extent = shrink(image, size, fit, exif)
        exif = False
    return to_rgb_image(image, size, exif=exif, fit=fit, frame=frame, extent=extent)


def reduction(source: tuple[int, int], size: tuple[int, int], fit: str) -> int:
    """The largest whole factor (1: none) that keeps the part of a ``source`` (width, height) the fit uses at
    least twice ``size`` (height, width), as ``dct_reduction`` does for the factors libjpeg offers."""
    return max(1, math.floor(0.5 / get_fit(fit).scale(source, size)))


def shrink(
    image: Image.Image, size: tuple[int, int], fit: str, exif: bool = True
) -> tuple[Image.Image, tuple[int, int], Extent]:
    """A loaded image turned upright (``exif``) and box-averaged down by ``reduction``; its upright (width,
    height) before that, the frame the fit's geometry is taken from; and the extent in the reduced image
    that shows the frame (a last partial block is one pixel, but only a fraction of one of the frame's).
    An image too small to reduce, or of at most ``SHRINK_ABOVE_PIXELS``, comes back as it was (turned), so
    its pixels are what they were without this step."""
    white = declared_white(image)
    if exif:
        try:
            # In place: no full-size copy for the usual image that has nothing to turn.
            ImageOps.exif_transpose(image, in_place=True)
        except Exception:  # a broken EXIF block should not cost the image
            pass
    frame = image.size
    factor = reduction(frame, size, fit)
    if factor == 1 or frame[0] * frame[1] <= SHRINK_ABOVE_PIXELS:
        return image, frame, (0, 0, *frame)
    return _reducible(image, white).reduce(factor), frame, (0, 0, frame[0] / factor, frame[1] / factor)


def _reducible(image: Image.Image, white: float | None) -> Image.Image:
    """The image in a mode whose pixels may be averaged: not palette indices, single bits or 16-bit grey
    (which ``Image.reduce`` refuses), converted as ``_to_rgb`` would convert them; CMYK and CIELAB in RGB."""
    image = _to_8bit(image, white)
    if image.mode in ("CMYK", "LAB"):
        # Converted before averaging, as an image under SHRINK_ABOVE_PIXELS is: neither conversion is linear
        # (CMYK's multiplies by K, CIELAB's goes through colour profiles), so averaging first would set a large
        # picture's colours at sharp edges apart from the same picture's at a smaller size. The full-size
        # conversion costs about a full-size decode (docs/measurements.md): affordable for formats this rare.
        _check_convertible(image)
        return image.convert("RGB")
    if _transparent(image) and image.mode not in ("RGBA", "LA"):
        return image.convert("RGBA")  # before averaging: a colour key names exact pixel values
    if image.mode == "1":
        return image.convert("L")
    if image.mode == "P":
        return image.convert("RGB")
    return image


def _orientation(image: Image.Image) -> int:
    """An opened JPEG's EXIF orientation (1: as stored)."""
    if "exif" not in image.info:
        return 1
    try:
        return image.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block: exif_transpose will not turn it either
        return 1


def _shown_extent(size: tuple[int, int], shows: tuple[float, float], orientation: int) -> Extent:
    """The extent in an image of ``size`` (as stored) once ``exif_transpose`` has turned it, of the part from its
    top left that is ``shows`` (width, height) before: a reduced JPEG's partial last row and column move to
    the top or left edge with the turn or flip that puts them there."""
    swap, mirror_x, mirror_y = _ORIENTATION_MOVES.get(orientation, (False, False, False))
    (width, height), (right, bottom) = size, shows
    if swap:
        width, height, right, bottom = height, width, bottom, right
    left, top = (width - right) if mirror_x else 0, (height - bottom) if mirror_y else 0
    return left, top, left + right, top + bottom


@functools.cache
def _decodable() -> tuple[str, ...]:
    """DECODABLE_FORMATS that this Pillow has a reader for (an unknown name would fail every open)."""
    Image.init()
    return tuple(name for name in DECODABLE_FORMATS if name in Image.OPEN)


def container_format(data: bytes) -> str | None:
    """What an ISO base media file says it holds, in its major or a compatible brand: "AVIF", "HEIC" or "HEIF",
    the most specific of those it names; None for anything else."""
    if data[4:8] != b"ftyp":
        return None
    box = min(int.from_bytes(data[:4], "big"), len(data), 1024)
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, box - 3, 4)}
    named = {_FTYP_BRANDS[brand] for brand in brands if brand in _FTYP_BRANDS}
    return next((name for name in ("AVIF", "HEIC", "HEIF") if name in named), None)


def _refuse_unreadable_container(data: bytes) -> None:
    """Name a HEIC or HEIF photo (or an AVIF one, where this Pillow has no AVIF plugin) in its refusal: Pillow
    only says it cannot identify the file."""
    name = container_format(data)
    if name is not None and name not in _decodable():
        raise ImageDecodeError(
            f"{name} images are not readable here (save the photo as JPEG or PNG); "
            f"readable formats: {', '.join(_decodable())}"
        )


def _format_hint(data: bytes) -> tuple[str, ...] | None:
    for magic, formats in _MAGIC_FORMATS:
        if data.startswith(magic):
            return formats
    return None


def _file_bytes(data: object) -> bytes:
    """``data`` as bytes where it is an image file's (bytearray and memoryview too); for anything else, the
    caller's error, named with the call that takes it, where a path, a PIL image or an array would fail deep
    inside with an AttributeError or a TypeError."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)):
        hint = "; a file's are pathlib.Path(name).read_bytes()"
    elif isinstance(data, Image.Image):
        hint = "; a PIL image is fitted by to_rgb_image(image, size, fit=...)"
    elif isinstance(data, np.ndarray):
        hint = "; an array of pixels is fitted by to_rgb_image(PIL.Image.fromarray(array), size, fit=...)"
    else:
        hint = ""
    raise UsageError(f"image decoding takes the bytes of an image file, got {type(data).__name__}{hint}")


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


def _check_scans(data: bytes) -> None:
    """Refuse a JPEG of more than ``MAX_JPEG_SCANS`` scans before libjpeg decodes any. Counted as the start-of-scan
    markers in the whole file: entropy-coded data never holds one (a 0xFF there is followed by 0x00), so the count
    is exact but for the bytes of metadata (EXIF, ICC), which only ever add to it."""
    scans = data.count(_START_OF_SCAN_MARKER)
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(f"JPEG of {scans} scans, over the limit of {MAX_JPEG_SCANS}")


# Segments a plain JPEG may have before its frame header: JFIF (APP0), quantisation and Huffman tables,
# restart interval, comments. Anything else (EXIF orientation in APP1, ICC or multi-picture APP2, Adobe
# APP14, ...) is left to Pillow's JPEG plugin.
_PLAIN_SEGMENTS = frozenset({0xE0, 0xDB, 0xC4, 0xDD, 0xFE})
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended sequential, progressive
_LAYER_MODES = {1: "L", 3: "RGB"}
_START_OF_SCAN = 0xDA


def plain_jpeg_frame(data: bytes) -> tuple[str, tuple[int, int]] | None:
    """(mode, (width, height)) of an 8-bit grey or colour JPEG with nothing before its first scan but its frame
    header and the segments above, read from the headers alone; None for anything else, decoded the general
    way."""
    if not data.startswith(_JPEG_MAGIC):
        return None
    found = None
    i, end = 2, len(data)
    while i + 4 <= end and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == _START_OF_SCAN:
            return found
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _HUFFMAN_FRAMES and found is None:
            frame = data[i + 4 : i + 2 + length]
            if length < 8 or len(frame) < 6 or frame[0] != 8:
                return None
            height, width, mode = (frame[1] << 8) | frame[2], (frame[3] << 8) | frame[4], _LAYER_MODES.get(frame[5])
            if not (mode and width and height):
                return None
            # The segments between the frame header and the scan count too: Pillow reads an EXIF block there.
            found = mode, (width, height)
        elif marker not in _PLAIN_SEGMENTS or length < 2:
            return None
        i += 2 + length
    return None


def to_rgb_image(
    image: Image.Image,
    size: tuple[int, int] = (32, 32),
    exif: bool = True,
    *,
    fit: str,
    frame: tuple[int, int] | None = None,
    extent: Extent | None = None,
) -> Image.Image:
    """An opened image upright, in RGB, fitted to ``size`` (height, width) the way ``fit`` says.
    ``exif=False``: the caller knows the image has no EXIF orientation to apply. ``frame``: the upright
    (width, height) before a reduced-size decode, which sets the fit's geometry; ``extent``: the part of
    the image that shows it (default: all of it)."""
    _check_size(size)
    white = declared_white(image)  # read before exif_transpose's copy, which keeps neither format nor tags
    if exif:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block should not cost the image
            pass
    return fit_image(_to_rgb(_to_8bit(image, white)), size, fit, frame, extent)


def _check_convertible(image: Image.Image) -> None:
    if image.mode == "LAB" and not features.check("littlecms2"):
        # Pillow converts CIELAB through littlecms; without it the conversion fails with an ImportError.
        raise ImageDecodeError(
            "CIELAB images are not readable here (this Pillow was built without littlecms2); save the image as RGB"
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit image (``_to_8bit``'s) in RGB, clear pixels on white."""
    _check_convertible(image)
    if _transparent(image):
        # Transparent pixels go onto white, which is what a viewer shows.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


# A float image whose largest value is under this is in [0, 1], overshoot included (a bicubic or Lanczos resize
# rings past 1 at sharp edges); read on the [0, 255] scale it would be black to the eye (under 2 of 255).
FLOAT_UNIT_BELOW = 2.0


# TIFF tags: bits per sample, and the sample format (2: signed integers).
_BITS_PER_SAMPLE = 258
_SAMPLE_FORMAT = 339
_SIGNED = 2


def declared_white(image: Image.Image) -> float | None:
    """The value white has in an integer grey image as its file declares its depth (16 bits for Pillow's
    "I;16" modes and a PGM over 8 bits, a TIFF's BitsPerSample up to 16, one bit less where signed); None
    where the file declares none that says it: another mode, or 32 bits (Pillow writes every mode "I" image,
    8-bit values included, as a 32-bit TIFF)."""
    if image.mode == "I" and image.format == "PPM":
        return 65535.0  # Pillow reads a PGM of any maxval above 255 onto the 16-bit scale
    if image.mode not in ("I", "I;16", "I;16B", "I;16L"):
        return None
    tags = getattr(image, "tag_v2", None) if image.format == "TIFF" else None
    bits = _first(tags.get(_BITS_PER_SAMPLE)) if tags is not None else None
    if bits is not None and 1 <= bits <= 16:
        signed = _first(tags.get(_SAMPLE_FORMAT)) == _SIGNED if tags is not None else False
        return float(2 ** (bits - signed) - 1)
    return 65535.0 if image.mode != "I" else None


def _first(value: object) -> int | None:
    """A TIFF tag's first value where it is a whole number (Pillow gives one value per sample, as a tuple)."""
    if isinstance(value, tuple) and value:
        value = value[0]
    return whole_number(value)


def _to_8bit(image: Image.Image, white: float | None = None) -> Image.Image:
    """``image`` with 8-bit samples; ``white``: the value white has in integer grey (``declared_white``'s), where
    its file declares a depth."""
    if image.mode == "La":
        # A TIFF's grey with associated (premultiplied) alpha: Pillow converts "La" to nothing but "LA".
        return image.convert("LA")
    key = image.info.get("transparency")
    if image.mode == "RGB" and isinstance(key, tuple) and max(key) > 255:
        # A 16-bit RGB PNG: Pillow keeps each sample's high byte, but compares the key's low bytes with them, so
        # other pixels were clear and the key's were not. Keyed on the high bytes too (a pixel within 1/256 of the
        # key in every channel is clear with it: the 16-bit samples are gone by now).
        image.info["transparency"] = tuple(value >> 8 for value in key)
        return image
    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image
    # 16/32-bit integer or float grey: scaled to 8 bits, where Pillow's conversion would clip it (16-bit images
    # come out white, floats in [0, 1] black). Floats below FLOAT_UNIT_BELOW are read as scikit-image and
    # OpenCV write them (1.0 is white; a resize's overshoot past 1 clips); larger ones as the integer scales.
    # Values past 16 bits (32-bit counts, depths) have no scale that says where white is: their brightest pixel
    # is. NaN and infinities are black.
    # One float64 copy, scaled in place: at the pixel limit each further copy is hundreds of MB, from a file of a
    # few KB (a zlib stream of one grey level).
    arr = np.nan_to_num(np.asarray(image, dtype=np.float64), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    # a 16-bit grey PNG's colour key (tRNS) names a 16-bit value: its pixels are clear, as an 8-bit key's are
    clear = arr == key if isinstance(key, int) and image.mode != "F" else None  # integer samples, exact in float64
    top = arr.max(initial=0.0)
    if image.mode == "F" and top < FLOAT_UNIT_BELOW:
        peak = 1.0
    else:
        # The file's depth says where white is (a dark 16-bit image stays dark); a 32-bit file's does not
        # (the 8-bit values Pillow writes as one): its values guess the scale.
        white = declared_white(image) if white is None else white
        peak = white if white is not None else top if top > 65535 else 65535.0 if top > 255 else 255.0
    arr *= 255.0 / peak
    grey = Image.fromarray(np.rint(np.clip(arr, 0, 255, out=arr), out=arr).astype(np.uint8), "L")
    if clear is not None:
        return Image.merge("LA", (grey, Image.fromarray(np.where(clear, 0, 255).astype(np.uint8), "L")))
    return grey


# Modes whose "transparency" (a PNG's tRNS chunk, a GIF's) names a palette entry or a colour key: the pixels
# of that index or value are clear. Pillow turns the key into alpha when it converts them to RGBA.
KEYED_MODES = ("P", "1", "L", "RGB")


def _transparent(image: Image.Image) -> bool:
    if image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA":
        return True  # alpha in the palette itself (a colour-mapped TGA's 32-bit map, a JPEG 2000's), with no key
    return image.mode in ("RGBA", "LA", "PA") or (image.mode in KEYED_MODES and "transparency" in image.info)


def in_unit_range(values: np.ndarray) -> bool:
    """Whether every value is one a decoded image can give the models, in [0, 1]: not NaN (which min and max carry
    along), infinite, 0-255 or normalised by hand (the graphs normalise themselves)."""
    return values.size == 0 or (float(values.min()) >= 0.0 and float(values.max()) <= 1.0)


def to_model_input(images: Sequence[np.ndarray] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Stack uint8 [H, W, 3] images into the float32 [N, 3, H, W] tensor in [0, 1] every model takes
    (written into ``out``, a C-contiguous float32 [N, 3, H, W], when given)."""
    if isinstance(images, np.ndarray):
        batch = images
    else:
        arrays = [np.asarray(image) for image in images]
        shapes = sorted({f"{list(a.shape)}" for a in arrays})
        if len(shapes) != 1:  # none, or images of several sizes: numpy's own words name neither
            raise UsageError(
                "to_model_input takes uint8 [H, W, 3] images of one size (decode_image's), got "
                + (
                    f"images of shapes {', '.join(shapes[:4])}"
                    if shapes
                    else "none: an empty batch is an array [0, H, W, 3]"
                )
            )
        batch = np.stack(arrays)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        # float pixels already in [0, 1] would come out near black, and an NCHW batch transposed into nonsense
        raise UsageError(
            f"to_model_input takes uint8 [N, H, W, 3] images (decode_image's), got {batch.dtype} {list(batch.shape)}"
        )
    shape = (batch.shape[0], 3, *batch.shape[1:3])
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != shape:
        raise UsageError(f"to_model_input's out must be float32 {list(shape)}, got {out.dtype} {list(out.shape)}")
    # One pass (uint8 -> float32, scaled, into NCHW) instead of a converted copy and then a scaled one.
    return np.multiply(batch.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=out, dtype=np.float32)


def pixels_to_model_input(
    pixels: bytes, count: int, size: tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """``to_model_input`` of ``count`` images given as ``decode_pixels`` output joined together."""
    return to_model_input(np.frombuffer(pixels, dtype=np.uint8).reshape(count, *size, 3), out)
