"""DLA-34, ViT and EdgeNeXt: pinned sizes, fidelity to the published networks, Grad-CAM, ONNX export parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_arrays
from export.onnx_export import export_fp32, input_spec, write_card
from export.parity import measure_parity
from inference.manifest import ModelCard
from inference.runtime import OnnxClassifier
from training.config_recipes import build_config
from training.models import DEFAULT_MEAN, DEFAULT_STD, count_parameters, create_model
from training.models.dla import DLA
from training.models.edgenext import EdgeNeXt
from training.models.layers import DropPath
from training.reports.gradcam import GradCAM

# Parameter counts with 10 classes, pinned so an accidental change to an architecture shows.
PARAMS = {
    # ImageNet DLA-34 is 15.74M in timm (15.8M in the reference code, which also holds 41,728 parameters of
    # projections its forward never uses); this one has a 10-way head and a 3x3 stem (see test_match_imagenet).
    "dla34": 15_232_314,
    # Six ViT-S blocks (dim 384, 6 heads, MLP 1536): half of ViT-S/16's 22.1M, whose 12 blocks are 21.3M of it.
    "vit_small_patch4": 10_694_794,
    # Published EdgeNeXt-S is 5.59M with 1000 classes; the 10-way head saves 302K, the 3x3 stem 1K.
    "edgenext_small": 5_283_874,
}
# Values of the recipes' regularisation arguments that no recipe or default uses.
NON_DEFAULT = {"drop_path": 0.3, "dropout": 0.2}
# Instances small enough to build, run and export in well under a second each.
TINY = {
    "dla34": dict(channels=(4, 4, 8, 8, 8, 8)),
    "vit_small_patch4": dict(dim=32, depth=2, heads=2),
    "edgenext_small": dict(depths=(1, 1, 2, 1), dims=(8, 16, 24, 32), heads=4),
}


@pytest.mark.parametrize("name,count", PARAMS.items())
def test_parameter_counts_pinned(name, count):
    assert count_parameters(create_model(name)) == count


def test_match_imagenet_counts_with_the_reference_stem_and_head():
    """With the ImageNet stem and 1000 classes back, the counts are the published ones to the parameter."""
    dla = DLA(1000)
    dla.stem[0] = nn.Conv2d(3, 16, 7, 1, 3, bias=False)
    assert count_parameters(dla) == 15_742_104  # timm's dla34
    edgenext = EdgeNeXt(1000)
    edgenext.stem[0] = nn.Conv2d(3, 48, 4, 4)
    assert count_parameters(edgenext) == 5_586_832  # EdgeNeXt-S, "5.59M"


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_and_gradcam(name):
    model = create_model(name, 7, **TINY[name]).eval()
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        out = model(images)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    cams = GradCAM(model)(images)
    assert cams.shape == (3, 32, 32) and np.isfinite(cams).all()


def test_drop_path_drops_whole_samples_at_its_rate_and_rescales_the_rest():
    torch.manual_seed(0)
    layer = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2, 2)
    out = layer(x)
    per_sample = out.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # a sample is kept or dropped whole
    kept = per_sample[:, 0] > 0
    assert torch.allclose(per_sample[kept, 0], torch.tensor(1 / 0.75))  # kept ones scaled by 1 / keep
    assert abs(kept.float().mean().item() - 0.75) < 0.03  # binomial sd 0.007
    assert torch.equal(layer.eval()(x), x) and torch.equal(DropPath(0.0).train()(x), x)


def test_training_mode_stochastic_depth_and_backward():
    # ViT: EdgeNeXt's layer scale starts its branches at 1e-6, too small for a dropped one to show.
    model = create_model("vit_small_patch4", 10, **TINY["vit_small_patch4"], drop_path=0.5, dropout=0.0)
    images = torch.rand(4, 3, 32, 32)
    torch.manual_seed(0)
    first, second = model.train()(images), model(images)
    assert not torch.allclose(first, second)  # branches dropped at random while training
    first.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model.eval()(images), model(images))  # and never in eval mode


def test_vit_rejects_other_sizes_clearly():
    model = create_model("vit_small_patch4", **TINY["vit_small_patch4"])
    with pytest.raises(ValueError, match="takes 32x32 images, got .*: its image_size argument sets the size"):
        model(torch.rand(1, 3, 24, 24))
    bigger = create_model("vit_small_patch4", **TINY["vit_small_patch4"], image_size=64).eval()
    with torch.no_grad():
        assert bigger(torch.rand(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("name", TINY)
def test_recipe_names_its_model_and_its_arguments_reach_it(name):
    config = build_config(name)
    assert config.model.name == name
    create_model(name, **config.model.args, **TINY[name])
    # The recipe's regularisation settings, each given a value no default has, show up in the built network.
    args = {**config.model.args, **{key: value for key, value in NON_DEFAULT.items() if key in config.model.args}}
    model = create_model(name, **args, **TINY[name])
    if "drop_path" in args:  # the deepest block drops at the rate asked (earlier ones less, by depth)
        assert max(m.p for m in model.modules() if isinstance(m, DropPath)) == pytest.approx(args["drop_path"])
    if "dropout" in args:  # the head's (EdgeNeXt's inner MLPs keep their own 0)
        assert args["dropout"] in {m.p for m in model.modules() if isinstance(m, nn.Dropout)}


@pytest.mark.parametrize("name", TINY)
def test_onnx_export_parity(name, tmp_path):
    classes = [f"c{i}" for i in range(5)]
    model = create_model(name, len(classes), **TINY[name]).eval()
    path = tmp_path / f"{name}.onnx"
    export_fp32(model, path, 32)
    spec = input_spec({"input_size": 32, "mean": DEFAULT_MEAN, "std": DEFAULT_STD})
    write_card(
        path,
        ModelCard(
            name=name,
            arch=name,
            dataset="generated",
            classes=classes,
            precision="fp32",
            input=spec,
            metrics={"val_top1": 0.0},
        ),
    )
    images, labels = make_arrays(len(classes), per_class=4)
    classifier = OnnxClassifier(path, device="cpu")
    parity = measure_parity(model, classifier, images, labels)
    assert parity.passed and parity.top1_agreement == 1.0 and parity.max_abs_prob_diff < 1e-5, parity.summary()
    x = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(classifier.logits(x), expected, atol=1e-4)


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("dla34", dict(channels=(4, 4, 8, 8, 8)), "6 levels and 6 channels"),
        ("dla34", dict(TINY["dla34"], levels=(1, 1, 1, 2, 2, 0)), "must each be 1 or more"),  # endless recursion
        ("vit_small_patch4", dict(TINY["vit_small_patch4"], heads=0), "heads must be 1 or more"),
        ("vit_small_patch4", dict(TINY["vit_small_patch4"], patch_size=0), "must be 1 or more"),
        ("vit_small_patch4", dict(TINY["vit_small_patch4"], dim=0), "no channels"),
        ("edgenext_small", dict(TINY["edgenext_small"], heads=0), "heads must be 1 or more"),
        ("edgenext_small", dict(TINY["edgenext_small"], split_scales=(2, 2, 0, 4)), "must each be 1 or more"),
        ("edgenext_small", dict(TINY["edgenext_small"], dims=(8, 16, 24)), "one entry per stage"),
        ("edgenext_small", dict(TINY["edgenext_small"], sdta_blocks=(0, 2, 1, 1)), "more of a stage than its depth"),
        ("edgenext_small", dict(TINY["edgenext_small"], expansion=0), "no channels"),
    ],
)
def test_arguments_no_network_can_be_built_from_are_refused(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model(name, **kwargs)


def test_no_classes_is_refused():
    with pytest.raises(ValueError, match="num_classes must be 1 or more"):
        create_model("resnet9", 0, width=4)


@pytest.mark.parametrize(
    "name,args",
    [
        ("vit_small_patch4", "{dim: 32, depth: 1, heads: 0}"),  # was a ZeroDivisionError's traceback
        ("edgenext_small", "{depths: [1, 1, 2, 1], dims: [8, 16, 24], heads: 4}"),  # an IndexError's
        ("dla34", "{channels: [4, 4, 8, 8, 8]}"),  # an IndexError's
        ("wrn", "{depth: 10, widen: 0}"),  # said the 32x32 images were the trouble
        ("resnet9", "{width: 0}"),
    ],
)
def test_training_refuses_such_arguments_in_one_line_naming_them(name, args, tmp_path):
    from training.config import ConfigError
    from training.preflight import check_network_takes_its_input

    overrides = [f"model.name={name}", f"model.args={args}", "data.dataset=folder", f"data.root={tmp_path}"]
    with pytest.raises(ConfigError, match=rf"^model '{name}' cannot be built from its arguments \("):
        check_network_takes_its_input(build_config("resnet9_half_cpu", overrides))


@pytest.mark.parametrize("size", [28, 36, 100])
def test_dla_takes_a_side_no_multiple_of_8(size):
    """Its pooled shortcuts round an odd side up, as the strided convolutions they are added to do."""
    model = create_model("dla34", 3, **TINY["dla34"]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
