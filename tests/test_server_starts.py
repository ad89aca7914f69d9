"""The tests' servers start on a port that free_port found and let go: another program may take it before the server
binds it, either before serve's own check of the port (one line, status 2) or in the seconds between that check and
BentoML's bind (a traceback, status 1). Either start is made again on another port, not failed
(conftest.serve_on_free_port)."""

from __future__ import annotations

import os
import socket

import httpx
import pytest

import conftest
from conftest import ROOT, running_service

# Put first on PYTHONPATH: `python -m service serve`'s check of its port passes, as it does when another program
# takes the port only after the check.
CHECK_PASSES = """
import sys

if sys.orig_argv[1:4] == ["-m", "service", "serve"]:
    import service.serve_cli

    service.serve_cli.bind_error = lambda host, port: None
"""


@pytest.fixture
def first_port_taken(monkeypatch):
    """free_port's first answer is a port another program listens on, its later ones free ports: the ports it
    handed out, in order."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    handed: list[int] = []
    free = conftest.free_port

    def port() -> int:
        handed.append(taken.getsockname()[1] if not handed else free())
        return handed[-1]

    monkeypatch.setattr(conftest, "free_port", port)
    yield handed
    taken.close()


@pytest.mark.slow
@pytest.mark.parametrize("taken", ["before serve's check", "after serve's check"])
def test_a_server_whose_port_is_taken_before_it_binds_it_starts_again_on_another(
    tiny_models_dir, tmp_path, first_port_taken, taken
):
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml_home"), "BENTOML_DO_NOT_TRACK": "true"}
    if taken == "after serve's check":
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(CHECK_PASSES)
        env["PYTHONPATH"] = os.pathsep.join([str(hook), str(ROOT)])
    with running_service(tiny_models_dir, tmp_path / "server.log", "--threads", "1", env=env) as url:
        assert len(first_port_taken) == 2 and url == f"http://127.0.0.1:{first_port_taken[1]}", first_port_taken
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
