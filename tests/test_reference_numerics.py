"""The fast-training methods against independent implementations written here from their references: Keller
Jordan's airbench94.py and airbench94_muon.py (Newton-Schulz, Muon, lookahead, patch whitening, alternating flip,
multi-crop TTA), label smoothing as Szegedy et al. define it, and Grad-CAM (Selvaraju et al., 2017) by hand on a
network whose gradients are known in closed form. Small tensors, float64 where the comparison is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from training.config import OptimConfig
from training.data.arrays import ImageArrays
from training.data.augment import AugmentParams
from training.data.loader import TensorLoader
from training.data.mix import MixedTargets, mixed_cross_entropy
from training.inference import ViewAverage, tta_logits_numpy
from training.lookahead import Lookahead
from training.models import create_model
from training.models.whitening import PatchWhitening
from training.muon import Muon, filters_by_normalisation, orthogonalize
from training.optim import build_optimizer
from training.reports.gradcam import GradCAM, NoSpatialMap

# --- Muon (airbench94_muon.py), in float64 where the source computes in bfloat16 ---


def reference_newton_schulz(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g.clone()
    x /= x.norm() + eps
    if g.size(0) > g.size(1):
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    if g.size(0) > g.size(1):
        x = x.T
    return x


def reference_muon_step(
    params: list[torch.Tensor], buffers: dict[int, torch.Tensor], lr: float, momentum: float, nesterov: bool, steps: int
) -> None:
    for p in params:
        g = p.grad
        buf = buffers.setdefault(id(p), torch.zeros_like(g))
        buf.mul_(momentum).add_(g)
        g = g.add(buf, alpha=momentum) if nesterov else buf
        p.data.mul_(len(p.data) ** 0.5 / p.data.norm())
        update = reference_newton_schulz(g.reshape(len(g), -1), steps).view(g.shape)
        p.data.add_(update, alpha=-lr)


@pytest.mark.parametrize("shape", [(6, 20), (20, 6), (8, 8)])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_newton_schulz_is_the_sources_quintic(shape, steps):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(orthogonalize(g, steps), reference_newton_schulz(g, steps), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_steps_as_the_source_on_square_wide_and_tall_filter_banks(nesterov):
    """Four steps on banks of 8 x 3x3x3 (wide), 16 x 4x1x1 (tall: iterated transposed) and 5 x 5x1x1."""
    gen = torch.Generator().manual_seed(0)
    shapes = [(8, 3, 3, 3), (16, 4, 1, 1), (5, 5, 1, 1)]
    ours = [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]
    theirs = [p.detach().clone() for p in ours]
    opt = Muon([{"params": ours, "muon": True}], lr=0.24, momentum=0.6, nesterov=nesterov, ns_steps=3)
    buffers: dict[int, torch.Tensor] = {}
    for _ in range(4):
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=gen, dtype=torch.float64)
            b.grad = a.grad.clone()
        opt.step()
        reference_muon_step(theirs, buffers, lr=0.24, momentum=0.6, nesterov=nesterov, steps=3)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.detach(), b, rtol=1e-10, atol=1e-12)


class _IdentityShortcut(nn.Module):
    """A stem whose output feeds a block's BatchNorm and, through an identity shortcut, the block's sum (as a
    Wide-ResNet's stem where the first stage is as wide as the stem)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.head_bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.bn2(self.conv(F.relu(self.bn(x))))
        return self.fc(F.relu(self.head_bn(x)).mean((2, 3)))


def test_a_filter_bank_whose_output_also_feeds_a_sum_keeps_sgd():
    """Muon rescales a bank to norm sqrt(out_channels) each step, which is harmless only where every reader of its
    output normalises it: a stem also added to the residual stream sets the stream's scale."""
    normalised, others = filters_by_normalisation(_IdentityShortcut(), torch.rand(2, 3, 8, 8))
    assert set(normalised) == {"conv.weight"} and set(others) == {"stem.weight"}


def _change_from_scaling(model: nn.Module, weight: nn.Parameter, x: torch.Tensor) -> float:
    """The output's largest change, relative to its largest value, when ``weight`` is tripled. Train mode
    (BatchNorm on the batch's statistics, as Muon's steps see it), dropout drawn alike."""
    model.train()
    with torch.no_grad():
        torch.manual_seed(5)
        before = model(x)
        weight.mul_(3.0)
        torch.manual_seed(5)
        after = model(x)
        weight.div_(3.0)
    return float((after - before).abs().max() / before.abs().max())


# Small instances of the networks with BatchNorm; "wrn-k1" has identity shortcuts from its stem on.
TRACED = {
    "airbench94": ("airbench94", dict(widths=(8, 16, 16))),
    "resnet18": ("resnet18", dict(widths=(8, 8, 16, 16))),
    "se_resnet18": ("se_resnet18", dict(widths=(8, 8, 16, 16), reduction=4)),
    "wrn-k1": ("wrn", dict(depth=10, widen=1)),
    "wrn-k2": ("wrn", dict(depth=10, widen=2)),
    "resnet9": ("resnet9", dict(width=4)),
}


@pytest.mark.parametrize("name", sorted(TRACED))
def test_every_filter_bank_muon_takes_is_one_whose_scale_the_network_ignores(name):
    """The property Muon's rescaling needs, checked numerically: tripling a bank it takes leaves the training-mode
    output as it is (float64, BatchNorm's eps near 0 so that rounding is all that is left)."""
    arch, args = TRACED[name]
    torch.manual_seed(0)
    model = create_model(arch, 3, **args).double()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 1e-12
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64)
    normalised, others = filters_by_normalisation(model, x)
    assert normalised
    for key, weight in normalised.items():
        assert _change_from_scaling(model, weight, x) < 1e-8, key


