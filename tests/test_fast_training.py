"""Fast-training methods (Page 2018; Jordan 2024): whitening, Dirac init, lookahead, alternating flip,
triangular schedule, BatchNorm learning-rate scaling, micro-batches, multi-crop TTA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import tiny_overrides, train_straight_and_resumed
from training.config import ConfigError, ScheduleConfig
from training.config_recipes import build_config, list_recipes
from training.data.arrays import ImageArrays
from training.data.augment import AugmentParams, to_unit
from training.data.loader import TensorLoader
from training.engine import Trainer, train
from training.inference import TTA_VIEWS, ViewAverage, resolve_bf16, tta_logits_numpy, with_tta
from training.lookahead import Lookahead, LookaheadError
from training.model_init import prepare_model
from training.models import count_parameters, create_model
from training.models.whitening import DiracError, PatchWhitening, dirac_init_, image_patches, whitening_layers
from training.optim import build_optimizer, lr_factor
from training.preflight import check_network_takes_its_input


def _correlated_images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Float images whose pixels are strongly correlated across channels and neighbours."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 8, 8, generator=gen).repeat_interleave(4, 2).repeat_interleave(4, 3)
    return base * torch.tensor([1.0, 0.8, 0.5]).view(1, 3, 1, 1) + 0.1 * torch.randn(n, 3, 32, 32, generator=gen)


def test_whitening_is_fitted_from_data_and_decorrelates_patches():
    layer = PatchWhitening(3, kernel_size=2, eps=1e-8)
    images = _correlated_images()
    layer.fit(images)
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    out = nn.functional.conv2d(images, layer.weight[:12])  # the positive half, no bias
    feats = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    second_moment = feats.T @ feats / len(feats)
    assert torch.allclose(second_moment, torch.eye(12, dtype=torch.float64), atol=1e-3)
    assert torch.equal(layer.weight[12:], -layer.weight[:12])
    # A second fit on other data gives other filters: they come from the data, not a fixed init.
    before = layer.weight.clone()
    layer.fit(_correlated_images(seed=1) * 3)
    assert not torch.allclose(before, layer.weight)


@pytest.mark.parametrize("how", ["random", "first"])
def test_whitening_sample_option_reaches_the_fit(how, monkeypatch):
    """A folder dataset's split is sorted by class: its first 5,000 images are one or two classes. The
    default fits the whitening on a seeded sample of every class; "first" keeps the runs made before."""
    from training.model_init import WHITENING_IMAGES

    per_class = 3000
    # Class c's images are all of grey level 40 * c, so a fitted sample tells which classes it drew from.
    images = np.repeat(np.arange(4, dtype=np.uint8) * 40, per_class)[:, None, None, None] * np.ones(
        (1, 32, 32, 3), np.uint8
    )
    seen = []
    monkeypatch.setattr(PatchWhitening, "fit", lambda self, x: seen.append(x))
    cfg = build_config("airbench94", [f"train.whiten_sample={how}", "train.seed=3"])
    prepare_model(create_model("airbench94", 4), cfg, images)
    (fitted,) = seen
    assert len(fitted) == WHITENING_IMAGES
    classes = torch.unique(fitted[:, 0, 0, 0]).numel()
    assert classes == (4 if how == "random" else 2)
    if how == "random":  # seeded: the same sample again, and nothing drawn from the streams that train the model
        model = create_model("airbench94", 4)
        state = torch.get_rng_state()
        prepare_model(model, cfg, images)
        assert torch.equal(seen[1], fitted) and torch.equal(torch.get_rng_state(), state)


def test_image_patches_order_matches_conv_weights():
    images = torch.rand(2, 3, 5, 5)
    patches = image_patches(images, 2)
    weight = torch.randn(1, 3, 2, 2)
    conv = nn.functional.conv2d(images, weight).permute(0, 2, 3, 1).reshape(-1)
    assert torch.allclose(patches @ weight.reshape(-1), conv, atol=1e-5)


def test_whitening_weights_stay_frozen_in_training(image_folder, tmp_path):
    cfg = build_config(
        "airbench94",
        tiny_overrides(
            image_folder,
            tmp_path / "cache",
            **{
                "model.name": "airbench94",
                "model.args": "{widths: [8, 16, 16]}",
                "epochs": 2,
                "whiten_bias_epochs": 1,
                "lookahead_every": 0,
            },
        ),
    )
    trainer = Trainer(cfg, tmp_path / "run")
    layer = whitening_layers(trainer.model)[0]
    weight = layer.weight.clone()
    assert weight.abs().sum() > 0  # fitted on the training split when the trainer built the model
    trainer.train_epoch()
    trainer.epoch = 1
    bias_after_first = layer.bias.clone()
    assert bias_after_first.abs().sum() > 0  # the bias trained in epoch 1
    trainer.train_epoch()
    assert torch.equal(layer.weight, weight)
    assert torch.equal(layer.bias, bias_after_first) and not layer.bias.requires_grad


def test_dirac_init_gives_identity_convolutions():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.Conv2d(8, 16, 3, padding=1, bias=False))
    assert dirac_init_(model) == 2
    x = torch.randn(2, 8, 6, 6)
    assert torch.allclose(model[0](x), x, atol=1e-6)
    assert torch.allclose(model[1](x)[:, :8], x, atol=1e-6)  # the first 8 of 16 filters pass channels through
    assert not torch.allclose(model[1](x)[:, 8:], torch.zeros(2, 8, 6, 6))  # the rest keep their random init


def test_dirac_config_option_applies_to_any_model():
    cfg = build_config("resnet9_half_cpu", ["model.dirac_init=true", "model.bn_momentum=0.4"])
    model = create_model("resnet9", 10, width=8)
    prepare_model(model, cfg, np.zeros((4, 32, 32, 3), np.uint8))
    conv = model.backbone.stages[0][1].body[0][0]
    x = torch.randn(1, 16, 8, 8)
    assert torch.allclose(conv(x), x, atol=1e-6)
    assert all(m.momentum == 0.4 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def _flip_states(loader: TensorLoader, originals: torch.Tensor, epoch: int) -> dict[int, bool]:
    loader.set_epoch(epoch)
    states = {}
    for x, y in loader:
        for img, label in zip(x, y):
            i = int(label)
            if torch.equal(img, originals[i]):
                states[i] = False
            elif torch.equal(img, originals[i].flip(2)):
                states[i] = True
    return states


def test_alternating_flip_flips_each_image_every_other_epoch():
    n = 40
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    data = ImageArrays(images, np.arange(n), [str(i) for i in range(n)])
    params = AugmentParams(crop_padding=0, flip=True, alternate_flip=True)
    loader = TensorLoader(data, 8, train=True, augment=params, seed=3)
    originals = to_unit(torch.from_numpy(images).permute(0, 3, 1, 2))
    epochs = [_flip_states(loader, originals, e) for e in range(4)]
    assert all(len(states) == n for states in epochs)
    assert 10 <= sum(epochs[0].values()) <= 30  # the first epoch's flips are random
    for i in range(n):
        assert epochs[1][i] != epochs[0][i] and epochs[2][i] == epochs[0][i] and epochs[3][i] != epochs[2][i]
    # The random flip, for contrast, does not alternate.
    random_loader = TensorLoader(data, 8, train=True, augment=AugmentParams(crop_padding=0, flip=True), seed=3)
    random_epochs = [_flip_states(random_loader, originals, e) for e in range(2)]
    assert any(random_epochs[0][i] == random_epochs[1][i] for i in range(n))


def test_reflect_translation_keeps_image_values():
    from training.data.augment import random_crop

    x = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0), "reflect")
    assert out.dtype == torch.uint8 and out.shape == x.shape
    for img, src in zip(out, x):  # every output pixel value exists in its source image (no zero padding)
        assert set(img.unique().tolist()) <= set(src.unique().tolist())
    with pytest.raises(ValueError, match="pad mode"):
        random_crop(x, 2, torch.Generator(), "wrap")


def test_triangular_schedule():
    tri = ScheduleConfig(name="triangular", initial_lr_fraction=0.2, peak_fraction=0.25, final_lr_fraction=0.0)
    steps, epochs = 10, 4  # 40 steps, peak at step 10
    assert lr_factor(0, steps, epochs, tri) == pytest.approx(0.2)
    assert lr_factor(5, steps, epochs, tri) == pytest.approx(0.6)
    assert lr_factor(10, steps, epochs, tri) == pytest.approx(1.0)
    assert lr_factor(25, steps, epochs, tri) == pytest.approx(0.5)
    assert lr_factor(40, steps, epochs, tri) == pytest.approx(0.0)


def test_norm_parameters_get_scaled_lr_and_same_decay_per_step():
    cfg = build_config("airbench94")
    model = create_model("airbench94", 10, widths=(8, 8, 8))
    opt = build_optimizer(model, cfg.optim)
    norm_group = next(g for g in opt.param_groups if g["lr"] != cfg.optim.lr)
    assert norm_group["lr"] == pytest.approx(cfg.optim.lr * 64)
    assert norm_group["lr"] * norm_group["weight_decay"] == pytest.approx(cfg.optim.lr * cfg.optim.weight_decay)
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert {id(p) for p in norm_group["params"]} == bn_params
    listed = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(listed) == sorted(id(p) for p in model.parameters())  # each parameter exactly once


def test_lookahead_moves_slow_weights_and_resets_fast_ones():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    look = Lookahead(model, every=2, decay=0.5, total_steps=2)
    with torch.no_grad():
        model.weight.fill_(1.0)
    look.step(model, 1)  # not a multiple of 2: nothing happens
    assert model.weight.item() == 1.0
    look.step(model, 2)  # decay 0.5**2 * 1**3 = 0.25: slow = 0 + 0.75 * (1 - 0)
    assert model.weight.item() == pytest.approx(0.75) and look.slow["weight"].item() == pytest.approx(0.75)
    with torch.no_grad():
        model.weight.fill_(5.0)
    look.finish(model)
    assert model.weight.item() == pytest.approx(0.75)


def test_a_lookahead_period_longer_than_the_run_is_refused(image_folder, tmp_path):
    """No step would reach the slow copy, and the run's end takes the slow copy: its initial weights."""
    with pytest.raises(LookaheadError, match="lookahead_every 5 is more than the run's 4 optimizer steps"):
        Lookahead(nn.Linear(1, 1), every=5, decay=0.5, total_steps=4)
    cfg = build_config("airbench94", tiny_airbench(image_folder, tmp_path / "cache", lookahead_every=1000))
    with pytest.raises(LookaheadError, match="set it to at most 4"):  # 2 batches of 16 a epoch, 2 epochs
        Trainer(cfg, tmp_path / "run")


