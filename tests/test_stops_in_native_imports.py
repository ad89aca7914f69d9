"""A Ctrl-C that lands in a native module while a command imports it: pydantic-core, building a validator, turns it
into a SchemaError that keeps no trace of it, and `python -m service.score DIR` (1 run in 60 here, with the stop
sent just after numpy's import) ended with that traceback and status 1 instead of "interrupted" and 130."""

from __future__ import annotations

import os
import signal

import pytest

from inference.interrupts import stopped_while_importing, stops_recorded


class SchemaError(Exception):
    """What pydantic-core raises where a stop lands in its validator's construction: no cause, no context."""


def _native_import_stopped() -> None:
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
        pass
    raise SchemaError("Error building validator: KeyboardInterrupt")


@pytest.fixture
def ctrl_c_raises():
    """CI runs the suite with SIGINT ignored: a command's own process has Python's handler."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_stop_turned_into_a_native_error_is_still_an_interrupt(ctrl_c_raises, capsys):
    with stops_recorded() as seen:
        try:
            _native_import_stopped()
        except Exception as exc:
            status = stopped_while_importing(exc, seen)
    assert status == 130 and capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handed back


def test_an_error_without_a_stop_is_raised_again(ctrl_c_raises):
    with stops_recorded() as seen:
        try:
            raise SchemaError("a real schema error")
        except Exception as exc:
            with pytest.raises(SchemaError, match="a real schema error"):
                stopped_while_importing(exc, seen)