def test_the_recipes_muon_routes_filters_to_muon_and_the_rest_to_nesterov_sgd():
    """airbench94_muon: every trainable filter bank takes Muon at its own lr and momentum with no weight decay; the
    head, BatchNorm shifts and whitening bias take Nesterov SGD; the frozen whitening filters take neither."""
    torch.manual_seed(0)
    model = create_model("airbench94", 10, whiten=True, widths=(8, 16, 16))
    cfg = OptimConfig(name="muon", lr=1.66, momentum=0.85, weight_decay=0.0024, muon_lr=0.24, muon_momentum=0.6)
    opt = build_optimizer(model, cfg, torch.rand(2, 3, 32, 32))
    muon_groups = [g for g in opt.param_groups if g["muon"]]
    assert len(muon_groups) == 1
    (group,) = muon_groups
    filters = {id(p) for n, p in model.named_parameters() if p.ndim == 4 and p.requires_grad}
    assert {id(p) for p in group["params"]} == filters and len(filters) == 6
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.24, 0.6, 0.0, True)
    sgd = [p for g in opt.param_groups if not g["muon"] for p in g["params"] if p.requires_grad]
    assert {id(p) for p in sgd} == {id(p) for p in model.parameters() if p.requires_grad} - filters
    assert all(g["momentum"] == 0.85 and g["nesterov"] for g in opt.param_groups if not g["muon"])


# --- lookahead (airbench94.py's LookaheadState and its decay schedule) ---


class ReferenceLookahead:
    def __init__(self, net: nn.Module) -> None:
        self.net_ema = {k: v.clone() for k, v in net.state_dict().items()}

    def update(self, net: nn.Module, decay: float) -> None:
        for ema_param, net_param in zip(self.net_ema.values(), net.state_dict().values()):
            if net_param.dtype in (torch.half, torch.float, torch.double):
                ema_param.lerp_(net_param, 1 - decay)
                net_param.copy_(ema_param)


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))


def test_lookahead_is_airbenchs_with_its_decay_schedule_and_buffers():
    """Every 5 steps rho = 0.95**5 * (step / total)**3, weights and BatchNorm statistics averaged alike, the step
    counter not; the end copies the slow state back. Training steps are stood in for by random moves of every
    floating-point entry (parameters and running statistics)."""
    every, decay, total = 5, 0.95, 23
    ours, theirs = _bn_net(), _bn_net()
    lookahead, reference = Lookahead(ours, every, decay, total), ReferenceLookahead(theirs)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for step in range(1, total + 1):
            for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()):
                move = torch.randn(a.shape, generator=gen) if a.is_floating_point() else torch.ones_like(a)
                a.add_(move)
                b.add_(move)
            lookahead.step(ours, step)
            if step % every == 0:
                reference.update(theirs, decay=decay**every * (step / total) ** 3)
        lookahead.finish(ours)
        reference.update(theirs, decay=1.0)
    for (key, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), key
    assert ours.state_dict()["1.num_batches_tracked"].item() == total


