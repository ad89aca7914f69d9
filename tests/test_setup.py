"""scripts/setup.sh, driven with a stand-in Python: it refuses, before creating or installing anything, a disk that
cannot hold the install, an argument or a figure it cannot read and a Python too old; a rerun repairs the .venv an
interrupted run left; a failed pip install ends in one line saying what failed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

VENV_MB = 200
# A stand-in for python3 and for the .venv's python: it reports the version it is given as its own (to code that
# reads sys.version_info), and records its `-m` calls instead of making a real environment or installing anything.
# `-m venv` makes a .venv of stand-ins the way `venv` does (pip in it unless --without-pip, an activate script
# that puts its bin/ first on PATH) and, as `venv` does, fails on a .venv whose python link points nowhere unless
# --clear. FAKE_PYTHON_STOP: record that python3 was reached and exit 42 at once.
FAKE_PYTHON = """\
#!{python}
import collections, os, shutil, sys
from pathlib import Path

here = Path(sys.argv[0]).absolute()
log = Path(os.environ["FAKE_PYTHON_LOG"])
if os.environ.get("FAKE_PYTHON_STOP"):
    log.write_text("python3 reached\\n")
    sys.exit(42)
cfg = here.parent.parent / "pyvenv.cfg"
in_venv = cfg.exists()
version = cfg.read_text().split("=")[1].strip() if in_venv else os.environ.get("FAKE_PYTHON_VERSION", "3.11.7")
args = sys.argv[1:]
if args[:1] == ["-c"]:
    info = collections.namedtuple("version_info", "major minor micro releaselevel serial")
    sys.version_info = info(*map(int, version.split(".")), "final", 0)
    exec(args[1], {{"__name__": "__main__"}})
    sys.exit(0)
with log.open("a") as f:
    f.write(("venv " if in_venv else "python3 ") + " ".join(args) + "\\n")
if args[:2] == ["-m", "venv"]:
    target = Path(args[-1]).absolute()
    python = target / "bin" / "python"
    if "--clear" in args:
        shutil.rmtree(target, ignore_errors=True)
    elif python.is_symlink() and not python.exists():
        sys.exit(f"Error: [Errno 2] No such file or directory: '{{python}}'")
    python.parent.mkdir(parents=True, exist_ok=True)
    (target / "pyvenv.cfg").write_text(f"version = {{version}}\\n")
    shutil.copy(here, python)
    (python.parent / "activate").write_text(f'PATH="{{python.parent}}:$PATH"\\nexport PATH\\n')
    if "--without-pip" not in args:
        (target / "pip").touch()
elif args[:2] == ["-m", "ensurepip"]:
    (here.parent.parent / "pip").touch()
elif args[:2] == ["-m", "pip"]:
    if not (here.parent.parent / "pip").exists():
        sys.exit(f"{{here}}: No module named pip")
    if args[2:3] == ["install"] and "-e" in args and os.environ.get("FAKE_PIP_FAILS"):
        sys.exit("ERROR: No matching distribution found for setuptools>=68")
"""


def _free_mb(path: Path) -> int:
    return shutil.disk_usage(path).free // 2**20


@pytest.fixture
def checkout(tmp_path):
    """A copy of scripts/setup.sh in an empty project, with the stand-in python3 first on PATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _setup(checkout: Path, *args: str, need_mb: int | str = 1, **env: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": f"{checkout / 'bin'}:{os.environ['PATH']}",
        "SETUP_NEED_MB": str(need_mb),
        "FAKE_PYTHON_LOG": str(checkout / "calls.log"),
        **env,
    }
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "setup.sh"), *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _calls(checkout: Path) -> list[str]:
    log = checkout / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def _stop_at_python(checkout: Path, *args: str, need_mb: int | str) -> subprocess.CompletedProcess:
    """setup.sh up to its first call of python3: _calls() then says whether the checks before it let it through."""
    return _setup(checkout, *args, need_mb=need_mb, FAKE_PYTHON_STOP="1")


def _installed(checkout: Path) -> list[str]:
    return [call for call in _calls(checkout) if call.startswith("venv -m pip install") and "-e" in call.split()]


# ---------------------------------------------------------------------------------------------- refusals up front
@pytest.mark.parametrize("variant", [(), ("serve",)])
def test_setup_refuses_a_disk_too_small_in_one_line_before_creating_the_venv(checkout, variant):
    result = _stop_at_python(checkout, *variant, need_mb=_free_mb(checkout) + 10**6)
    assert result.returncode == 1, result.stderr
    assert "setup: not enough disk" in result.stderr
    assert "MB free" in result.stderr and "Traceback" not in result.stderr
    assert not (checkout / ".venv").exists() and _calls(checkout) == []


