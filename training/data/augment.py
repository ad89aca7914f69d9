"""Batch augmentation on uint8 image tensors, on whatever device holds them.

Whole batches are augmented with tensor ops (as airbench does) instead of
per-image PIL transforms: on a GPU the data never leaves the device, and on
this 2-core CPU it costs a few percent of a training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AugmentParams:
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    color_jitter: float = 0.0
    vertical_flip: bool = False
    # Airbench's flip: each image gets a random flip in the first epoch and is mirrored relative to it
    # in every odd epoch after, so every image is seen both ways in any two consecutive epochs.
    alternate_flip: bool = False
    pad_mode: str = "zeros"  # or "reflect" (airbench's translation)
    # Progressive resizing: ((first epoch counting from 1, size), ...) in epoch order; each batch is
    # downscaled to the size of its epoch after the other augmentations. Empty: the data's own size.
    progressive_sizes: tuple[tuple[int, int], ...] = ()


PAD_MODES = ("zeros", "reflect")
# uint8 times float32(1/255), as the service scales its input (inference.preprocess.to_model_input): dividing by
# 255 instead puts 126 of the 256 values one float32 step away from the served ones.
UNIT_SCALE = 1.0 / 255.0


def seeded(seed: int) -> torch.Generator:
    """A CPU generator for a seed derived from train.seed: the derivations multiply it by a stride, past the range
    torch takes ([-2**63, 2**64)) for a train.seed the config allows (below 2**63), so a seed outside it wraps."""
    return torch.Generator().manual_seed(seed if -(2**63) <= seed < 2**64 else seed % 2**64)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as float32 in [0, 1], bit for bit the values the service feeds the model."""
    return x.float().mul_(UNIT_SCALE)


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator, mode: str = "zeros") -> torch.Tensor:
    """Pad by ``padding`` (zeros or reflection) and crop back to the original size at a random offset per image."""
    n, c, h, w = x.shape
    if mode not in PAD_MODES:
        raise ValueError(f"unknown pad mode {mode!r}; valid: {', '.join(PAD_MODES)}")
    if mode == "reflect":
        # Reflection padding is not implemented for uint8; the values stay exact through float.
        padded = torch.nn.functional.pad(x.float(), (padding,) * 4, mode="reflect").to(x.dtype)
    else:
        padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen, device=gen.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    # Two gathers (rows, then columns) keep it one vectorised op per axis.
    by_rows = padded.gather(2, rows.expand(n, c, h, padded.shape[3]))
    return by_rows.gather(3, cols.expand(n, c, h, w))


def random_flip(x: torch.Tensor, gen: torch.Generator, dim: int = 3) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=gen, device=gen.device).to(x.device) < 0.5
    return flip_where(x, mask, dim)


def flip_where(x: torch.Tensor, mask: torch.Tensor, dim: int = 3) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], x.flip(dim), x)


def alternating_flip_mask(base: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images to mirror in ``epoch``: the first epoch's random choice ``base``, inverted in odd epochs."""
    return base ^ bool(epoch % 2)


def size_at(sizes: tuple[tuple[int, int], ...], epoch: int, full: int) -> int:
    """The training image size of 0-based ``epoch`` under a progressive-resizing plan (``full`` before its first
    step, and always when the plan is empty)."""
    size = full
    for first_epoch, step_size in sizes:
        if epoch + 1 >= first_epoch:
            size = step_size
    return size


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Float [N, C, H, W] downscaled to size x size; antialiased so the small images are averages, not samples."""
    if x.shape[-2:] == (size, size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def cutout(x: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """Zero a length x length square at a random centre per image (DeVries & Taylor, 2017); it may overhang."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen, device=gen.device).to(x.device)
    cx = torch.randint(0, w, (n,), generator=gen, device=gen.device).to(x.device)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= (cy - length // 2)[:, None]) & (ys < (cy - length // 2 + length)[:, None])
    in_x = (xs >= (cx - length // 2)[:, None]) & (xs < (cx - length // 2 + length)[:, None])
    mask = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(mask[:, None], 0)


# torchvision's ColorJitter steps, in its numbers: its rgb_to_grayscale weights (ITU-R 601, red rounded to 0.2989),
# and a clamp to [0, 1] after each step. Unlike ColorJitter, which draws one set of factors and one order per call
# (per batch), each image draws its own.
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
JITTER_STEPS = ("brightness", "contrast", "saturation")


def jitter_draws(n: int, strength: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: a factor in [1 - s, 1 + s] for each of JITTER_STEPS (float [N, 3]), and the order the steps run
    in (long [N, 3], a permutation of 0, 1, 2: ColorJitter's random order)."""
    factors = 1 + (torch.rand(n, len(JITTER_STEPS), generator=gen, device=gen.device) * 2 - 1) * strength
    order = torch.rand(n, len(JITTER_STEPS), generator=gen, device=gen.device).argsort(dim=1)
    return factors, order


def apply_jitter(x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """ColorJitter's steps on float [N, 3, H, W] in [0, 1] with the given factors and order (see jitter_draws):
    each image as torchvision.transforms.v2.functional's adjust_brightness, adjust_contrast and adjust_saturation
    give it. Every step blends the image with a reference, black, its grayscale's mean or its grayscale, so one
    batched blend per position in the order runs each image's own step there."""
    factors, order = factors.to(x.device), order.to(x.device)
    rows = torch.arange(len(x), device=x.device)
    wr, wg, wb = GRAY_WEIGHTS
    contrast, saturation = JITTER_STEPS.index("contrast"), JITTER_STEPS.index("saturation")
    for position in range(order.shape[1]):
        step = order[:, position, None, None, None]
        f = factors[rows, order[:, position]][:, None, None, None]
        gray = wr * x[:, 0:1] + wg * x[:, 1:2] + wb * x[:, 2:3]
        # the reference's share (1 - f), on the grayscale for saturation, on its mean for contrast, and on nothing
        # (black) for brightness: the terms a step does not use are exact zeros
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        reference = gray * ((step == saturation) * (1 - f)) + mean * ((step == contrast) * (1 - f))
        x = (x * f).add_(reference).clamp_(0, 1)
    return x


def color_jitter(x: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """ColorJitter(brightness=s, contrast=s, saturation=s) per image; x is float in [0, 1]."""
    return apply_jitter(x, *jitter_draws(x.shape[0], strength, gen))


def augment_batch(
    x: torch.Tensor, params: AugmentParams, gen: torch.Generator, flip_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """uint8 [N, 3, H, W] in, float32 [N, 3, H, W] in [0, 1] out. ``flip_mask`` (bool [N]) replaces the random
    horizontal flip when given (the loader's alternating flip)."""
    if params.crop_padding:
        x = random_crop(x, params.crop_padding, gen, params.pad_mode)
    if flip_mask is not None:
        x = flip_where(x, flip_mask, dim=3)
    elif params.flip:
        x = random_flip(x, gen, dim=3)
    if params.vertical_flip:
        x = random_flip(x, gen, dim=2)
    if params.cutout:
        x = cutout(x, params.cutout, gen)
    out = to_unit(x)
    if params.color_jitter:
        out = color_jitter(out, params.color_jitter, gen)
    return out