def test_dirac_init_of_a_network_without_odd_kernel_convolutions_is_refused():
    cfg = build_config("vit_small_patch4", ["model.dirac_init=true"])
    vit = create_model("vit_small_patch4", 3, dim=16, depth=1, heads=2)
    with pytest.raises(DiracError, match="VisionTransformer has no ungrouped odd-kernel convolution.*dirac_init=false"):
        prepare_model(vit, cfg, np.zeros((4, 32, 32, 3), np.uint8))


@pytest.mark.parametrize("eps", ["0", "-1e-3", ".inf", ".nan"])
def test_a_whitening_eps_that_breaks_the_filters_is_refused_before_the_data_is_read(eps):
    """The patch covariance of real images has directions of almost no variance: a negative eps makes their
    filters NaN, 0 divides by zero, infinity zeroes them all."""
    args = f"model.args={{widths: [8, 8, 8], whiten_eps: {eps}}}"
    if eps in (".inf", ".nan"):  # no finite number: refused with the settings, before the network is built
        with pytest.raises(ConfigError, match="model.args.whiten_eps: Input should be a finite number"):
            build_config("airbench94", [args])
        return
    with pytest.raises(ConfigError, match="whiten_eps .* must be a finite number above 0"):
        check_network_takes_its_input(build_config("airbench94", [args]))


