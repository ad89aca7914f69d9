"""A GPU named by its number (``0``, ``cuda:1``), as training's --device and CUDA tools take it, where the service,
the scorer and the doctor take auto, cpu or cuda (the visible GPUs): the refusal says how to pick that GPU."""

from __future__ import annotations

import pytest

from service.__main__ import main as service_main

HINT = "; for GPU {n} alone, set CUDA_VISIBLE_DEVICES={n} and use cuda"


@pytest.mark.parametrize(
    "argv",
    [["score", "photos", "--device", "{d}"], ["doctor", "--device", "{d}"], ["serve", "--device", "{d}"]],
    ids=["score", "doctor", "serve"],
)
@pytest.mark.parametrize("device, n", [("cuda:1", 1), ("0", 0)])
def test_a_command_line_told_a_gpu_number_says_how_to_pick_that_gpu(argv, device, n, capsys):
    with pytest.raises(SystemExit) as refused:
        service_main([a.format(d=device) for a in argv])
    err = capsys.readouterr().err
    assert refused.value.code == 2
    assert f"argument --device: invalid choice: {device!r} (choose from 'auto', 'cpu', 'cuda')" in err
    assert HINT.format(n=n) in err and "Traceback" not in err


def test_a_wrong_device_that_is_no_gpu_number_gets_no_hint(capsys):
    with pytest.raises(SystemExit):
        service_main(["doctor", "--device", "gpu"])
    err = capsys.readouterr().err
    assert "invalid choice: 'gpu'" in err and "CUDA_VISIBLE_DEVICES" not in err


def test_the_service_setting_told_a_gpu_number_says_how_to_pick_that_gpu(monkeypatch):
    from service.settings import ServiceSettings, SettingsError

    monkeypatch.setenv("CIFAR_DEVICE", "cuda:2")
    with pytest.raises(SettingsError) as refused:
        ServiceSettings.checked()
    assert str(refused.value).endswith("must be one of auto, cpu, cuda, got 'cuda:2'" + HINT.format(n=2))
    with pytest.raises(SettingsError, match=r"got '3'; for GPU 3 alone, set CUDA_VISIBLE_DEVICES=3 and use cuda$"):
        ServiceSettings(device="3")  # type: ignore[arg-type]
