"""The differences a resume or an ablation lists between two configurations say an emptied setting: data.cache_dir
set to "" (no cache) was listed as 'data.cache_dir: .cache/datasets -> ', a value that reads as cut off."""

from __future__ import annotations

from training.config_overrides import config_differences
from training.config_recipes import build_config


def test_an_emptied_setting_is_shown_as_an_empty_string():
    cached = build_config("resnet9_half_cpu", [])
    uncached = build_config("resnet9_half_cpu", ["data.cache_dir="])
    assert config_differences(cached, uncached) == ['data.cache_dir: .cache/datasets -> ""']
    assert config_differences(uncached, cached) == ['data.cache_dir: "" -> .cache/datasets']
