"""scripts/setup.sh's refusal of a disk too small names what that install puts on it: the serving install has no
dataset cache and no tests, so its line must not ask for room for them."""

from __future__ import annotations

import pytest

from test_setup import _calls, _free_mb, _stop_at_python, checkout  # noqa: F401  (checkout: the fixture)


@pytest.mark.parametrize(
    ("variant", "needs_room_for"),
    [((), ".venv, the dataset cache and the tests;"), (("serve",), ".venv;")],
)
def test_setup_says_what_the_disk_must_hold_for_the_install_asked_for(checkout, variant, needs_room_for):  # noqa: F811
    need_mb = _free_mb(checkout) + 10**6
    result = _stop_at_python(checkout, *variant, need_mb=need_mb)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"setup: not enough disk: this install needs about {need_mb // 1000} GB ({need_mb} MB)")
    assert f"({need_mb} MB) for {needs_room_for} " in line
    if variant:
        assert "dataset cache" not in line and "tests" not in line
    assert _calls(checkout) == []
