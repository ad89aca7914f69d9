"""How an image whose shape differs from the model's input is made to fit it: one entry per choice.

The model card's input spec names one (``InputSpec.fit``); a request or ``service score --fit`` may
name another; training's folder reader uses the recipe's. All of them go through ``fit_image``, so
the pixels a model is trained on and the pixels it is served come out of the same steps.

A new choice is one entry here and its name in ``FitName``: the manifest's schema, the service's ``fit`` field,
the scorer's and export's ``--fit`` read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from PIL import Image

from .errors import UsageError

# Letterbox colour: mid-grey is what the normalised input is closest to zero at for natural-image
# datasets, so the bars carry as little signal as a constant can.
PAD_COLOR = (128, 128, 128)
RESAMPLE = Image.Resampling.BILINEAR

Size = tuple[int, int]  # (height, width), as the input spec's shape has it
# (left, top, right, bottom) of the part of an image that shows its frame: all of it, or less where a reduction by
# a factor that does not divide the frame left a row and a column averaged from fewer source pixels than the others
# (the last ones, or the first ones of a JPEG reduced as stored and then turned upright)
Extent = tuple[float, float, float, float]


@dataclass(frozen=True)
class Fit:
    name: str
    help: str  # what it does, for help texts and the OpenAPI document
    # (an RGB image, the target size, the frame's shown (width, height) before any reduced-size decode,
    # the extent: the part of the image that shows that frame, in its own pixels)
    # -> an image of exactly ``size``; the frame sets the geometry, so a reduced decode rounded up to
    # whole pixels is cropped and padded like the full one
    apply: Callable[[Image.Image, Size, tuple[int, int], Extent], Image.Image]
    # Output pixels per source pixel along the axis that needs the most detail: a reduced-size decode
    # (JPEG DCT scaling, or Image.reduce for other formats) may shrink the source until this reaches 1/2, and no
    # further.
    scale: Callable[[tuple[int, int], Size], float]  # (source width, height), target size


def _squash(image: Image.Image, size: Size, frame: tuple[int, int], extent: Extent) -> Image.Image:
    height, width = size
    return image if image.size == (width, height) else image.resize((width, height), RESAMPLE, box=extent)


def _center_crop(image: Image.Image, size: Size, frame: tuple[int, int], extent: Extent) -> Image.Image:
    """Resize the shorter side to the target and keep the centre: one resize of the centre box, which is
    a resize-then-crop without the intermediate image."""
    height, width = size
    if image.size == (width, height):
        return image
    scale = max(width / frame[0], height / frame[1])
    # The centre box as a share of the frame, laid on the image as decoded.
    # (at most all of it: the division may leave 1 + 1e-16, and a box past the edge is refused)
    share_w, share_h = min(1.0, width / scale / frame[0]), min(1.0, height / scale / frame[1])
    shown_w, shown_h = extent[2] - extent[0], extent[3] - extent[1]
    box_w, box_h = share_w * shown_w, share_h * shown_h
    left, top = extent[0] + (shown_w - box_w) / 2, extent[1] + (shown_h - box_h) / 2
    return image.resize((width, height), RESAMPLE, box=(left, top, left + box_w, top + box_h))


def _pad(image: Image.Image, size: Size, frame: tuple[int, int], extent: Extent) -> Image.Image:
    """Resize the longer side to the target and centre the whole frame on PAD_COLOR bars."""
    height, width = size
    if image.size == (width, height):
        return image
    scale = min(width / frame[0], height / frame[1])
    inner = (max(1, min(width, round(frame[0] * scale))), max(1, min(height, round(frame[1] * scale))))
    canvas = Image.new("RGB", (width, height), PAD_COLOR)
    canvas.paste(image.resize(inner, RESAMPLE, box=extent), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def _larger_scale(source: tuple[int, int], size: Size) -> float:
    return max(size[1] / source[0], size[0] / source[1])


def _smaller_scale(source: tuple[int, int], size: Size) -> float:
    return min(size[1] / source[0], size[0] / source[1])


FITS: dict[str, Fit] = {
    f.name: f
    for f in (
        Fit(
            "center_crop",
            "resize the shorter side to the model's input and keep the centre (the sides of a wide photo are cut)",
            _center_crop,
            _larger_scale,
        ),
        Fit(
            "squash",
            "resize straight to the model's input, whatever the aspect ratio (a wide photo is squeezed)",
            _squash,
            _larger_scale,
        ),
        Fit(
            "pad",
            "resize the longer side to the model's input and pad the rest with grey bars (the whole frame is kept)",
            _pad,
            _smaller_scale,
        ),
    )
}
# The manifest's type for a fit: the table's names, in its order. Spelt out, since a type checker cannot read a
# Literal off the table; tests/test_fit.py checks that they agree.
FitName = Literal["center_crop", "squash", "pad"]
# What a new export and training's folder reader use; the common practice for classifiers.
DEFAULT_FIT: FitName = "center_crop"
# What a model card that names no fit means: its images were resized straight.
LEGACY_FIT: FitName = "squash"


def get_fit(name: str) -> Fit:
    """The entry for ``name``; a UsageError (a ValueError) naming the valid ones otherwise."""
    try:
        return FITS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown fit {name!r}; valid: {', '.join(FITS)}") from None


def fit_image(
    image: Image.Image,
    size: Size,
    fit: str,
    frame: tuple[int, int] | None = None,
    extent: Extent | None = None,
) -> Image.Image:
    """``image`` (RGB) fitted to ``size`` (height, width) the way ``fit`` names (no default: the model card's,
    ``card.input.fit``, or a request's choice). ``frame``: the (width,
    height) the image had as shown before a reduced-size decode (default: its own size); ``extent``: the part
    of the image that shows it (default: all of it)."""
    return get_fit(fit).apply(image, size, frame or image.size, extent or (0, 0, *image.size))


def fit_help() -> str:
    """'center_crop: ...; squash: ...; pad: ...', for help texts."""
    return "; ".join(f"{f.name}: {f.help}" for f in FITS.values())