# --- patch whitening (airbench94.py's get_patches / get_whitening_parameters / init_whitening_conv) ---


def reference_whitening_filters(images: torch.Tensor, size: int, eps: float) -> torch.Tensor:
    c = images.shape[1]
    patches = images.unfold(2, size, 1).unfold(3, size, 1).transpose(1, 3).reshape(-1, c, size, size)
    flat = patches.reshape(len(patches), -1)
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    eigenvalues, eigenvectors = eigenvalues.flip(0).view(-1, 1, 1, 1), eigenvectors.T.reshape(-1, c, size, size).flip(0)
    scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
    return torch.cat((scaled, -scaled))


def test_whitening_filters_are_the_sources_up_to_each_eigenvectors_sign():
    gen = torch.Generator().manual_seed(0)
    # Correlated channels and neighbouring pixels, as in images, so the eigenvalues are well apart.
    base = torch.rand(20, 1, 9, 9, generator=gen)
    images = torch.cat(
        [base, 0.7 * base + 0.3 * torch.rand(20, 1, 9, 9, generator=gen), torch.rand(20, 1, 9, 9, generator=gen)], 1
    )
    images = (images + images.roll(1, 3)) / 2
    layer = PatchWhitening(3, 2, eps=5e-4)
    layer.fit(images)
    ours, theirs = layer.weight.double(), reference_whitening_filters(images.double(), 2, 5e-4)
    assert ours.shape == theirs.shape == (24, 3, 2, 2)
    half = 12
    signs = torch.sign((ours[:half] * theirs[:half]).sum((1, 2, 3)))
    assert torch.allclose(ours[:half], signs[:, None, None, None] * theirs[:half], rtol=1e-4, atol=1e-5)
    assert torch.equal(layer.weight[half:], -layer.weight[:half])
    assert not layer.weight.requires_grad


