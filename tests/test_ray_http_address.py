"""`score --engine ray` given an HTTP address (the dashboard's, which `ray job submit --address` takes): one line
naming where the address came from, not Ray's three-line refusal that blames RAY_ADDRESS for --address too."""

from __future__ import annotations

import pytest

from conftest import score_with_ray

pytest.importorskip("ray.data", reason="the ray extra is not installed (pip install -e '.[ray]')")


@pytest.mark.parametrize(
    ("flags", "env", "named"),
    [
        (("--address", "http://127.0.0.1:8265"), {}, "--address http://127.0.0.1:8265"),
        (("--address", "HTTPS://head:8265"), {}, "--address HTTPS://head:8265"),
        # pasted with a space: Ray's refusal was two lines about a module named " http"
        (("--address", " http://head:8265"), {}, "--address  http://head:8265"),
        ((), {"RAY_ADDRESS": "http://127.0.0.1:8265"}, "RAY_ADDRESS=http://127.0.0.1:8265"),
    ],
)
def test_an_http_address_is_refused_in_one_line_naming_its_source(tmp_path, flags, env, named):
    done = score_with_ray(tmp_path, *flags, **env)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {named} is an HTTP address"), lines
    assert "HEAD:6379" in lines[0], lines
    if not env:
        assert "RAY_ADDRESS" not in done.stderr, done.stderr
    assert not (tmp_path / "out.csv").exists()


def test_a_multi_line_refusal_from_ray_init_is_said_in_one_line(monkeypatch):
    from types import SimpleNamespace

    from service.score import ray_connect
    from service.score.errors import UserError

    def init(**_):
        raise ValueError("Module: x does not exist.\nThis module was parsed from Address: x")

    fake_ray = SimpleNamespace(
        is_initialized=lambda: False, init=init, exceptions=SimpleNamespace(AuthenticationError=OSError)
    )
    monkeypatch.setattr(ray_connect, "_errors_to_stderr", lambda ray: None)
    monkeypatch.setattr(ray_connect, "check_reachable", lambda address: None)
    with pytest.raises(UserError) as refused:
        ray_connect._connect(fake_ray, "x")
    said = str(refused.value)
    assert "\n" not in said, said
    assert said == "cannot start or reach Ray at x: Module: x does not exist. This module was parsed from Address: x"
