"""Where every benchmark's JSON results go: one writer, so they all land the same way."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: str | Path, results: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
