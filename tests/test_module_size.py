"""One module, one job (issue 16, ../shared/STYLE.md): no module of the HTTP service and the scorer grows past
450 lines. A module past it is doing more than one thing: split it by job, as service/service.py was into
gates.py, request_bodies.py and their kin."""

from __future__ import annotations

from conftest import ROOT

LIMIT = 450


def test_no_module_of_the_service_is_over_the_limit():
    over = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "service").rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert over == {}, f"split these by job: {over}"
