"""The device a run trains or a model is evaluated on, as ``train.device`` and training's ``--device`` name it."""

from __future__ import annotations

import pytest

from training.__main__ import main as training_main
from training.config import ConfigError, device_remedy
from training.config_recipes import build_config
from training.device import resolve_device

USE = "use auto, cpu, cuda or cuda:N"


@pytest.mark.parametrize("given", ["device=0", "device='0'", 'device="0"'])
def test_a_gpu_given_by_its_number_is_told_its_name_once(given, tmp_path, capsys):
    """CUDA_VISIBLE_DEVICES numbers GPUs: device=0 was told to quote the number, and then that '0' is unknown."""
    argv = ["train", "--recipe", "resnet9_half_cpu", "--out", str(tmp_path / "run"), "--set", given]
    assert training_main([*argv, f"data.root={tmp_path / 'no-images'}"]) == 2
    err = capsys.readouterr().err
    said = f"error: invalid configuration: train.device: unknown device '0': GPU 0 is named cuda:0; {USE}"
    assert err.strip().splitlines() == [said], err


def test_the_setting_and_the_flag_take_the_same_names():
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert build_config("resnet9_half_cpu", [f"device={name}"]).train.device == name
    # torch's parser took cpu:0 and meta for the flag; cuda:00 passed the setting and failed as the run began
    for name, remedy in [("3", f"GPU 3 is named cuda:3; {USE}"), *((n, USE) for n in ("cuda:00", "cpu:0", "meta"))]:
        with pytest.raises(ConfigError) as setting:
            build_config("resnet9_half_cpu", [f"device='{name}'"])
        assert str(setting.value).endswith(f"train.device: unknown device {name!r}: {remedy}"), setting.value
        with pytest.raises(ConfigError) as flag:
            resolve_device(name)
        assert str(flag.value) == f"device {name!r}: not a device; {remedy}"


def test_evaluate_onnx_takes_the_same_device_names(capsys):
    from training.reports.sources import onnx_placement

    assert onnx_placement("cuda:2") == ("cuda", 2) and onnx_placement("cpu") == ("cpu", 0)
    for name in ("0", "cuda:00", "cpu:1", "gpu"):
        with pytest.raises(ConfigError) as refused:
            onnx_placement(name)
        assert str(refused.value) == f"--device {name!r}: not a device; {device_remedy(name)}"


def test_a_digit_int_cannot_read_is_refused_in_one_line():
    """'²' is a digit to str.isdigit, not to int(): the device check ended in int()'s traceback."""
    with pytest.raises(ConfigError, match="not a device; use auto, cpu, cuda or cuda:N"):
        resolve_device("²")
