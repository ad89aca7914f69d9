"""`python -m service serve` as an operator starts it: wrong settings and Ctrl-C before the server is up."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _serve(*args: str) -> int:
    from service.__main__ import main as service_main

    try:
        return service_main(["serve", *args])
    except KeyboardInterrupt:  # caught here, or pytest would take it as its own Ctrl-C and stop the session
        pytest.fail("a Ctrl-C escaped serve as a traceback")


def test_intra_op_threads_no_host_has_are_refused_before_any_worker_starts(capsys):
    """CIFAR_THREADS=100000 was accepted: each worker spent minutes opening its models, and 2**31 - 1 ended every
    worker in std::bad_alloc, restarted for ever, while serve and the doctor said nothing was wrong."""
    from service.settings import ServiceSettings, SettingsError

    with pytest.raises(SettingsError, match=r"CIFAR_THREADS must be at most 1024, got 100000"):
        ServiceSettings.from_env({"CIFAR_THREADS": "100000"})
    assert ServiceSettings.from_env({"CIFAR_THREADS": "1024"}).threads == 1024
    assert _serve("--models-dir", str(ROOT / "models"), "--threads", "2147483647") == 2
    assert "error: --threads must be at most 1024, got 2147483647" in capsys.readouterr().err


def test_an_empty_host_is_refused_as_the_other_empty_flags_are(capsys, monkeypatch):
    """`--host "$HOST"` with HOST unset answered `cannot listen on :3000: Name or service not known`; an empty
    BENTOML_HOST, like an empty CIFAR_* variable, means the default."""
    assert _serve("--host", "", "--models-dir", "/nonexistent") == 2
    assert (
        capsys.readouterr().err.strip() == "error: --host is empty: give a value, or leave the flag out for its default"
    )
    monkeypatch.setenv("BENTOML_HOST", "")
    from service.__main__ import get_args_parser

    assert get_args_parser().parse_args(["serve"]).host == "0.0.0.0"


def test_ctrl_c_while_serve_checks_the_model_files_is_one_line_and_130(capsys, monkeypatch):
    import service.loading

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(service.loading, "check_model_files", interrupted)
    assert _serve("--models-dir", str(ROOT / "models")) == 130
    err = capsys.readouterr().err
    assert err.strip() == "interrupted" and "serving" not in err


class _ImportInterrupted(types.ModuleType):
    def __getattr__(self, name: str):
        if name == "cli":  # `from bentoml_cli.cli import cli`; pytest's report reads the module's other names
            raise KeyboardInterrupt
        raise AttributeError(name)


def test_ctrl_c_while_the_server_imports_bentoml_s_command_line_is_one_line_and_130(capsys, monkeypatch):
    """The second between serve's `serving ...` line and BentoML's own signal handling: a Ctrl-C there printed
    the import's traceback and ended the process by the signal."""
    from service.bentoml_compat import command_line

    monkeypatch.setattr(command_line, "_unsupported", lambda what: True)  # leaves BentoML's metrics folder alone
    monkeypatch.setitem(sys.modules, "bentoml_cli.cli", _ImportInterrupted("bentoml_cli.cli"))
    try:
        status = command_line.serve_with_own_metrics(["serve", "service.service:Classifier"], 3000)
    except KeyboardInterrupt:
        pytest.fail("a Ctrl-C escaped as a traceback")
    assert status == 130
    assert capsys.readouterr().err.strip() == "interrupted"
