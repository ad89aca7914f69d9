"""``python -m export card``: every figure in the cell it belongs to, whatever the manifest's text holds."""

from __future__ import annotations

from pathlib import Path

from export.card import card_table
from inference.manifest import ModelEntry, load_manifest

ROOT = Path(__file__).resolve().parents[1]


def _unescaped_bars(line: str) -> int:
    return line.replace("\\|", "").count("|")


def test_a_class_name_with_a_line_break_or_a_bar_stays_in_its_cell(tmp_path):
    shipped = load_manifest(ROOT / "models", verify=False).models[0]
    plain = ModelEntry.model_validate({**shipped.model_dump(), "classes": ["plane", "cat", "dog"]})
    odd = ModelEntry.model_validate(
        {
            **shipped.model_dump(),
            "classes": ["air\nplane", "cat|dog", "x\r\ny\u2028z"],
            "source": {**shipped.source, "recipe": "mine|v2.yaml"},
        }
    )
    (tmp_path / shipped.file).write_bytes(b"onnx")
    table = card_table([odd], tmp_path).splitlines()
    assert len(table) == len(card_table([plain], tmp_path).splitlines()), table
    assert all(_unescaped_bars(line) == 3 for line in table), table
    assert "| classes | 3: air plane, cat\\|dog, x y z |" in table
    assert "| recipe | mine\\|v2.yaml |" in table


def test_the_cards_counts_are_written_with_thousands_apart_as_export_list_writes_them(tmp_path):
    """It said "validation images | 5000" where `python -m export list` says "5,000 images"."""
    shipped = load_manifest(ROOT / "models", verify=False).models[0]
    many = ModelEntry.model_validate(
        {
            **shipped.model_dump(),
            "classes": [f"c{i}" for i in range(1200)],
            "metrics": {**shipped.metrics, "val_samples": 12000},
        }
    )
    (tmp_path / shipped.file).write_bytes(b"onnx")
    table = card_table([many], tmp_path).splitlines()
    assert "| validation images | 12,000 |" in table, table
    assert "| classes | 1,200: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 and 1,190 more |" in table, table