def test_micro_batches_give_the_gradient_of_the_whole_batch(image_folder, tmp_path):
    grads = []
    for micro in ("null", 4):
        cfg = build_config(
            "airbench94",
            tiny_overrides(
                image_folder,
                tmp_path / "cache",
                **{
                    "model.name": "airbench94",
                    "model.args": "{widths: [8, 8, 8]}",
                    "micro_batch_size": micro,
                    "lookahead_every": 0,
                },
            ),
        )
        trainer = Trainer(cfg, tmp_path / f"run{micro}")
        trainer.model.eval()  # BatchNorm on running statistics, so only the chunking differs
        x, y = next(iter(trainer.train_loader))
        trainer.optimizer.zero_grad()
        trainer._forward_backward(x, y)
        grads.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def tiny_airbench(image_folder: Path, cache: Path, **extra) -> list[str]:
    """``tiny_overrides`` for an airbench94 of 8 channels a layer."""
    return tiny_overrides(
        image_folder, cache, **{"model.name": "airbench94", "model.args": "{widths: [8, 8, 8]}"}, **extra
    )


def test_airbench_resume_restores_lookahead_exactly(image_folder, tmp_path, monkeypatch):
    overrides = tiny_airbench(
        image_folder,
        tmp_path / "cache",
        **{
            "epochs": 4,
            "lookahead_every": 2,
            "whiten_bias_epochs": 1,
            "optim.lr": 0.05,
            "schedule.name": "triangular",
            "micro_batch_size": 8,
        },
    )
    a, b = train_straight_and_resumed("airbench94", overrides, tmp_path, monkeypatch)
    assert a["lookahead"] is not None
    # every floating-point tensor has a slow copy, so the comparisons below cover the whole network
    assert set(a["lookahead"]["slow"]) == {k for k, v in a["model"].items() if v.is_floating_point()}
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(a["lookahead"]["slow"][k], b["lookahead"]["slow"][k]) for k in a["lookahead"]["slow"])
    # The run ends on the slow weights.
    assert all(torch.equal(a["model"][k], a["lookahead"]["slow"][k]) for k in a["lookahead"]["slow"])
    history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert [h["val_top1"] for h in history] == [
        h["val_top1"] for h in json.loads((tmp_path / "interrupted" / "history.json").read_text())
    ]