def test_setup_counts_an_existing_venv_as_room_it_already_has(checkout):
    venv = checkout / ".venv"
    venv.mkdir()
    with open(venv / "blob", "wb") as f:  # real blocks, which du counts
        f.write(b"\0" * VENV_MB * 2**20)
    margin = VENV_MB // 2  # far above what the disk's other users write during the test
    free = _free_mb(checkout)
    refused = _stop_at_python(checkout, need_mb=free + VENV_MB + margin)
    assert refused.returncode == 1 and _calls(checkout) == [], refused.stderr
    counted = re.search(r"plus (\d+) MB in \.venv", refused.stderr)
    assert counted and VENV_MB <= int(counted.group(1)) <= VENV_MB + 2  # du rounds up
    _stop_at_python(checkout, need_mb=free + VENV_MB - margin)
    assert _calls(checkout) == ["python3 reached"]


@pytest.mark.parametrize("argument", ["serving", "--serve", "serve extra"])
def test_setup_refuses_an_argument_it_does_not_know_instead_of_installing_everything(checkout, argument):
    result = _stop_at_python(checkout, *argument.split(), need_mb=1)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"setup: unknown argument '{argument}'") and "setup.sh serve" in line
    assert _calls(checkout) == []


@pytest.mark.parametrize("figure", ["9G", "9 000", "-1", "lots"])
def test_setup_refuses_a_setup_need_mb_it_cannot_read_instead_of_skipping_the_disk_check(checkout, figure):
    result = _stop_at_python(checkout, "serve", need_mb=figure)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("setup: SETUP_NEED_MB must be a whole number of megabytes") and repr(figure) in line
    assert _calls(checkout) == []


def test_setup_reads_a_setup_need_mb_with_leading_zeros_as_decimal_megabytes(checkout):
    need_mb = _free_mb(checkout) + 10**6
    result = _stop_at_python(checkout, "serve", need_mb=f"0{need_mb}")  # not octal, which has no 8 or 9
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("setup: not enough disk") and f"({need_mb} MB)" in line
    assert _calls(checkout) == []


def test_setup_refuses_a_python3_too_old_before_making_the_venv(checkout):
    result = _setup(checkout, "serve", FAKE_PYTHON_VERSION="3.10.13")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("setup: python3 is Python 3.10.13; this project needs 3.11 or newer")
    assert not (checkout / ".venv").exists() and _calls(checkout) == []


# ---------------------------------------------------------------------------------------------- the .venv it finds
def test_setup_twice_makes_the_venv_once_and_installs_each_time(checkout):
    for _ in range(2):
        result = _setup(checkout, "serve")
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines()[-1].startswith("setup: done")
    assert [c for c in _calls(checkout) if "-m venv" in c] == ["python3 -m venv .venv"]
    assert _installed(checkout) == ["venv -m pip install -q -c deploy/serving.lock -e ."] * 2


def test_setup_gives_pip_back_to_a_venv_an_interrupted_run_left_without_it(checkout):
    subprocess.run(
        [checkout / "bin" / "python3", "-m", "venv", "--without-pip", ".venv"],
        cwd=checkout,
        env={**os.environ, "FAKE_PYTHON_LOG": str(checkout / "made.log")},
        check=True,
    )
    result = _setup(checkout, "serve")
    assert result.returncode == 0, result.stderr
    assert "setup: .venv has no pip" in result.stderr and "No module named pip" not in result.stderr
    assert "venv -m ensurepip --upgrade" in _calls(checkout) and len(_installed(checkout)) == 1


def test_setup_makes_again_a_venv_whose_python_was_removed(checkout):
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "pyvenv.cfg").write_text("version = 3.11.2\n")
    (checkout / ".venv" / "bin" / "python").symlink_to("/nonexistent/python3.11")  # its Python was uninstalled
    result = _setup(checkout, "serve")
    assert result.returncode == 0, result.stderr
    assert "setup: .venv's Python does not run" in result.stderr
    assert "python3 -m venv --clear .venv" in _calls(checkout) and len(_installed(checkout)) == 1
    assert (checkout / ".venv" / "bin" / "python").exists()


def test_setup_refuses_in_one_line_a_venv_of_a_python_too_old_and_leaves_it(checkout):
    made = _setup(checkout, "serve", FAKE_PYTHON_VERSION="3.11.7")
    assert made.returncode == 0, made.stderr
    (checkout / ".venv" / "pyvenv.cfg").write_text("version = 3.10.13\n")  # as another Python would have made it
    (checkout / "calls.log").unlink()
    result = _setup(checkout, "serve")
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("setup: .venv holds Python 3.10.13") and "rm -rf .venv" in line
    assert _calls(checkout) == [] and (checkout / ".venv" / "bin" / "python").exists()


@pytest.mark.parametrize("variant", [(), ("serve",)])
def test_setup_ends_a_failed_pip_install_with_one_line_saying_what_failed(checkout, variant):
    result = _setup(checkout, *variant, FAKE_PIP_FAILS="1")
    assert result.returncode == 1, result.stderr
    *pip_said, said = result.stderr.splitlines()
    assert said.startswith("setup: pip could not install the ") and "index is unreachable" in said
    assert "run setup again" in said and "Traceback" not in result.stderr
    assert pip_said[-1] == "ERROR: No matching distribution found for setuptools>=68"  # pip's own, kept
