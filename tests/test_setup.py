"""scripts/setup.sh refuses, before creating or installing anything, a disk that cannot hold the install."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

# What a python3 that the check let through does: stop the script with a code no other step gives.
PASSED_THE_CHECK = 42
VENV_MB = 200


def _free_mb(path: Path) -> int:
    return shutil.disk_usage(path).free // 2**20


@pytest.fixture
def checkout(tmp_path):
    """A copy of scripts/setup.sh in an empty project, with a python3 on PATH that exits PASSED_THE_CHECK."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(f"#!/bin/sh\nexit {PASSED_THE_CHECK}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _setup(checkout: Path, need_mb: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{checkout / 'bin'}:{os.environ['PATH']}", "SETUP_NEED_MB": str(need_mb)}
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "setup.sh"), *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("variant", [(), ("serve",)])
def test_setup_refuses_a_disk_too_small_in_one_line_before_creating_the_venv(checkout, variant):
    result = _setup(checkout, _free_mb(checkout) + 10**6, *variant)
    assert result.returncode == 1, result.stderr
    assert "setup: not enough disk" in result.stderr
    assert "MB free" in result.stderr and "Traceback" not in result.stderr
    assert not (checkout / ".venv").exists()


def test_setup_counts_an_existing_venv_as_room_it_already_has(checkout):
    venv = checkout / ".venv"
    venv.mkdir()
    with open(venv / "blob", "wb") as f:  # real blocks, which du counts
        f.write(b"\0" * VENV_MB * 2**20)
    margin = VENV_MB // 2  # far above what the disk's other users write during the test
    free = _free_mb(checkout)
    assert _setup(checkout, free + VENV_MB - margin).returncode == PASSED_THE_CHECK
    refused = _setup(checkout, free + VENV_MB + margin)
    assert refused.returncode == 1, refused.stderr
    counted = re.search(r"plus (\d+) MB in \.venv", refused.stderr)
    assert counted and VENV_MB <= int(counted.group(1)) <= VENV_MB + 2  # du rounds up
