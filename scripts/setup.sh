#!/usr/bin/env bash
# Create .venv and install the project. Idempotent: a rerun also repairs what an interrupted run left (a .venv
# whose Python does not run is made again, one without pip gets it back).
#   bash scripts/setup.sh          everything: serving, training/export (torch), Ray Data scoring and tests
#   bash scripts/setup.sh serve    serving only: no torch
set -euo pipefail
cd "$(dirname "$0")/.."
case "$*" in
    "" | all) variant=all ;;
    serve) variant=serve ;;
    *)
        echo "setup: unknown argument '$*': bash scripts/setup.sh (everything) or bash scripts/setup.sh serve" \
            "(serving only)" >&2
        exit 2
        ;;
esac
# Refuse at once when the disk cannot hold the install: pip would otherwise stop midway with "No space left on
# device" and leave a half-built .venv. Each figure is that install's .venv (README.md gives their sizes; the full
# one holds a CUDA build of torch with its NVIDIA libraries) plus, for the full one, room for the dataset cache and
# the tests, which the serving install has neither of. SETUP_NEED_MB overrides the figure.
if [ "$variant" = serve ]; then
    need_mb=${SETUP_NEED_MB:-1000}
    need_for=".venv"
else
    need_mb=${SETUP_NEED_MB:-9000}
    need_for=".venv, the dataset cache and the tests"
fi
# A figure `[ -lt ]` cannot read makes the comparison false, which would let any disk through.
if ! [[ $need_mb =~ ^[0-9]+$ ]]; then
    echo "setup: SETUP_NEED_MB must be a whole number of megabytes (9000 for 9 GB), not '$need_mb'" >&2
    exit 2
fi
need_mb=$((10#$need_mb)) # 0900 is 900 MB, not an invalid octal number
free_mb=$(df -Pm . | awk 'NR == 2 {print $4}')
venv_mb=0
if [ -d .venv ]; then venv_mb=$(du -sm .venv | cut -f1); fi
if [ $((free_mb + venv_mb)) -lt "$need_mb" ]; then
    echo "setup: not enough disk: this install needs about $((need_mb / 1000)) GB (${need_mb} MB) for $need_for;" \
        "$(pwd) has ${free_mb} MB free (plus ${venv_mb} MB in .venv). Free some space, or clone onto a larger disk." >&2
    exit 1
fi

# Prints the version of the Python $1; fails with 1 when it is older than pyproject.toml's requires-python, with
# another status when it does not run at all.
python_version() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3]); sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

make_venv() { # $@: options of `python3 -m venv`
    local version status=0
    if ! command -v python3 >/dev/null; then
        echo "setup: no python3 on PATH: install Python 3.11 or newer and run setup again" >&2
        exit 1
    fi
    version=$(python_version python3) || status=$?
    if [ "$status" -eq 1 ]; then
        echo "setup: python3 is Python $version; this project needs 3.11 or newer: put one first on PATH as" \
            "python3 and run setup again" >&2
        exit 1
    elif [ "$status" -ne 0 ]; then
        echo "setup: python3 ($(command -v python3)) does not run (exit $status): install Python 3.11 or newer" >&2
        exit 1
    fi
    python3 -m venv "$@" .venv
}

# A .venv whose Python does not run (removed or upgraded under it, or never written by an interrupted run) holds
# nothing usable: `venv` alone would keep its dead links, so it is made again from empty.
if [ ! -e .venv ]; then
    make_venv
elif ! .venv/bin/python -c '' 2>/dev/null; then
    echo "setup: .venv's Python does not run (removed or upgraded since, or an earlier setup stopped while making" \
        ".venv): making .venv again" >&2
    make_venv --clear
fi
# One that runs but is too old (made by another Python) may be someone's: say so rather than delete it.
if ! version=$(python_version .venv/bin/python); then
    echo "setup: .venv holds Python $version, made by another Python; this project needs 3.11 or newer: remove it" \
        "(rm -rf .venv) and run setup again" >&2
    exit 1
fi
# A `venv` stopped midway, or run by a Debian python3 without its python3-venv package, leaves a Python without pip.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "setup: .venv has no pip (an earlier setup stopped while making it): installing it" >&2
    if ! .venv/bin/python -m ensurepip --upgrade >/dev/null; then
        echo "setup: could not install pip into .venv (Debian and Ubuntu: apt-get install python3-venv);" \
            "run setup again once fixed" >&2
        exit 1
    fi
fi

# pip's own last words for an index it cannot reach are "No matching distribution found for setuptools>=68":
# add what that means and that a rerun goes on from where this one stopped.
pip_install() { # $1: what, for the message; the rest: pip's arguments
    local what=$1
    shift
    if ! .venv/bin/python -m pip install -q "$@"; then
        echo "setup: pip could not install $what (its error is above: \"No matching distribution found\" for a" \
            "package that exists means the package index is unreachable; pip config list names it); run setup" \
            "again once fixed" >&2
        exit 1
    fi
}

pip_install pip --upgrade pip
# Every serving package at the version the Bento's image installs (deploy/serving.lock, which
# scripts/lock_serving.py writes from a tested environment): the tests run what ships.
if [ "$variant" = serve ]; then
    pip_install "the serving packages" -c deploy/serving.lock -e .
else
    pip_install "the training, test and serving packages" -c deploy/serving.lock -e ".[train,test,ray]"
    # Debian packages the tests use, installed when missing (root and apt-get only; otherwise those tests skip
    # and say why): Chromium, which the page's browser test drives through Playwright (never Playwright's own
    # download), and docker-compose, whose `config` checks deploy/compose.yaml (no daemon needed).
    missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
    if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
            || echo "could not install ${missing[*]}: the tests that need them will be skipped" >&2
    fi
fi
# pip's -q leaves its editable-install notice as the last words on screen: say that all went well.
if [ "$variant" = serve ]; then
    echo "setup: done (.venv holds the serving install; pip's notice about editable installs above is expected); run with .venv/bin/python, or source .venv/bin/activate first" >&2
else
    echo "setup: done (.venv holds training, tests and serving; pip's notice about editable installs above is expected); run with .venv/bin/python, or source .venv/bin/activate first" >&2
fi
