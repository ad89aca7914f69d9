#!/usr/bin/env bash
# Create .venv and install the project (idempotent).
#   bash scripts/setup.sh          everything: serving, training/export (torch) and tests
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
    python -m pip install -q -e ".[train,test]"
    # The page's browser test drives Debian's Chromium through Playwright (never Playwright's own download).
    # Without root or apt the test skips and says why.
    if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
            || echo "chromium could not be installed: the browser test will be skipped" >&2
    fi
fi
