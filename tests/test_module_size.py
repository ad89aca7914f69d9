"""One module, one job (issue 16, ../shared/STYLE.md): no module of the product grows past 450 lines. A module
past it is doing more than one thing: split it by job, as service/service.py was into gates.py, request_bodies.py
and their kin, and training/config.py into the YAML reader, the recipes, the overrides and the checks."""

from __future__ import annotations

import pytest

from conftest import ROOT

LIMIT = 450
PACKAGES = ("service", "training", "export", "inference")


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_over_the_limit(package):
    over = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / package).rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert over == {}, f"split these by job: {over}"
