"""A stop that lands in a native module while the server's process (`python -m service.bentoml_serve`) imports
BentoML: pydantic-core turns it into a SchemaError that keeps no trace of it, which bentoml_serve.py and
bentoml_compat.py let through as a traceback and status 1, where every other command says `interrupted`
(tests/test_stops_in_native_imports.py). An import that fails without a stop still fails as it did."""

from __future__ import annotations

import os
import re
import signal
import sys
import types

import pytest

from inference.interrupts import raise_terminated, terminations_as_interrupts


class SchemaError(Exception):
    """What pydantic-core raises where a stop lands in its validator's construction: no cause, no context."""


class _Importing(types.ModuleType):
    """A module in ``sys.modules`` whose ``name``, taken by a ``from`` import, runs ``importing``: the import's code."""

    def __init__(self, module: str, name: str, importing) -> None:
        super().__init__(module)
        self.wanted, self.importing = name, importing

    def __getattr__(self, name: str):
        if name == self.wanted:
            self.importing()
        raise AttributeError(name)  # pytest's report reads the module's other names


def _server_process(monkeypatch, importing) -> int:
    """bentoml_serve.py's start, whose import of bentoml_compat.py (BentoML with it) runs ``importing``."""
    from service.bentoml_serve import _serve

    module = _Importing("service.bentoml_compat.command_line", "serve_with_own_metrics", importing)
    monkeypatch.setitem(sys.modules, "service.bentoml_compat.command_line", module)
    return _serve(["3000", "serve", "service.service:Classifier"])


def _bentoml_command_line(monkeypatch, importing) -> int:
    """bentoml_compat.py's start of BentoML's command line, whose import runs ``importing``."""
    from service.bentoml_compat import command_line

    monkeypatch.setattr(command_line, "_unsupported", lambda what: True)  # leaves BentoML's metrics folder alone
    monkeypatch.setitem(sys.modules, "bentoml_cli.cli", _Importing("bentoml_cli.cli", "cli", importing))
    return command_line.serve_with_own_metrics(["serve", "service.service:Classifier"], 3000)


STARTS = pytest.mark.parametrize("start", [_server_process, _bentoml_command_line])


@pytest.fixture
def stops_raise():
    """As in the server's process: Ctrl-C raises KeyboardInterrupt (CI runs the suite with SIGINT ignored), SIGTERM
    and SIGHUP Terminated."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with terminations_as_interrupts():
            yield
    finally:
        signal.signal(signal.SIGINT, previous)


@STARTS
@pytest.mark.parametrize(
    "signum, status, said", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "SIGTERM: interrupted")]
)
def test_a_stop_turned_into_a_native_error_while_bentoml_imports_is_one_line(
    start, signum, status, said, stops_raise, monkeypatch, capsys
):
    def stopped_in_pydantic_core() -> None:
        try:
            os.kill(os.getpid(), signum)
        except KeyboardInterrupt:  # Terminated too: the native module swallows it
            pass
        raise SchemaError("Error building validator: KeyboardInterrupt")

    try:
        assert start(monkeypatch, stopped_in_pydantic_core) == status
    except KeyboardInterrupt:  # caught here, or pytest would take it as its own Ctrl-C and stop the session
        pytest.fail("a stop escaped as a traceback")
    assert capsys.readouterr().err == f"{said}\n"
    # the handlers the import met are given back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is raise_terminated


@STARTS
@pytest.mark.parametrize(
    "error",
    [SchemaError("a real schema error"), ImportError("libonnxruntime.so.1: cannot open shared object file")],
    ids=["SchemaError", "ImportError"],
)
def test_an_import_error_without_a_stop_is_raised_as_before(start, error, stops_raise, monkeypatch, capsys):
    def failed() -> None:
        raise error

    with pytest.raises(type(error), match=re.escape(str(error))):
        start(monkeypatch, failed)
    assert "interrupted" not in capsys.readouterr().err
