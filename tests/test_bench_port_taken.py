"""A service benchmark starts its server on a port free a moment before: another program taking it in between
ended the run with "the service exited with status 2 before it was ready: error: cannot listen on ...: Address
already in use", about a port the user never chose. The start is made again on another port."""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys

import httpx
import pytest

from conftest import ROOT
from inference.errors import UsageError

sys.path.insert(0, str(ROOT / "bench"))

import service_runs  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the benchmarks read /proc")

# What `python -m service serve` does with its port, and nothing else: refuse a taken one as serve's check says it
# (status 2), or answer GET /readyz with 200.
STAND_IN = """
import http.server, socket, sys

port = int(sys.argv[1])
try:
    server = http.server.HTTPServer(("127.0.0.1", port), type("H", (http.server.BaseHTTPRequestHandler,), {
        "do_GET": lambda self: (self.send_response(200), self.end_headers()),
        "log_message": lambda self, *a: None,
    }))
except OSError as exc:
    print(f"error: cannot listen on 127.0.0.1:{port}: {exc.strerror}", flush=True)
    sys.exit(2)
print("ready:", flush=True)
server.serve_forever()
"""

ARGS = argparse.Namespace(url=None, models_dir="models", max_batch_size=256, serve_arg=[], streams=0, threads=0)


@pytest.fixture
def started(monkeypatch):
    """The ports each stand-in server was started on, in order."""
    ports: list[int] = []
    servers: list[subprocess.Popen] = []

    def spawn(port, models_dir, *args, log, env=None):
        ports.append(port)
        command = [sys.executable, "-c", STAND_IN, str(port)]
        servers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        return servers[-1]

    monkeypatch.setattr(service_runs, "spawn_server", spawn)
    yield ports
    for server in servers:  # whatever the code under test left running
        service_runs.stop_server(server)


def _taken() -> socket.socket:
    """A port another program listens on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def test_a_port_taken_before_the_server_binds_it_is_replaced_by_another(started, monkeypatch, capsys):
    with _taken() as holder:
        first = holder.getsockname()[1]
        picks = iter([first, service_runs.free_port()])
        monkeypatch.setattr(service_runs, "free_port", lambda: next(picks))
        with service_runs.serving(ARGS) as (host, port, server):
            assert started == [first, port] and port != first
            assert httpx.get(f"http://{host}:{port}/readyz", timeout=5).status_code == 200  # ours, not the holder
            service_runs.wait_ready(host, port, server)
            log = service_runs.LOGS[server.pid]
    assert server.poll() is not None and not log.exists()
    err = capsys.readouterr().err
    assert f"port {first} was taken by another program before the server bound it: starting it on another (2 of 3)" in (
        err
    )
    assert err.count("server log: ") == 2 and len(service_runs.LOGS) == 0  # the lost start's log removed too


def test_three_taken_ports_are_said_in_one_line_and_nothing_is_left_running(started, monkeypatch):
    holders = [_taken() for _ in range(3)]
    try:
        picks = iter([h.getsockname()[1] for h in holders])
        monkeypatch.setattr(service_runs, "free_port", lambda: next(picks))
        with pytest.raises(UsageError) as refused:
            service_runs.open_server(ARGS)
    finally:
        for holder in holders:
            holder.close()
    message = str(refused.value)
    assert len(started) == 3 and "\n" not in message
    assert message.startswith("another program took the port the service was started on before it could bind it, 3")
    assert f"ports {', '.join(map(str, started))}" in message and "give its --url" in message
    last_log = service_runs.LOGS.pop(next(iter(service_runs.LOGS)))  # kept: the message names it
    assert str(last_log) in message
    last_log.unlink()


def test_a_server_that_fails_for_another_reason_is_not_started_again(monkeypatch):
    """A --serve-arg the service refuses fails the same on every port: one start, its own message."""
    starts = []

    def refusing(port, models_dir, *args, log, env=None):
        starts.append(port)
        code = "print('error: --max-images must be at least 1'); raise SystemExit(2)"
        command = [sys.executable, "-c", code]
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    monkeypatch.setattr(service_runs, "spawn_server", refusing)
    with pytest.raises(UsageError, match="exited with status 2 before it was ready: error: --max-images must be"):
        service_runs.open_server(ARGS)
    assert len(starts) == 1
    service_runs.LOGS.popitem()[1].unlink()