def test_an_early_stopped_lookahead_run_ends_on_the_slow_weights_and_stays_finished(image_folder, tmp_path):
    from training.resume import resume

    overrides = tiny_airbench(
        image_folder,
        tmp_path / "cache",
        epochs=6,
        lookahead_every=3,  # 2 steps an epoch: epoch 2 ends between merges, on the fast weights
        early_stop_patience=1,
        early_stop_min_delta=1.0,  # no epoch after the first can improve by that
    )
    summary = train(build_config("airbench94", overrides), tmp_path / "run")
    assert summary["stopped_early"] and summary["epochs_run"] == 2
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert set(last["lookahead"]["slow"]) == {k for k, v in last["model"].items() if v.is_floating_point()}
    assert all(torch.equal(last["model"][k], last["lookahead"]["slow"][k]) for k in last["lookahead"]["slow"])
    files = {name: (tmp_path / "run" / name).read_bytes() for name in ("last.pt", "history.json")}
    again = resume(tmp_path / "run")
    assert again["stopped_early"] and again["epochs_run"] == 2
    assert all((tmp_path / "run" / name).read_bytes() == data for name, data in files.items())


def test_changing_the_epochs_of_a_run_warns_of_what_it_reshapes(image_folder, tmp_path, caplog):
    from training.resume import resume

    overrides = tiny_airbench(
        image_folder, tmp_path / "cache", epochs=1, lookahead_every=2, **{"schedule.name": "triangular"}
    )
    train(build_config("airbench94", overrides), tmp_path / "run")
    with caplog.at_level("WARNING", logger="training"):
        assert resume(tmp_path / "run", epochs=2)["epochs_run"] == 2
    assert "reshapes the triangular learning-rate schedule and lookahead's decay ramp" in caplog.text


