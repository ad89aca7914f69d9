#!/usr/bin/env bash
# Create .venv and install the project (idempotent).
#   bash scripts/setup.sh          everything: serving, training/export (torch), Ray Data scoring and tests
#   bash scripts/setup.sh serve    serving only: no torch
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
if [ "${1:-all}" = "serve" ]; then
    python -m pip install -q -e .
else
    python -m pip install -q -e ".[train,test,ray]"
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
