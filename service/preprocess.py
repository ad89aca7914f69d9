"""Image decoding and preprocessing shared by the service, batch scoring and training's folder reader.

One implementation on purpose: the pixels a model is trained on and the
pixels it is served must come out of the same steps (EXIF rotation, RGB
conversion, bilinear resize to the model's input size).
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

# Pillow's own bomb guard warns at ~89 MP and fails at twice that; a classifier
# with 32x32 inputs has no use for anything near that, so the limit is far lower.
DEFAULT_MAX_PIXELS = 40_000_000
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
# Naming the format up front skips Pillow's probe of every registered format: ~10 us of the ~100 us a
# 32x32 JPEG takes (measured with time.process_time on this CPU). Anything else is probed as usual.
_MAGIC_FORMATS = ((b"\xff\xd8\xff", ("JPEG",)), (b"\x89PNG\r\n\x1a\n", ("PNG",)))


class ImageDecodeError(ValueError):
    """The bytes are not a readable image, or the image is too large. The message says which."""


def decode_image(data: bytes, size: tuple[int, int] = (32, 32), max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode image bytes to uint8 [H, W, 3] RGB of ``size`` (height, width)."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=_format_hint(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}")
            image.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large: {exc}") from exc
    except Exception as exc:  # Pillow raises many types for bad data; all mean the same to the caller
        raise ImageDecodeError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    return to_rgb_array(image, size)


def _format_hint(data: bytes) -> tuple[str, ...] | None:
    for magic, formats in _MAGIC_FORMATS:
        if data.startswith(magic):
            return formats
    return None


def to_rgb_array(image: Image.Image, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    # A JPEG keeps its orientation only in an EXIF block; without one there is nothing to rotate, and
    # skipping exif_transpose's parse saves ~12 us per image. Other formats keep it elsewhere (TIFF tags).
    if not (image.format == "JPEG" and "exif" not in image.info):
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # a broken EXIF block should not cost the image
            pass
    image = _to_rgb(image)
    height, width = size
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping everything to white.
        arr = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).astype(np.uint8), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels go onto white, which is what a viewer shows.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def to_model_input(images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    """Stack uint8 [H, W, 3] images into the float32 [N, 3, H, W] tensor in [0, 1] every model takes."""
    batch = np.stack(images) if not isinstance(images, np.ndarray) else images
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1.0 / 255.0)