def _manual_multicrop(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    def mirror(v):
        return 0.5 * model(v) + 0.5 * model(v.flip(3))

    padded = nn.functional.pad(x, (1,) * 4, mode="reflect")
    shifted = [padded[:, :, :32, :32], padded[:, :, 2:, 2:]]
    return 0.5 * mirror(x) + 0.25 * mirror(shifted[0]) + 0.25 * mirror(shifted[1])


def test_multicrop_tta_is_airbench_averaging_in_torch_and_numpy():
    torch.manual_seed(0)
    model = create_model("airbench94", 10, widths=(8, 8, 8)).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = _manual_multicrop(model, x)
        got = with_tta(model, "multicrop")(x)
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(with_tta(model, "flip")(x), 0.5 * model(x) + 0.5 * model(x.flip(3)), atol=1e-5)
        numpy_out = tta_logits_numpy(lambda a: model(torch.from_numpy(a)).numpy(), x.numpy(), "multicrop")
    assert np.allclose(numpy_out, expected.numpy(), atol=1e-5)
    assert isinstance(with_tta(model, "multicrop"), ViewAverage) and with_tta(model, "none") is model
    assert sum(w for _, _, w in TTA_VIEWS["multicrop"]) == pytest.approx(1.0)


def test_multicrop_tta_export_parity(tiny_run, tmp_path):
    from export.pipeline import export_checkpoint

    entry, parity = export_checkpoint(
        tiny_run / "best.pt", "tiny-mc", "fp32", tmp_path, cache_dir=None, tta="multicrop"
    )
    assert parity.passed and parity.top1_agreement == 1.0 and parity.max_abs_prob_diff < 1e-4
    assert entry.source["tta"] == "multicrop"


def test_bf16_auto_follows_the_hardware(monkeypatch):
    import training.inference as inference

    cpu = torch.device("cpu")
    assert resolve_bf16(True, cpu) and not resolve_bf16(False, cpu)
    monkeypatch.setattr(inference, "hardware_bf16", lambda device: False)
    assert not inference.resolve_bf16("auto", cpu)
    monkeypatch.setattr(inference, "hardware_bf16", lambda device: True)
    assert inference.resolve_bf16("auto", cpu)


def test_new_models_parameter_counts():
    assert count_parameters(create_model("wrn_16_4")) == 2_748_890  # Zagoruyko & Komodakis: 2.7M
    assert count_parameters(create_model("airbench94")) == 1_972_792  # Jordan 2024: about 2M


@pytest.mark.parametrize("recipe", list_recipes())
def test_every_recipe_loads(recipe):
    """Each recipe's model builds from its args and maps a batch of its image size to one logit a class (run on
    the meta device: shapes only, no arithmetic)."""
    cfg = build_config(recipe)
    model = create_model(cfg.model.name, 10, **cfg.model.args).eval()
    assert count_parameters(model) > 0
    size = cfg.data.image_size
    with torch.no_grad():
        out = model.to("meta")(torch.empty(2, 3, size, size, device="meta"))
    assert tuple(out.shape) == (2, 10)


def test_cumulative_ablation_adds_methods_one_by_one_and_a_tta_row(image_folder, tmp_path, capsys):
    from training.__main__ import main

    out = tmp_path / "ablation"
    sets = tiny_overrides(
        image_folder,
        tmp_path / "cache",
        **{"model.name": "airbench94", "epochs": 1, "lookahead_every": 0, "alternate_flip": False},
    )
    argv = [
        "ablate",
        "--recipe",
        "airbench94",
        "--set",
        *sets,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--step",
        "baseline",
        "model.args={widths: [8, 8, 8], whiten: false, dirac: false}",
        "--step",
        "+whitening",
        "model.args.whiten=true",
        "--step",
        "+dirac",
        "model.args.dirac=true",
        "--tta",
        "multicrop",
        "--target-top1",
        "40",
    ]
    assert main(argv) == 0
    result = json.loads((out / "ablation.json").read_text())
    rows = result["variants"]
    assert [r["variant"] for r in rows] == ["baseline", "+whitening", "+dirac", "+ multicrop TTA"]
    assert result["target_top1"] == pytest.approx(0.40)
    for row in rows[:-1]:  # from each run's own history; the TTA row has no per-epoch figures
        history = json.loads((Path(row["run"]) / "history.json").read_text())
        reached = [h["epoch"] for h in history if h["val_top1"] >= 0.40]
        assert row["epochs_to_target"] == (reached[0] if reached else None)
    assert rows[-1]["epochs_to_target"] is None
    configs = [
        json.loads(json.dumps(__import__("yaml").safe_load((out / d / "config.yaml").read_text())))
        for d in ("baseline", "_whitening", "_dirac")
    ]
    assert [c["model"]["args"]["whiten"] for c in configs] == [False, True, True]
    assert [c["model"]["args"]["dirac"] for c in configs] == [False, False, True]
    assert all(c["model"]["args"]["widths"] == [8, 8, 8] for c in configs)  # earlier steps' settings are kept
    assert rows[-1]["tta"] == "multicrop" and rows[-1]["run"] == rows[-2]["run"]
    # Each step is tested against the row above it (the TTA row against its own checkpoint without TTA).
    assert rows[0]["vs_previous"] is None
    for previous, row in zip(rows, rows[1:]):
        step = row["vs_previous"]
        assert step["variant"] == previous["variant"]
        assert step["top1_diff_points"] == pytest.approx(100 * (row["top1"] - previous["top1"]))
        assert step["diff_interval"]["low"] <= step["top1_diff_points"] <= step["diff_interval"]["high"]
        assert 0.0 <= step["mcnemar"]["p_value"] <= 1.0
    table = (out / "ablation.md").read_text()
    assert "+whitening: model.args.whiten=true" in table and "+ multicrop TTA" in table
    assert "gain vs row above" in table and "| epochs to 40% |" in table
    rows_md = [line for line in table.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in rows_md}) == 1  # header, delimiter and rows: one column count
    dirac_row = next(line for line in table.splitlines() if line.startswith("| +dirac |"))
    assert f"{rows[2]['vs_previous']['top1_diff_points']:+.2f}" in dirac_row


