"""A ViT's positional embedding is not decayed, as DeiT's recipe (which vit_small_patch4.yaml follows) and timm
leave it: decay pulls every position's embedding toward zero, toward the same token."""

from __future__ import annotations

from training.config import OptimConfig
from training.models import create_model
from training.optim import build_optimizer, param_groups


def _group_of(groups: list[dict], parameter) -> dict:
    return next(g for g in groups if any(p is parameter for p in g["params"]))


def test_a_vits_positional_embedding_is_in_no_decayed_group_and_its_weights_are():
    model = create_model("vit_small_patch4", 10, depth=1, dim=32, heads=2)
    vit = model.backbone
    groups = param_groups(model, weight_decay=0.05, decay_norm_and_bias=False)
    assert _group_of(groups, vit.pos_embed)["weight_decay"] == 0.0
    assert _group_of(groups, vit.patch_embed.weight)["weight_decay"] == 0.05  # the rule for the rest is unchanged
    assert _group_of(groups, vit.fc.weight)["weight_decay"] == 0.05


def test_the_exemption_reaches_adamw_as_the_vit_recipe_builds_it():
    model = create_model("vit_small_patch4", 10, depth=1, dim=32, heads=2)
    optimizer = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3, weight_decay=0.05))
    assert _group_of(optimizer.param_groups, model.backbone.pos_embed)["weight_decay"] == 0.0
