"""`score --engine ray` refusing a cluster address it cannot use, in one line: a token that is missing, an address
Ray cannot parse (no token hint for it). Each runs the real command, whose ray.init fails before any connection."""

from __future__ import annotations

import socket

import pytest

from conftest import score_with_ray

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install -e '.[ray]')")


def test_token_mode_without_a_token_is_one_line(tmp_path):
    """RAY_AUTH_MODE=token, as docs/ray.md says to set for an explicit address, with the token forgotten: Ray's
    AuthenticationError, said in one line (it was a traceback and exit 1)."""
    with socket.socket() as listening:  # an address that answers, so that the command gets as far as ray.init
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = "127.0.0.1:%d" % listening.getsockname()[1]
        done = score_with_ray(tmp_path, "--address", address, RAY_AUTH_MODE="token")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2, done.stderr
    said = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1, done.stderr
    assert said[0].startswith(f"error: cannot start or reach Ray at {address}: "), said
    assert "no authentication token was found" in said[0], said


def test_an_address_ray_cannot_parse_gets_no_token_hint(tmp_path):
    """`--address garbage` is Ray's "Invalid address format": a token would not help, so none is suggested."""
    done = score_with_ray(tmp_path, "--address", "garbage")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "error: cannot start or reach Ray at garbage: Invalid address format: garbage" in done.stderr
    assert "RAY_AUTH_MODE" not in done.stderr, done.stderr
