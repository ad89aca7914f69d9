"""`score --engine ray` refusing a cluster address it cannot use, in one line: a token that is missing, an address
Ray cannot parse (no token hint for it). Each runs the real command, whose ray.init fails before any connection."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install -e '.[ray]')")

# Ray reads a cluster's token from these, and from ~/.ray/auth_token (HOME is a fresh folder here).
TOKEN_VARIABLES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS")


def _score(tmp_path: Path, address: str, **env: str) -> subprocess.CompletedProcess[str]:
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photos / "a.png")
    home = tmp_path / "home"
    home.mkdir()
    environment = {k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES}
    environment.update(HOME=str(home), **env)
    command = [sys.executable, "-m", "service", "score", str(photos), "--engine", "ray", "--address", address]
    return subprocess.run(
        [*command, "--out", str(tmp_path / "out.csv")],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_token_mode_without_a_token_is_one_line(tmp_path):
    """RAY_AUTH_MODE=token, as docs/ray.md says to set for an explicit address, with the token forgotten: Ray's
    AuthenticationError, said in one line (it was a traceback and exit 1)."""
    with socket.socket() as listening:  # an address that answers, so that the command gets as far as ray.init
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = "127.0.0.1:%d" % listening.getsockname()[1]
        done = _score(tmp_path, address, RAY_AUTH_MODE="token")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1, done.stderr
    assert said[0].startswith(f"error: cannot start or reach Ray at {address}: "), said
    assert "no authentication token was found" in said[0], said


def test_an_address_ray_cannot_parse_gets_no_token_hint(tmp_path):
    """`--address garbage` is Ray's "Invalid address format": a token would not help, so none is suggested."""
    done = _score(tmp_path, "garbage")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "error: cannot start or reach Ray at garbage: Invalid address format: garbage" in done.stderr
    assert "RAY_AUTH_MODE" not in done.stderr, done.stderr
