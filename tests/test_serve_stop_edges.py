"""`python -m service serve` stopped while it starts: in serve's own checks, and in BentoML's start before its process
manager takes the signals over. Each ends as every other command's stop does (`interrupted`, 128 + the signal);
once the process manager runs, its graceful stop (status 0) is BentoML's, unchanged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import click
import pytest

from conftest import serve_on_free_port, stop_server_group
from test_serve_restart import _env_with_hook, _start_that_ends

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- BentoML's command line
def _bentoml_cli(callback) -> types.ModuleType:
    """A stand-in for ``bentoml_cli.cli``: a click group whose ``serve`` runs ``callback``, as BentoML's does."""
    module = types.ModuleType("bentoml_cli.cli")

    @click.group()
    def cli() -> None:
        pass

    @cli.command()
    @click.argument("bento")
    def serve(bento: str) -> None:
        callback()

    module.cli = cli  # type: ignore[attr-defined]
    return module


def _serve_with(monkeypatch, callback, argv=("serve", "service.service:Classifier")) -> int:
    from service.bentoml_compat import command_line

    monkeypatch.setattr(command_line, "_unsupported", lambda what: True)  # leaves BentoML's metrics folder alone
    monkeypatch.setitem(sys.modules, "bentoml_cli.cli", _bentoml_cli(callback))
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # serve_with_own_metrics sets BentoML's
    try:
        return command_line.serve_with_own_metrics(list(argv), 3000)
    except KeyboardInterrupt:  # caught here, or pytest would take it as its own Ctrl-C and stop the session
        pytest.fail("a stop escaped as a traceback")
    except SystemExit as exc:
        pytest.fail(f"click ended the process ({exc.code}) in place of the command's own stop")


def _interrupt() -> None:
    raise KeyboardInterrupt


def _terminate() -> None:
    from inference.interrupts import Terminated

    raise Terminated(signal.SIGTERM)


def _interrupt_in_onnxruntimes_import() -> None:
    """A Ctrl-C in ONNX Runtime's native module, which it reports as an ImportError, and BentoML's loader as a
    service that failed to import (a ClickException, from its command group)."""
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as exc:
            raise ImportError("initialization failed") from exc
    except ImportError as exc:
        raise click.ClickException("[cli] `serve` failed: Failed to import module 'service.service'") from exc


@pytest.mark.parametrize(
    "stop, status, said",
    [
        (_interrupt, 130, "interrupted"),
        (_terminate, 143, "SIGTERM: interrupted"),
        (_interrupt_in_onnxruntimes_import, 130, "interrupted"),
    ],
)
def test_a_stop_in_bentomls_start_is_one_line_and_128_plus_the_signal(stop, status, said, monkeypatch, capsys):
    """Ctrl-C after serve handed over to BentoML, before its process manager answers it: click's blank line and
    `Aborted!`, status 1."""
    assert _serve_with(monkeypatch, stop) == status
    assert capsys.readouterr().err == f"{said}\n"


def test_bentomls_own_refusals_and_statuses_are_kept(monkeypatch, capsys):
    """What click's entry point said and returned, it still says and returns: a ClickException's message and status,
    a usage error's 2, a command's exit status."""

    def refused() -> None:
        raise click.ClickException("[cli] `serve` failed: no service")

    assert _serve_with(monkeypatch, refused) == 1
    assert capsys.readouterr().err == "Error: [cli] `serve` failed: no service\n"
    assert _serve_with(monkeypatch, lambda: None, argv=("serve", "x", "--no-such-flag")) == 2
    assert "Error: No such option '--no-such-flag'." in capsys.readouterr().err

    def exits() -> None:
        click.get_current_context().exit(3)

    assert _serve_with(monkeypatch, exits) == 3
    assert _serve_with(monkeypatch, lambda: None) == 0
    with pytest.raises(OSError, match="Address already in use"):  # bentoml_serve.py says this one in its own line
        _serve_with(monkeypatch, lambda: (_ for _ in ()).throw(OSError(98, "Address already in use")))


