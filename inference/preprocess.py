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
scaled to 8 bits (``pixel_modes._to_8bit``); a truncated file refused, never decoded in part. An embedded ICC profile is
ignored: the samples are read as sRGB, as CIFAR's were, so a wide-gamut photo (Display P3, Adobe RGB) comes out
a little less saturated than a colour-managed viewer shows it, the same way in training and in serving. HEIC is
refused by name.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UsageError
from .fits import Extent, get_fit
from .image_formats import (
    _JPEG_MAGIC,
    DECODABLE_FORMATS,
    _check_scans,
    _decodable,
    _format_hint,
    _refuse_unreadable_container,
    plain_jpeg_frame,
)
from .image_limits import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    OverPixelLimit,
    _check_max_pixels,
    _check_pixels,
    _check_size,
)
from .pixel_modes import _reducible, declared_white, to_rgb_image

# A non-JPEG image up to this size is fitted from its full-size pixels, as it always was: its full-size
# copies (turned, converted, composited) cost little, a 6000x6000 RGBA PNG's about 1 s and 400 MiB
# (docs/measurements.md, "Decoding").
SHRINK_ABOVE_PIXELS = 1_000_000
# What Pillow names a JPEG: a phone's multi-picture JPEG (MPO: the photo, then a depth map or preview) is one,
# read as its first picture, and decoded reduced as any JPEG is.
_JPEG_FORMATS = ("JPEG", "MPO")
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
