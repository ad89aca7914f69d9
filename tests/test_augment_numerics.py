"""The training augmentations' numbers against the published methods they follow (airbench's batch_crop and
alternating flip, DeVries & Taylor's Cutout, torchvision's ColorJitter), and where bf16 autocast is turned on by
default."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

import training.inference as inference
from training.data import augment
from training.data.arrays import ImageArrays
from training.data.augment import AugmentParams, cutout, random_crop, seeded, to_unit
from training.data.loader import TensorLoader
from training.data.mix import MixParams


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, capabilities: dict[int, tuple[int, int]], current: int = 0) -> None:
    """CUDA GPUs of these compute capabilities, with torch's own answers: is_bf16_supported() asks the current
    device and, by default, says yes for one that only emulates bf16."""

    def capability(device: torch.device | int | None = None) -> tuple[int, int]:
        index = device.index if isinstance(device, torch.device) else device
        return capabilities[current if index is None else index]

    def bf16_supported(including_emulation: bool = True) -> bool:
        return capability(current)[0] >= 8 or including_emulation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", bf16_supported)
    monkeypatch.setattr(torch.version, "hip", None)


def test_bf16_auto_stays_off_on_a_gpu_that_only_emulates_it(monkeypatch):
    """`train.bf16: auto` turned bf16 on for a T4 or V100 (compute capability 7): torch's is_bf16_supported()
    counts emulation in by default, which trains many times slower than float32."""
    _fake_gpus(monkeypatch, {0: (7, 5)})
    assert not inference.resolve_bf16("auto", torch.device("cuda"))
    assert inference.resolve_bf16(True, torch.device("cuda"))  # asked for, it is still given


def test_bf16_auto_asks_the_gpu_it_trains_on():
    """On a host with an A100 as device 0 and a V100 as device 1, `device=cuda:1` got bf16 from device 0's answer
    (and `cuda:0` none where the current device was the V100)."""
    with pytest.MonkeyPatch.context() as mp:
        _fake_gpus(mp, {0: (8, 0), 1: (7, 0)}, current=0)
        assert inference.resolve_bf16("auto", torch.device("cuda:0"))
        assert not inference.resolve_bf16("auto", torch.device("cuda:1"))
    with pytest.MonkeyPatch.context() as mp:
        _fake_gpus(mp, {0: (8, 0), 1: (7, 0)}, current=1)
        assert inference.resolve_bf16("auto", torch.device("cuda:0"))


def test_bf16_auto_is_off_for_cuda_when_no_gpu_is_there(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not inference.hardware_bf16(torch.device("cuda"))


def test_translation_is_airbenchs_crop_uniform_over_every_shift_both_ways():
    """Each output is the padded image cropped at one of the (2r + 1)^2 offsets (airbench94's batch_crop,
    torch.randint(-r, r + 1) per axis), every offset drawn about equally often."""
    r, n, side = 2, 5000, 6
    # every pixel value distinct, so the offset can be read back from one pixel
    x = torch.arange(side * side, dtype=torch.uint8).view(1, 1, side, side).expand(n, 1, side, side).contiguous()
    for mode in ("zeros", "reflect"):
        out = random_crop(x, r, seeded(0), mode)
        pad = F.pad(x[:1].float(), (r,) * 4, mode="reflect" if mode == "reflect" else "constant").to(torch.uint8)
        views = {
            (dy, dx): pad[0, :, dy : dy + side, dx : dx + side] for dy in range(2 * r + 1) for dx in range(2 * r + 1)
        }
        offsets: Counter[tuple[int, int]] = Counter()
        for img in out:
            found = [o for o, v in views.items() if torch.equal(img, v)]
            assert len(found) == 1, mode
            offsets[found[0]] += 1
        assert set(offsets) == set(views), mode
        expected = n / len(views)  # 200; a binomial standard deviation is 14
        assert all(abs(count - expected) < 6 * expected**0.5 for count in offsets.values()), (mode, offsets)


def test_cutout_is_a_length_square_centred_anywhere_and_clipped_at_the_borders():
    """DeVries & Taylor's Cutout (their code: a centre uniform over the image, the square clipped where it
    overhangs), on the uint8 image: the square is black."""
    n, side, length = 4000, 10, 4
    x = torch.full((n, 3, side, side), 200, dtype=torch.uint8)
    out = cutout(x, length, seeded(1))
    assert set(out.unique().tolist()) == {0, 200}
    holes = out[:, 0] == 0
    assert torch.equal(holes[:, None].expand_as(out), out == 0)  # every channel alike
    rows, cols = holes.any(2), holes.any(1)
    centres: Counter[tuple[int, int]] = Counter()
    for hole, row, col in zip(holes, rows, cols):
        ys, xs = row.nonzero().flatten(), col.nonzero().flatten()
        # one rectangle, as wide as the square where it does not touch a border
        assert int(hole.sum()) == len(ys) * len(xs)
        for span in (ys, xs):
            assert int(span[-1] - span[0]) + 1 == len(span)
            if span[0] > 0 and span[-1] < side - 1:
                assert len(span) == length
        top = int(ys[-1]) + 1 - length if ys[0] == 0 else int(ys[0])
        left = int(xs[-1]) + 1 - length if xs[0] == 0 else int(xs[0])
        centres[(top + length // 2, left + length // 2)] += 1
    assert set(centres) == {(cy, cx) for cy in range(side) for cx in range(side)}
    # the mean area of a clipped square: (sum over centres of the rows kept)^2 / side^2
    kept = np.mean([min(c + length - length // 2, side) - max(c - length // 2, 0) for c in range(side)])
    assert holes.float().sum((1, 2)).mean().item() == pytest.approx(kept**2, rel=0.03)


def test_an_evaluation_loader_neither_augments_nor_mixes_and_a_training_one_repeats_for_a_seed():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    data = ImageArrays(images, np.arange(12) % 3, ["a", "b", "c"])
    params = AugmentParams(crop_padding=2, pad_mode="reflect", flip=True, alternate_flip=True, cutout=3)
    mix = MixParams(mixup_alpha=1.0, cutmix_alpha=1.0)
    evaluation = TensorLoader(data, 5, augment=params, mix=mix)
    seen = torch.cat([x for x, _ in evaluation])
    assert torch.equal(seen, to_unit(torch.from_numpy(images).permute(0, 3, 1, 2)))

    def epoch(loader: TensorLoader, number: int) -> list[torch.Tensor]:
        loader.set_epoch(number)
        return [x for x, _ in loader]

    straight = TensorLoader(data, 4, train=True, augment=params, mix=mix, seed=5)
    batches = [epoch(straight, e) for e in range(3)]
    resumed = TensorLoader(data, 4, train=True, augment=params, mix=mix, seed=5)  # a resume builds it anew
    assert all(torch.equal(a, b) for a, b in zip(batches[2], epoch(resumed, 2)))
    assert not torch.equal(batches[1][0], batches[2][0])


def test_color_jitter_is_torchvisions_colorjitter_steps_per_image_in_a_random_order():
    """Each image as torchvision's adjust_brightness, adjust_contrast and adjust_saturation give it, for its own
    factors and in its own order. It differed by up to 0.29: no clamp between the steps, contrast around the mean
    of the RGB values rather than of the grayscale image, and always the same order."""
    n, strength = 600, 0.8
    gen = seeded(3)
    # saturated and dark pixels among them, where a missing clamp between steps shows
    x = (torch.rand(n, 3, 8, 8, generator=gen) * 1.6 - 0.3).clamp(0, 1)
    factors, order = augment.jitter_draws(n, strength, gen)
    out = augment.apply_jitter(x, factors, order)
    steps = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}
    adjust = [steps[name] for name in augment.JITTER_STEPS]
    for i in range(n):
        expected = x[i]
        for step in order[i].tolist():
            expected = adjust[step](expected, factors[i, step].item())
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0, msg=f"image {i}, order {order[i].tolist()}")
    # every one of the 3! orders is drawn, and the factors span [1 - s, 1 + s]
    assert len({tuple(o) for o in order.tolist()}) == 6
    assert 1 - strength <= factors.min() < 1 - 0.9 * strength and 1 + 0.9 * strength < factors.max() <= 1 + strength
    # color_jitter is these draws applied
    again = augment.color_jitter(x, strength, seeded(7))
    assert torch.equal(again, augment.apply_jitter(x, *augment.jitter_draws(n, strength, seeded(7))))