# ---------------------------------------------------------------------------------------------- serve's own checks
class _Unanswered(Exception):
    """SIGTERM reached the handler the test installed: serve did not take it over."""


def test_sigterm_while_serve_checks_the_models_is_one_line_and_143(capsys, monkeypatch):
    """SIGTERM there killed the process by the signal, without a word, where Ctrl-C said `interrupted`."""
    import service.loading
    from service.__main__ import main as service_main

    def terminated(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)

    def unanswered(signum, frame):
        raise _Unanswered

    monkeypatch.setattr(service.loading, "check_model_files", terminated)
    before = signal.signal(signal.SIGTERM, unanswered)
    try:
        status = service_main(["serve", "--models-dir", str(ROOT / "models")])
        assert signal.getsignal(signal.SIGTERM) is unanswered  # given back once serve returns
    except _Unanswered:
        pytest.fail("SIGTERM during serve's checks was not taken over: the process would be killed by it")
    finally:
        signal.signal(signal.SIGTERM, before)
    assert status == 143
    assert capsys.readouterr().err == "SIGTERM: interrupted\n"


# ---------------------------------------------------------------------------------------------- a real server
# Put first on PYTHONPATH: the server's process (after serve's exec) is sent CIFAR_TEST_STOP as BentoML is about to
# start serving, after the service's import, before its process manager exists; with CIFAR_TEST_STOP_AGAIN, a second
# Ctrl-C once the process is exiting (Python waiting for a thread still running).
STOPPED_IN_BENTOMLS_START = """
import os
import signal
import sys

# A process started in the background (CI's runner) ignores Ctrl-C from its start: taken as in a shell's foreground.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("CIFAR_TEST_STOP") and "service.bentoml_serve" in sys.orig_argv:
    import threading
    import time

    import _bentoml_impl.server as server

    serve_http = server.serve_http

    def main_thread_exits():
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None:
            if frame.f_code.co_name == "_shutdown":
                return True
            frame = frame.f_back
        return False

    def again():
        while not main_thread_exits():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)  # an exit held up: the stop ends it

    def stopped(*args, **kwargs):
        if os.environ.get("CIFAR_TEST_STOP_AGAIN"):
            threading.Thread(target=again).start()
        os.kill(os.getpid(), getattr(signal, os.environ["CIFAR_TEST_STOP"]))
        return serve_http(*args, **kwargs)

    server.serve_http = stopped
"""


@pytest.mark.parametrize(
    "stop, again, status, said",
    [
        ("SIGINT", "", 130, "interrupted"),
        ("SIGTERM", "", 143, "SIGTERM: interrupted"),
        ("SIGINT", "1", 130, "interrupted"),
    ],
    ids=["ctrl-c", "sigterm", "ctrl-c-twice"],
)
def test_a_server_stopped_in_bentomls_start_says_interrupted(stop, again, status, said, tiny_models_dir, tmp_path):
    """Ctrl-C there printed click's `Aborted!` and exited 1; SIGTERM killed it by the signal without a word; a
    second Ctrl-C as it exited ended it by SIGINT or with a traceback."""
    env = _env_with_hook(tmp_path, STOPPED_IN_BENTOMLS_START, CIFAR_TEST_STOP=stop, CIFAR_TEST_STOP_AGAIN=again)
    log_path = tmp_path / "server.log"
    proc = _start_that_ends(tiny_models_dir, log_path, env)
    log = log_path.read_text()
    assert proc.returncode == status, log[-3000:]
    assert log.splitlines()[-1] == said, log[-3000:]
    assert "Aborted!" not in log and "Traceback" not in log, log[-3000:]