def test_whitening_filters_stay_frozen_through_sgd_and_muon_steps():
    torch.manual_seed(0)
    for name in ("sgd", "muon"):
        model = create_model("airbench94", 10, whiten=True, widths=(8, 16, 16))
        layer = next(m for m in model.modules() if isinstance(m, PatchWhitening))
        layer.fit(torch.rand(8, 3, 32, 32))
        fitted = layer.weight.detach().clone()
        opt = build_optimizer(model, OptimConfig(name=name, lr=0.5, weight_decay=0.1), torch.rand(2, 3, 32, 32))
        F.cross_entropy(model(torch.rand(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
        opt.step()
        assert torch.equal(layer.weight, fitted), name


# --- label smoothing (Szegedy et al., 2016): (1 - e) CE(y) + e * mean over classes of -log p ---


def test_label_smoothed_loss_and_its_mixed_form_follow_the_definition():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    y_a, y_b, eps, lam = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([3, 3, 0, 1, 2]), 0.2, 0.35
    log_p = logits - logits.exp().sum(1, keepdim=True).log()

    def smoothed(y: torch.Tensor) -> torch.Tensor:
        return (1 - eps) * -log_p[torch.arange(5), y] - eps * log_p.mean(1)

    assert torch.allclose(mixed_cross_entropy(logits, y_a, eps, reduction="none"), smoothed(y_a))
    assert torch.allclose(mixed_cross_entropy(logits, y_a, eps), smoothed(y_a).mean())
    mixed = mixed_cross_entropy(logits, MixedTargets(y_a, y_b, lam), eps)
    assert torch.allclose(mixed, (lam * smoothed(y_a) + (1 - lam) * smoothed(y_b)).mean())


# --- alternating flip (airbench's loader: a random flip in the first epoch, all mirrored in odd epochs) ---


def test_every_image_is_mirrored_in_exactly_every_other_epoch():
    n = 40
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)  # random, so no image is its own mirror
    data = ImageArrays(images, np.arange(n) % 3, ["a", "b", "c"])
    augment = AugmentParams(crop_padding=0, flip=True, alternate_flip=True)
    loader = TensorLoader(data, batch_size=8, train=True, augment=augment, seed=3)
    originals = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    mirrored_by_epoch = []
    for epoch in range(4):
        loader.set_epoch(epoch)
        mirrored = {}
        for x, _ in loader:
            for view in x:
                same = (originals - view).abs().amax((1, 2, 3)) < 1e-6
                flipped = (originals.flip(3) - view).abs().amax((1, 2, 3)) < 1e-6
                assert int(same.sum() + flipped.sum()) == 1
                mirrored[int((same | flipped).nonzero())] = bool(flipped.any())
        assert len(mirrored) == n
        mirrored_by_epoch.append(np.array([mirrored[i] for i in range(n)]))
    first = mirrored_by_epoch[0]
    assert 0 < first.sum() < n  # a random choice in the first epoch
    for epoch, state in enumerate(mirrored_by_epoch):
        assert np.array_equal(state, first ^ bool(epoch % 2)), epoch


# --- multi-crop TTA (airbench94.py's infer_mirror_translate) ---


def reference_tta(inputs: torch.Tensor, net: nn.Module) -> torch.Tensor:
    def mirror(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * net(x) + 0.5 * net(x.flip(-1))

    h, w = inputs.shape[-2:]
    padded = F.pad(inputs, (1,) * 4, "reflect")
    translated = torch.stack([mirror(padded[:, :, 0:h, 0:w]), mirror(padded[:, :, 2 : h + 2, 2 : w + 2])]).mean(0)
    return 0.5 * mirror(inputs) + 0.5 * translated


def test_multicrop_tta_is_airbenchs_views_and_weights_in_torch_and_numpy():
    torch.manual_seed(0)
    # position-dependent, so a wrong offset, mirror or weight changes the logits
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).double().eval()
    x = torch.rand(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        expected = reference_tta(x, net)
        assert torch.allclose(ViewAverage(net, "multicrop")(x).double(), expected, rtol=1e-6)
        numpy_fn = lambda batch: net(torch.from_numpy(batch)).numpy()  # noqa: E731
        assert np.allclose(tta_logits_numpy(numpy_fn, x.numpy(), "multicrop"), expected.numpy(), rtol=1e-6)


# --- Grad-CAM, by hand: conv (the cam layer) -> global average pool -> linear ---


class _GapNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.fc = nn.Linear(5, 4)

    @property
    def cam_layer(self) -> nn.Module:
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def test_gradcam_matches_the_closed_form_of_a_pooled_linear_head():
    """d logit_c / d A_k(i, j) = W[c, k] / (h w), so alpha_k = W[c, k] / (h w) and the map is
    ReLU(sum_k W[c, k] A_k) / (h w): bilinearly upsampled (the 4x4 map tiles the 8x8 image) and min-max scaled."""
    model = _GapNet()
    images = torch.rand(3, 3, 8, 8)
    targets = np.array([0, 3, 1])
    maps = GradCAM(model)(images, targets)
    with torch.no_grad():
        activation = model.features(images).double()  # [3, 5, 4, 4]
        weights = model.fc.weight.double()[torch.from_numpy(targets)]  # [3, 5]
        cam = F.relu((weights[:, :, None, None] * activation).sum(1) / 16)
        up = F.interpolate(cam[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
        low, high = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
        expected = torch.where(high > low, (up - low) / (high - low).clamp_min(1e-300), torch.zeros_like(up))
    assert maps.shape == (3, 8, 8)
    assert np.allclose(maps, expected.numpy(), atol=1e-5)
    assert math.isclose(float(maps.max()), 1.0, rel_tol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_gradcam_leaves_the_model_in_its_mode_when_it_refuses_the_layer(training):
    model = _GapNet()
    model.train(training)
    pooled = nn.AdaptiveAvgPool2d(1)
    model.features = nn.Sequential(model.features, pooled)  # the cam layer's map is now one cell
    with pytest.raises(NoSpatialMap):
        GradCAM(model, layer=pooled)(torch.rand(2, 3, 8, 8))
    assert model.training == training
