"""Grad-CAM over every registered architecture: a map of the input's size, placed over the pixels it reads, and a
clear refusal where a model has no spatial layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from conftest import tiny_overrides
from training.__main__ import main
from training.models import DEFAULT_MEAN, DEFAULT_STD, create_model, list_models
from training.reports.gradcam import GradCAM, NoSpatialMap, _upsampling

RESNET = dict(widths=(8, 8, 16, 16))
# Each registered model, or the generic constructor of a fixed-size one, at a size that runs in milliseconds.
TINY: dict[str, tuple[str, dict]] = {
    "resnet18": ("resnet18", RESNET),
    "resnet34": ("resnet34", RESNET),
    "resnet50": ("resnet50", dict(widths=(4, 4, 8, 8))),
    "se_resnet18": ("se_resnet18", dict(RESNET, reduction=4)),
    "se_resnet34": ("se_resnet34", dict(RESNET, reduction=4)),
    "ca_resnet18": ("ca_resnet18", dict(RESNET, reduction=4)),
    "resnext29": ("resnext29", dict(cardinality=2, base_width=4)),
    "resnext29_2x64d": ("resnext29", dict(cardinality=2, base_width=4)),
    "resnext29_8x64d": ("resnext29", dict(cardinality=8, base_width=4)),
    "res2net50": ("res2net50", dict(base_width=64, widths=(8, 8, 8, 8))),
    "res2net50_v1b": ("res2net50_v1b", dict(base_width=64, widths=(8, 8, 8, 8))),
    "res2net50_ca_v1b": ("res2net50_ca_v1b", dict(base_width=64, widths=(8, 8, 8, 8), reduction=4)),
    "wrn": ("wrn", dict(depth=10, widen=1)),
    "wrn_16_4": ("wrn", dict(depth=10, widen=1)),
    "wrn_16_8": ("wrn", dict(depth=10, widen=1)),
    "wrn_28_10": ("wrn", dict(depth=10, widen=1)),
    "airbench94": ("airbench94", dict(widths=(8, 16, 16))),
    "resnet9": ("resnet9", dict(width=4)),
    "resnet9_half": ("resnet9", dict(width=4)),
    "dla34": ("dla34", dict(channels=(4, 4, 8, 8, 8, 8))),
    "vit_small_patch4": ("vit_small_patch4", dict(dim=32, depth=2, heads=2)),
    "edgenext_small": ("edgenext_small", dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), heads=4)),
}
# The map each family's last stage gives a 32x32 image, and the input pixels between its cells.
GEOMETRY = {"airbench94": ((3, 3), 8), "vit_small_patch4": ((8, 8), 4), "resnext29": ((8, 8), 4), "wrn": ((8, 8), 4)}


def test_every_registered_model_has_a_tiny_instance_here():
    assert set(list_models()) <= set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_map_is_finite_of_input_size_and_survives_channels_last_and_bf16(name):
    arch, args = TINY[name]
    torch.manual_seed(1)  # seed 0 gives the tiny Res2Net a head with no positive evidence for any class
    model = create_model(arch, 3, **args).eval()
    images = torch.rand(2, 3, 32, 32)
    cam = GradCAM(model)
    maps = cam(images)
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    # Not all blank: an untrained net may have no positive evidence for its top class, but has for some class.
    every_class = [GradCAM(model)(images[:1], np.array([c])) for c in range(3)]
    assert any(m.max() - m.min() > 0.1 for m in every_class)
    size, stride = GEOMETRY.get(arch, ((4, 4), 8))
    assert cam.map_size == size and cam.stride == (stride, stride)
    # The memory format and precision a training run may use leave the hooks and the map alone.
    model = model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = GradCAM(model)(images.contiguous(memory_format=torch.channels_last))
    assert np.isfinite(low).all() and np.abs(low - maps).mean() < 0.05


def test_a_map_that_tiles_the_image_is_upsampled_as_before():
    cam = torch.rand(2, 4, 4)
    rows = _upsampling(32, 4, 8.0)
    expected = F.interpolate(cam[:, None], size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(rows @ cam @ rows.T, expected, atol=1e-6)


@pytest.mark.parametrize("start", [8, 16])
def test_airbench_map_sits_over_the_square_its_evidence_comes_from(start):
    """airbench's pooling floors 32 -> 31 -> 15 -> 7 -> 3: its 3x3 cells read 8 pixels each, not 32 / 3. With dirac
    init and a bright square on black, the activation is largest in the cell over the square; the map's peak must be
    in the square, where stretching the map over the image put it up to 6 pixels off (at 16 and 27)."""
    torch.manual_seed(0)
    model = create_model("airbench94", 3, widths=(8, 16, 16)).eval()
    image = torch.zeros(1, 3, 32, 32)
    image[..., start : start + 8, start : start + 8] = 1.0
    maps = GradCAM(model)(image, np.array([0]))
    row, col = np.unravel_index(maps[0].argmax(), maps[0].shape)
    assert start <= row < start + 8 and start <= col < start + 8


def _member(arch: str, args: dict, tta: str) -> dict:
    return dict(arch=arch, num_classes=3, mean=DEFAULT_MEAN, std=DEFAULT_STD, model_args=args, tta=tta)


def test_ensemble_with_test_time_views_gives_one_map_per_image_from_its_unaugmented_view():
    torch.manual_seed(0)
    members = [_member("resnet9", dict(width=4), "flip"), _member("resnet9", dict(width=4), "none")]
    model = create_model("ensemble", 3, (0, 0, 0), (1, 1, 1), members=members).eval()
    images = torch.rand(2, 3, 32, 32)
    cam = GradCAM(model)
    maps = cam(images, np.array([0, 1]))
    assert maps.shape == (2, 32, 32) and cam.views == 2  # not 4 maps, the mirrored view's among them
    assert np.isfinite(maps).all() and all(m.max() == 1 for m in maps)


class _Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


def test_a_model_without_a_spatial_layer_is_refused_clearly():
    with pytest.raises(NoSpatialMap, match="no cam_layer"):
        GradCAM(_Pooled())
    model = _Pooled()
    with pytest.raises(NoSpatialMap, match=r"\(1, 4, 1, 1\), no spatial map"):
        GradCAM(model, layer=model.features)(torch.rand(1, 3, 8, 8))


def test_evaluate_skips_gradcam_with_a_note_where_the_last_stage_is_one_pixel(image_folder, tmp_path):
    """EdgeNeXt with a stride-4 stem leaves a 32x32 image a 1x1 last stage: no map, rather than blank ones."""
    from training.config_recipes import build_config
    from training.engine import train

    args = "{depths: [1, 1, 1, 1], dims: [8, 8, 8, 8], heads: 2, stem_stride: 4}"
    config = build_config(
        "resnet9_half_cpu",
        tiny_overrides(
            image_folder, tmp_path / "cache", epochs=1, **{"model.name": "edgenext_small", "model.args": args}
        ),
    )
    train(config, tmp_path / "run")
    out = tmp_path / "report"
    argv = ["evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert not (out / "gradcam.png").exists() and "gradcam" not in metrics["files"]
    assert any(note.startswith("Grad-CAM skipped: edgenext_small has no spatial layer") for note in metrics["notes"])
    assert "Grad-CAM skipped" in (out / "report.md").read_text() and metrics["top1"] is not None


@pytest.mark.parametrize("arch", sorted({arch for arch, _ in TINY.values()}))
def test_cells_sit_their_layers_stride_apart_on_an_image_of_no_multiple_of_it(arch):
    """At 28 pixels a ResNet's padded strided convolutions round 28 -> 14 -> 7 -> 4 up: 4 cells 8 pixels apart. Measured
    against 56 pixels (7 cells) they read as 9.3 apart, and the map was stretched, its last cell drawn 5 pixels off.
    DLA's pooled shortcuts, rounding down where its convolutions round up, could not take 28 pixels at all."""
    args = dict(TINY[arch][1], **({"image_size": 28} if arch == "vit_small_patch4" else {}))
    torch.manual_seed(1)
    model = create_model(arch, 3, **args).eval()
    cam = GradCAM(model)
    maps = cam(torch.rand(2, 3, 28, 28))
    _, stride = GEOMETRY.get(arch, ((4, 4), 8))
    assert maps.shape == (2, 28, 28) and np.isfinite(maps).all() and cam.stride == (stride, stride)
