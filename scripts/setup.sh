#!/usr/bin/env bash
# Create .venv and install the project (idempotent).
#   bash scripts/setup.sh          everything: serving, training/export (torch), Ray Data scoring and tests
#   bash scripts/setup.sh serve    serving only: no torch
set -euo pipefail
cd "$(dirname "$0")/.."
# Refuse at once when the disk cannot hold the install: pip would otherwise stop midway with "No space left on
# device" and leave a half-built .venv. Measured: the full .venv is about 7.2 GB (a CUDA build of torch with
# its NVIDIA libraries), the serving one about 0.6 GB; the rest is room for the dataset cache and the tests.
# SETUP_NEED_MB overrides the figure.
if [ "${1:-all}" = "serve" ]; then need_mb=${SETUP_NEED_MB:-1000}; else need_mb=${SETUP_NEED_MB:-9000}; fi
free_mb=$(df -Pm . | awk 'NR == 2 {print $4}')
venv_mb=0
if [ -d .venv ]; then venv_mb=$(du -sm .venv | cut -f1); fi
if [ $((free_mb + venv_mb)) -lt "$need_mb" ]; then
    echo "setup: not enough disk: this install needs about $((need_mb / 1000)) GB (${need_mb} MB) for .venv," \
        "the dataset cache and the tests; $(pwd) has ${free_mb} MB free (plus ${venv_mb} MB in .venv)." \
        "Free some space, or clone onto a larger disk." >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# Every serving package at the version the Bento's image installs (deploy/serving.lock, which
# scripts/lock_serving.py writes from a tested environment): the tests run what ships.
if [ "${1:-all}" = "serve" ]; then
    python -m pip install -q -c deploy/serving.lock -e .
else
    python -m pip install -q -c deploy/serving.lock -e ".[train,test,ray]"
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
if [ "${1:-all}" = "serve" ]; then
    echo "setup: done (.venv holds the serving install; pip's notice about editable installs above is expected)" >&2
else
    echo "setup: done (.venv holds training, tests and serving; pip's notice about editable installs above is expected)" >&2
fi
