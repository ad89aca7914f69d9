"""`python -m service serve`'s settings as an operator meets them: the help that states each one's range, the line at
the start that says which were given and where from, and the settings that work against each other."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


class _Started(Exception):
    """Raised in place of the exec into BentoML: the checks passed and the server would start."""


@pytest.fixture
def no_settings_in_env(monkeypatch):
    from service.settings import SETTINGS

    for setting in SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_until_the_exec(monkeypatch, capsys, *flags: str) -> str:
    """What serve says on stderr up to the moment it would become the server."""
    from service.__main__ import main as service_main

    def started(*args):
        raise _Started

    monkeypatch.setattr(os, "execve", started)
    argv = ["serve", "--host", "127.0.0.1", "--port", str(_free_port()), *flags]
    with pytest.raises(_Started):
        service_main(argv)
    return capsys.readouterr().err


def test_the_help_states_the_range_of_every_number_setting():
    """`serve --help` gave each number setting's default but not what it accepts: `--max-batch-size 1` and
    `--max-body-bytes 1000` were refused at start for a minimum the help never mentioned."""
    from service.__main__ import get_args_parser

    parser = get_args_parser()
    serve = next(a for a in parser._subparsers._group_actions if a.dest == "command").choices["serve"]
    text = " ".join(serve.format_help().split())
    for said in (
        "(env CIFAR_MAX_BATCH_SIZE; default: 256; 2 or more)",
        "(env CIFAR_MAX_BODY_BYTES; default: 33554432; 1024 or more)",
        "(env CIFAR_THREADS; default: cores available / streams; 1 to 1024)",
        "(env CIFAR_WORKERS; default: one per visible GPU, 1 on a CPU host; 0 or more)",
        "(env CIFAR_TIMEOUT_S; default: 60; 1 or more)",
        "a flag wins over its variable",
    ):
        assert said in text, said


def test_serve_says_which_settings_were_given_and_which_flag_won(no_settings_in_env, monkeypatch, capsys):
    """Nothing at the start said which settings were in force: a CIFAR_WORKERS=4 left in the shell under
    `--workers 1`, or a CIFAR_MAX_IMAGES=8 the operator forgot, showed only in the service's behaviour. Keys are
    counted, never printed."""
    monkeypatch.setenv("CIFAR_WORKERS", "4")
    monkeypatch.setenv("CIFAR_MAX_IMAGES", " 8 ")
    monkeypatch.setenv("CIFAR_API_KEYS", "first-secret, second-secret")
    err = _serve_until_the_exec(
        monkeypatch, capsys, "--models-dir", str(ROOT / "models"), "--workers", "1", "--max-batch-size", "32"
    )
    line = next(line for line in err.splitlines() if line.startswith("settings:"))
    assert line == (
        f"settings: --models-dir {ROOT / 'models'}, --max-batch-size 32, CIFAR_MAX_IMAGES=8, "
        "--workers 1 (over CIFAR_WORKERS=4), CIFAR_API_KEYS=<2 keys>; the others at their defaults"
    )
    assert "secret" not in err and "warning" not in err
    assert err.index("settings:") < err.index("serving ")


def test_serve_with_no_setting_given_says_it_runs_on_the_defaults(no_settings_in_env, monkeypatch, capsys):
    err = _serve_until_the_exec(monkeypatch, capsys)
    assert "settings: the defaults (serve --help lists them)\n" in err


def test_settings_that_work_against_each_other_are_warned_of(no_settings_in_env, monkeypatch, capsys):
    """`--timeout 5` under the default 10 s batching latency (a queued request times out before it is shed), or
    more CPU workers than cores (each a copy of the models, GiBs each), started without a word."""
    from service.settings import ServiceSettings

    assert ServiceSettings().contradictions(on_gpu=False, cores=2) == []
    (many,) = ServiceSettings(workers=8).contradictions(on_gpu=False, cores=2)
    assert many.startswith("8 workers (--workers, CIFAR_WORKERS) on 2 core(s) without a GPU")
    assert ServiceSettings(workers=8).contradictions(on_gpu=True, cores=2) == []  # GPUs are shared round-robin
    assert ServiceSettings(workers=2).contradictions(on_gpu=False, cores=2) == []
    (late,) = ServiceSettings(timeout_s=5).contradictions(on_gpu=False, cores=2)
    assert "10000 ms (--max-latency-ms, CIFAR_MAX_LATENCY_MS)" in late and "5 s (--timeout, CIFAR_TIMEOUT_S)" in late
    assert ServiceSettings(timeout_s=10).contradictions(on_gpu=False, cores=2) == []

    monkeypatch.setenv("CIFAR_TIMEOUT_S", "5")
    err = _serve_until_the_exec(monkeypatch, capsys, "--device", "cpu")
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {late}"], err


def test_a_models_folder_from_the_environment_is_named_when_it_is_refused(
    no_settings_in_env, monkeypatch, capsys, tmp_path
):
    """A CIFAR_MODELS_DIR left set in the shell made a plain `serve` answer `no model manifest at /elsewhere/...`,
    with nothing to say where that folder came from."""
    from service.__main__ import main as service_main

    missing = tmp_path / "none"
    monkeypatch.setenv("CIFAR_MODELS_DIR", str(missing))
    assert service_main(["serve", "--port", str(_free_port())]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no model manifest at {missing}") and err.endswith(
        f" (CIFAR_MODELS_DIR={missing})\n"
    ), err
    # Typed on the command line, the folder is the user's own: the variable it overrides is not named.
    assert service_main(["serve", "--port", str(_free_port()), "--models-dir", str(missing)]) == 2
    assert "CIFAR_MODELS_DIR" not in capsys.readouterr().err