def test_a_ready_server_says_its_decode_threads_and_stops_gracefully_on_sigterm(tiny_models_dir, tmp_path):
    """The ready line named the streams and intra-op threads, not the decode threads `--decode-threads` sets. Once
    BentoML's process manager runs, SIGTERM is its graceful stop, status 0, as before serve took stops over."""
    log_path = tmp_path / "server.log"
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    proc, _ = serve_on_free_port(
        tiny_models_dir,
        log_path,
        "--threads",
        "1",
        "--decode-threads",
        "3",
        env=env,
        until=lambda url: "ready: worker" in log_path.read_text(errors="replace"),
        timeout=120,
    )
    try:
        ready = [line for line in log_path.read_text().splitlines() if "ready: worker" in line]
        assert len(ready) == 1 and ready[0].endswith("; uploads decoded on up to 3 thread(s)"), ready
        os.kill(proc.pid, signal.SIGTERM)  # as a supervisor sends it: to the server's process
        assert proc.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        stop_server_group(proc)
    log = log_path.read_text()
    assert "Traceback" not in log and "interrupted" not in log, log[-3000:]


# Put first on PYTHONPATH: serve is sent SIGTERM as it hands over to the server's process (`exec`), after its own
# handler could run: the moment a stop that Python's handler only flags would be lost with the process's image.
STOPPED_AT_THE_EXEC = """
import os
import sys

if os.environ.get("CIFAR_TEST_STOP_AT_EXEC") and sys.orig_argv[1:4] == ["-m", "service", "serve"]:
    import signal
    import threading

    execve = os.execve

    def stopped(*args):
        # to this thread: a process-wide one may be taken by another thread (ONNX Runtime's), whose mask is not
        # the exec's, and then runs its handler here at once, before the exec
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        held = sorted(signal.Signals(s).name for s in signal.sigpending())
        print(f"held across the exec: {held}", file=sys.stderr, flush=True)
        return execve(*args)

    os.execve = stopped
"""


def test_a_sigterm_as_serve_hands_over_to_the_server_is_held_for_it_not_lost(tiny_models_dir, tmp_path):
    """Without the hand-over holding it, such a SIGTERM is either the old silent death by the signal, or, once serve
    answers stops, lost with serve's image: the server started and served on."""
    env = _env_with_hook(tmp_path, STOPPED_AT_THE_EXEC, CIFAR_TEST_STOP_AT_EXEC="1")
    log_path = tmp_path / "server.log"
    proc = _start_that_ends(tiny_models_dir, log_path, env)
    log = log_path.read_text()
    assert proc.returncode == 143, log[-3000:]
    assert "held across the exec: ['SIGTERM']" in log and log.splitlines()[-1] == "SIGTERM: interrupted", log[-3000:]
    assert "Traceback" not in log, log[-3000:]


# ``python -c``: a stop that another thread takes while serve holds the stops for its exec (os.execve faked: it
# returns, as if the exec took a moment).
_TAKEN_BY_ANOTHER_THREAD = r"""
import os, signal, threading, time

from inference.interrupts import take_over_terminations
import service.bentoml_serve as serve

take_over_terminations()  # as serve's checks run: SIGTERM raises Terminated
other = threading.Thread(target=time.sleep, args=(30,), daemon=True)
other.start()

def execve(*args):
    signal.pthread_kill(other.ident, signal.SIGTERM)  # that thread's mask lets it in
    time.sleep(5)

os.execve = execve
serve.exec_holding_stops(["-c", "pass"], dict(os.environ))
print("the exec came back and the stop was lost", flush=True)
"""


def test_a_stop_another_thread_takes_at_the_hand_over_ends_the_process_not_lost():
    """A Python handler run by another thread only sets a flag, which a real exec discards: the server then started
    and served on. The stop now ends the process by its signal."""
    done = subprocess.run(
        [sys.executable, "-c", _TAKEN_BY_ANOTHER_THREAD], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == -signal.SIGTERM, (done.returncode, done.stdout, done.stderr)
    assert "lost" not in done.stdout
