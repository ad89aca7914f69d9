"""A server start that loses one of BentoML's internal control ports to another program (circus picks a free port,
lets it go, binds it again a moment later) starts again, rather than dying with ZMQ's traceback about a port the
user never chose; a host where that keeps happening gets one line."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, free_port, spawn_server, stop_server_group

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


def _serve(models_dir: Path, tmp_path: Path, taken_until: int):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(TAKEN_PORT)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "bentoml_home"),
        "BENTOML_DO_NOT_TRACK": "true",
        "PYTHONPATH": os.pathsep.join([str(hook), str(ROOT)]),
        "CIFAR_TEST_TAKEN_PORT": str(holder.getsockname()[1]),
        "CIFAR_TEST_TAKEN_UNTIL": str(taken_until),
    }
    env.pop("CIFAR_SERVE_ATTEMPT", None)
    port = free_port()
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = spawn_server(port, models_dir, "--threads", "1", log=log, env=env)
    return proc, f"http://127.0.0.1:{port}", log_path, holder


def test_a_start_that_loses_a_control_port_starts_again_and_serves(tiny_models_dir, tmp_path):
    proc, url, log_path, holder = _serve(tiny_models_dir, tmp_path, taken_until=3)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        else:
            pytest.fail(f"not ready in 120 s:\n{log_path.read_text()[-3000:]}")
        log = log_path.read_text()
        assert "starting again (2 of 3)" in log and "starting again (3 of 3)" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
    finally:
        stop_server_group(proc)
        holder.close()


def test_a_start_that_keeps_losing_its_control_ports_says_so_in_one_line(tiny_models_dir, tmp_path):
    proc, _, log_path, holder = _serve(tiny_models_dir, tmp_path, taken_until=99)
    try:
        assert proc.wait(timeout=120) == 1
    finally:
        stop_server_group(proc)
        holder.close()
    log = log_path.read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "could not bind its control sockets in 3 starts" in errors[0], log[-3000:]
    assert "start the service again" in errors[0]
    assert "Traceback" not in log, log[-3000:]
