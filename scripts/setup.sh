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
    # `docker-compose config` checks deploy/compose.yaml in the tests (no daemon needed); Debian's package.
    if ! command -v docker-compose >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose) >/dev/null 2>&1 ||
            echo "docker-compose could not be installed: the Compose file's check will be skipped" >&2
    fi
fi
