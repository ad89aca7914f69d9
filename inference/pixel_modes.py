"""An opened image of any mode Pillow reads turned into 8-bit RGB: deeper grey scaled to 8 bits as its file
declares, transparent pixels composited on white, CMYK and CIELAB converted, and the result fitted to the model's
input size.

The decode path (``inference.preprocess``) calls it on every image; it is public so that a caller holding a PIL
image already gets the same pixels as one holding the file's bytes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps, features

from .fits import Extent, fit_image
from .image_limits import ImageDecodeError, _check_size, whole_number


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
