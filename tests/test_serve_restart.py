"""A server start that loses one of BentoML's internal control ports to another program (circus picks a free port,
lets it go, binds it again a moment later) starts again, rather than dying with ZMQ's traceback about a port the
user never chose; a host where that keeps happening gets one line."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, free_port, lost_its_port, serve_on_free_port, spawn_server, stop_server_group

# Put first on PYTHONPATH: while the start's attempt number is below CIFAR_TEST_TAKEN_UNTIL, BentoML's choice of a
# free port for circus's control sockets returns a port another program holds.
TAKEN_PORT = """
import os

if os.environ.get("CIFAR_TEST_TAKEN_PORT"):
    attempt = int(os.environ.get("CIFAR_SERVE_ATTEMPT") or 1)
    if attempt < int(os.environ["CIFAR_TEST_TAKEN_UNTIL"]):
        import contextlib

        import bentoml._internal.utils as utils

        free = utils.reserve_free_port

        def taken(*args, **kwargs):
            if args or kwargs:  # a port asked for by number or prefix: not circus's
                return free(*args, **kwargs)
            return contextlib.nullcontext(int(os.environ["CIFAR_TEST_TAKEN_PORT"]))

        utils.reserve_free_port = taken
"""


def _env_with_hook(tmp_path: Path, hook_code: str, **variables: str) -> dict:
    """The environment of a server with ``hook_code`` as its sitecustomize (first on PYTHONPATH), ``variables`` set,
    and its start counted from the first."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(hook_code)
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]),
        **variables,
    }
    env.pop("CIFAR_SERVE_ATTEMPT", None)
    return env


def _hooked_env(tmp_path: Path, taken_until: int) -> tuple[dict, socket.socket]:
    """The environment of a server whose first ``taken_until - 1`` starts lose a control port, and the socket that
    holds the port they lose (the caller closes it)."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = str(holder.getsockname()[1])
    env = _env_with_hook(tmp_path, TAKEN_PORT, CIFAR_TEST_TAKEN_PORT=port, CIFAR_TEST_TAKEN_UNTIL=str(taken_until))
    return env, holder


def _start_that_ends(models_dir: Path, log_path: Path, env: dict) -> subprocess.Popen:
    """A server start that is to end by itself, waited for; made again on another port where its own HTTP port was
    lost between free_port and the server's bind (another program's race, not what these tests are about)."""
    for start in range(1, 4):
        port = free_port()
        with open(log_path, "w") as log_file:
            proc = spawn_server(port, models_dir, "--threads", "1", log=log_file, env=env)
        try:
            proc.wait(timeout=120)
        finally:
            stop_server_group(proc)
        if not (start < 3 and lost_its_port(proc, log_path, port)):
            break
    return proc


def test_a_start_that_loses_a_control_port_starts_again_and_serves(tiny_models_dir, tmp_path):
    env, holder = _hooked_env(tmp_path, taken_until=3)
    log_path = tmp_path / "server.log"
    try:
        proc, _ = serve_on_free_port(tiny_models_dir, log_path, "--threads", "1", env=env, timeout=120)
        try:
            log = log_path.read_text()
            assert "starting again (2 of 3)" in log and "starting again (3 of 3)" in log, log[-3000:]
            assert "Traceback" not in log, log[-3000:]
        finally:
            stop_server_group(proc)
    finally:
        holder.close()


def test_a_start_that_keeps_losing_its_control_ports_says_so_in_one_line(tiny_models_dir, tmp_path):
    env, holder = _hooked_env(tmp_path, taken_until=99)
    log_path = tmp_path / "server.log"
    try:
        proc = _start_that_ends(tiny_models_dir, log_path, env)
    finally:
        holder.close()
    assert proc.returncode == 1, log_path.read_text()[-3000:]
    log = log_path.read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not bind its control sockets in 3 starts" in errors[0], log[-3000:]
    assert "start the service again" in errors[0]
    assert "Traceback" not in log, log[-3000:]


def test_the_users_port_taken_after_serves_check_is_said_in_one_line(tiny_models_dir, tmp_path):
    """Another program takes the port in the seconds between serve's check and BentoML's bind: serve's own one line
    (status 2), not circus's traceback (status 1)."""
    from test_server_starts import CHECK_PASSES

    env = _env_with_hook(tmp_path, CHECK_PASSES)
    log_path = tmp_path / "server.log"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with open(log_path, "w") as log_file:
            proc = spawn_server(port, tiny_models_dir, "--threads", "1", log=log_file, env=env)
        try:
            proc.wait(timeout=120)
        finally:
            stop_server_group(proc)
    log = log_path.read_text()
    assert proc.returncode == 2, log[-3000:]
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (taken by another program as the server "
        "started): start again, or choose another --port"
    ], log[-3000:]
    assert "Traceback" not in log, log[-3000:]


# Put first on PYTHONPATH: the first start is asked to stop (SIGTERM, as a supervisor sends) just before circus
# finds its control port taken.
STOPPED_WHILE_STARTING = """
import os

if os.environ.get("CIFAR_TEST_STOP_THEN_LOSE") and not os.environ.get("CIFAR_SERVE_ATTEMPT"):
    import errno
    import signal

    import circus.controller
    import zmq

    def start(self):
        os.kill(os.getpid(), signal.SIGTERM)
        raise zmq.ZMQError(errno.EADDRINUSE)

    circus.controller.Controller.start = start
"""


def test_a_start_asked_to_stop_before_it_lost_a_control_port_is_not_started_again(tiny_models_dir, tmp_path):
    """circus's handler only queues the stop on an event loop the failed start never runs: the start was made again
    and served, the supervisor's SIGTERM lost."""
    env = _env_with_hook(tmp_path, STOPPED_WHILE_STARTING, CIFAR_TEST_STOP_THEN_LOSE="1")
    log_path = tmp_path / "server.log"
    proc = _start_that_ends(tiny_models_dir, log_path, env)
    log = log_path.read_text()
    assert proc.returncode == 128 + 15, log[-3000:]
    assert "stopped (SIGTERM) while starting" in log and "starting again" not in log, log[-3000:]


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGQUIT"])
def test_every_signal_circus_quits_on_is_recorded_as_a_stop(sig, monkeypatch):
    """circus answers INT, TERM and QUIT (Ctrl-\\) alike with a quit; a QUIT was not recorded, and the start was
    made again. The handler is circus's own, its controller a stand-in: nothing is started."""
    import signal
    import types

    from circus.sighandler import SysHandler

    from service.bentoml_serve import stop_signals

    monkeypatch.setattr(SysHandler, "signal", SysHandler.signal)  # stop_signals replaces it: restored after
    monkeypatch.setattr(SysHandler, "_register", lambda self: None)  # the test process keeps its own handlers
    quits: list[object] = []
    loop = types.SimpleNamespace(add_callback_from_signal=lambda *args: quits.append(args))
    stops = stop_signals()
    SysHandler(types.SimpleNamespace(loop=loop, dispatch=None)).signal(getattr(signal, sig))
    assert stops == [getattr(signal, sig)] and len(quits) == 1