def test_epochs_to_reach_is_the_first_epoch_at_or_above_the_target():
    from training.reports.ablate_rows import epochs_to_reach

    history = [{"epoch": 1, "val_top1": 0.5}, {"epoch": 2, "val_top1": 0.92}, {"epoch": 3, "val_top1": 0.91}]
    assert epochs_to_reach(history, 0.92) == 2
    assert epochs_to_reach(history, 0.5) == 1
    assert epochs_to_reach(history, 0.93) is None
    assert epochs_to_reach(history, None) is None
    assert epochs_to_reach([{"epoch": 1}], 0.1) is None  # a run without a validation split
    # typed as a percentage: 89.34 / 100 is 0.8934000000000001, above the 4,467 of 5,000 an epoch scored
    assert epochs_to_reach([{"epoch": 1, "val_top1": 4467 / 5000}], 89.34 / 100) == 1


def test_ablation_steps_are_validated(tmp_path, capsys):
    from training.__main__ import main

    assert main(["ablate", "--recipe", "airbench94", "--step", "a", "x=1", "--step", "a", "y=2"]) == 2
    assert "used twice" in capsys.readouterr().err
    assert main(["ablate", "--recipe", "airbench94", "--step", "a", "nonsense"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ablate", "--recipe", "airbench94", "--step", "a", "x=1", "--target-top1", "120"])
    assert "not a percentage in (0, 100]" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("recipe", "epochs"),
    [
        ("airbench94", 1),
        ("airbench94_muon", 1),
        ("se_resnet18_cpu", 1),
        ("wrn_16_4_cpu", 1),
        # the GPU recipes warm up for 2 epochs, and refuse a run that ends before its warm-up does
        ("se_resnet18_gpu", 3),
        ("wrn_16_4_gpu", 3),
    ],
)
def test_fast_recipe_two_batch_smoke_run_trains_and_exports(recipe, epochs, image_folder, tmp_path):
    """Each new recipe, unchanged but for the data, batch count and size: two batches an epoch (a lookahead
    recipe's: one lookahead period), then export (FP32: an untrained net's INT8 top-1 on 15 images may move by one
    image, which is outside INT8's 0.5-point tolerance)."""
    from export.pipeline import export_checkpoint

    # fewer steps than a lookahead period would end the run on its initial weights, which is refused
    batches = max(2, build_config(recipe).train.lookahead_every)
    overrides = [
        f"data.root={image_folder}",
        "data.val_size=15",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"epochs={epochs}",
        "batch_size=8",
        "micro_batch_size=8",
        f"max_batches_per_epoch={batches}",
        "eval_batch_size=32",
    ]
    summary = train(build_config(recipe, overrides), tmp_path / "run")
    assert summary["epochs_run"] == epochs and (tmp_path / "run" / "best.pt").is_file()
    entry, parity = export_checkpoint(
        tmp_path / "run" / "best.pt",
        f"smoke-{recipe}",
        "fp32",
        tmp_path / "models",
        cache_dir=str(tmp_path / "cache"),
        tta="multicrop",
    )
    assert (tmp_path / "models" / entry.file).stat().st_size > 1000 and entry.source["tta"] == "multicrop"
    assert parity.samples == 15


def test_airbench_pools_globally_as_the_paper_does_at_32_and_takes_other_sizes():
    torch.manual_seed(0)
    model = create_model("airbench94", 5, widths=(8, 8, 8)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = model.backbone.stages(model.backbone.act(model.backbone.whiten(model.normalize(x))))
        assert features.shape[-2:] == (3, 3)
        paper = model.backbone.fc(nn.MaxPool2d(3)(features).flatten(1)) * model.backbone.logit_scale
        assert torch.equal(model(x), paper)
        for size in (24, 64, 96):
            assert model(torch.rand(2, 3, size, size)).shape == (2, 5)


def test_progressive_resizing_plan_sizes_each_epoch_and_the_validation_stays_full():
    from training.data.augment import size_at

    plan = ((1, 16), (3, 24), (5, 32))
    assert [size_at(plan, epoch, 32) for epoch in range(6)] == [16, 16, 24, 24, 32, 32]
    assert [size_at(((3, 16), (4, 32)), epoch, 32) for epoch in range(4)] == [32, 32, 16, 32]
    assert size_at((), 7, 32) == 32
    n = 24
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    data = ImageArrays(images, np.arange(n) % 3, ["a", "b", "c"])
    loader = TensorLoader(data, 8, train=True, augment=AugmentParams(progressive_sizes=plan), seed=1)
    for epoch, size in [(0, 16), (2, 24), (4, 32)]:
        loader.set_epoch(epoch)
        assert {tuple(x.shape[1:]) for x, _ in loader} == {(3, size, size)}
    val = TensorLoader(data, 8, augment=AugmentParams(progressive_sizes=plan))
    val.set_epoch(0)
    assert {tuple(x.shape[1:]) for x, _ in val} == {(3, 32, 32)}


def test_progressive_resizing_averages_instead_of_sampling():
    from training.data.augment import resize_batch

    # A one-pixel checkerboard: sampling every other pixel would give all 0 or all 1; an antialiased
    # downscale gives its mean, 0.5, away from the border.
    board = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2
    x = board.float().expand(2, 3, 32, 32)
    small = resize_batch(x, 16)
    assert small.shape == (2, 3, 16, 16)
    assert torch.allclose(small[..., 1:-1, 1:-1], torch.full_like(small[..., 1:-1, 1:-1], 0.5), atol=1e-6)
    assert resize_batch(x, 32) is x


@pytest.mark.parametrize(
    "plan, problem",
    [
        ("{1: 16}", "end below data.image_size 32"),
        ("{1: 16, 9: 32}", "after the run's last"),
        ("{1: 48, 2: 32}", "only downscales"),
        ("{0: 16, 2: 32}", "epochs count from 1"),
        ("{1: 4, 2: 32}", "at least 8 pixels"),
    ],
)
def test_progressive_resizing_plans_that_cannot_work_are_refused(plan, problem):
    from training.config import ConfigError

    with pytest.raises(ConfigError, match=problem):
        build_config("resnet9_half_cpu", ["epochs=8", f"progressive_sizes={plan}"])


def test_progressive_resizing_trains_small_then_full_and_resumes_exactly(image_folder, tmp_path, monkeypatch):
    from training.data import loader as loader_module

    seen: list[int] = []
    original = loader_module.resize_batch

    def spy(x, size):
        seen.append(size)
        return original(x, size)

    monkeypatch.setattr(loader_module, "resize_batch", spy)
    overrides = tiny_overrides(image_folder, tmp_path / "cache", epochs=3, progressive_sizes="{1: 16, 3: 32}")
    a, b = train_straight_and_resumed("resnet9_half_cpu", overrides, tmp_path, monkeypatch)
    # 45 training images in batches of 16: 2 batches an epoch; the straight run's epochs come first.
    assert seen[:6] == [16, 16, 16, 16, 32, 32]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
