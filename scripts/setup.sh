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
fi
