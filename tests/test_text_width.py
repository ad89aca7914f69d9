"""Text tables with class names and paths that are not ASCII: CJK and fullwidth characters take two terminal columns,
combining marks (a decomposed "é", as macOS writes folder names) and joiners none, so padding by ``len`` puts the
columns after them out of line."""

from __future__ import annotations

import unicodedata

from inference.messages import display_width, pad
from service.score.accuracy import FolderAccuracy
from service.score.sinks import Prediction, Row
from training.reports.compare import format_comparison

DECOMPOSED = unicodedata.normalize("NFD", "éléphant")  # 10 code points, 8 columns
CAT_EMOJI = "🐱"  # East Asian Wide
FAMILY = "a\u200db"  # a zero-width joiner between two letters
KOREAN = unicodedata.normalize("NFD", "고양이")  # 7 jamo, 6 columns


def _columns(text: str) -> int:
    """Terminal columns, counted here on their own: a whole Hangul syllable 2 (composed first: macOS writes it
    decomposed, as three jamo that a terminal draws as one), wide and fullwidth 2, marks and format characters 0."""
    total = 0
    for c in unicodedata.normalize("NFC", text):
        if unicodedata.category(c) in ("Mn", "Me", "Cf"):
            continue
        total += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return total


def _end_column(line: str, token: str) -> int:
    """The column just after the last ``token`` on ``line``."""
    return _columns(line[: line.rindex(token) + len(token)])


def test_display_width_counts_columns_not_code_points():
    for text, columns in (
        ("cat", 3),
        ("猫", 2),
        ("ｃａｔ", 6),  # fullwidth Latin
        (DECOMPOSED, 8),
        (unicodedata.normalize("NFC", "éléphant"), 8),
        (CAT_EMOJI, 2),
        (FAMILY, 2),
        (KOREAN, 6),
        ("", 0),
    ):
        assert display_width(text) == columns == _columns(text), text
    assert pad("猫", 5) == "猫   " and pad(DECOMPOSED, 9) == DECOMPOSED + " " and pad("toolong", 3) == "toolong"


def _accuracy_table(classes: list[str]) -> list[str]:
    accuracy = FolderAccuracy(classes, "photos", "m")
    for i, truth in enumerate(classes):
        for j in range(i + 1):
            guess = truth if j % 2 == 0 else classes[0]
            accuracy.add(Row(f"{truth}/{j}.png", [Prediction(guess, classes.index(guess), 0.9)]))
    lines = accuracy.report().splitlines()
    start = lines.index(next(line for line in lines if line.split()[:1] == ["class"]))
    return lines[start : start + 1 + len(classes)]


def test_the_scorers_per_class_table_lines_up_with_wide_and_decomposed_class_names():
    table = _accuracy_table(["bird", DECOMPOSED, "犬", "猫", CAT_EMOJI, FAMILY, KOREAN])
    header, rows = table[0], table[1:]
    images_end = _end_column(header, "images")
    for row, count in zip(rows, range(1, len(rows) + 1)):
        assert _end_column(row, f" {count} ") - 1 == images_end, table
        assert _columns(row) == _columns(header), table


def test_the_scorers_per_class_table_lines_up_with_class_names_shorter_than_its_heading():
    """Folders named 0, 1, ...: the heading 'class' is the widest cell of its column."""
    table = _accuracy_table(["0", "1"])
    header, rows = table[0], table[1:]
    assert all(_columns(row) == _columns(header) for row in rows), table
    assert all(_end_column(row, f" {i} ") - 1 == _end_column(header, "images") for i, row in enumerate(rows, 1))


def _comparison(path_a: str, path_b: str) -> dict:
    side = {"kind": "report", "tta": "none", "graph_tta": "none", "top1": 0.5, "correct": 10}
    return {
        "a": {**side, "path": path_a},
        "b": {**side, "path": path_b},
        "num_samples": 20,
        "data": {"dataset": "folder", "root": "/data/動物", "split": "val"},
        "difference_points": 0.0,
        "difference_interval_points": [-8.9, 8.9],
        "interval_confidence": 0.95,
        "interval_method": "Agresti-Min adjusted Wald",
        "mcnemar": {"method": "exact", "a_right_b_wrong": 0, "a_wrong_b_right": 0, "statistic": 0.0, "p_value": 1.0},
        "alpha": 0.05,
        "significant": False,
    }


def test_compare_lines_up_the_top1_of_paths_with_wide_and_decomposed_characters():
    for a, b in (
        ("runs/実験A/report-best-val", "runs/b/report-best-val"),
        ("runs/b", f"runs/{DECOMPOSED}/report"),
        (f"runs/{CAT_EMOJI}{FAMILY}", "runs/ｘ"),
        (f"runs/{KOREAN}", "runs/고양이"),
    ):
        lines = format_comparison(_comparison(a, b)).splitlines()
        line_a, line_b = (next(line for line in lines if line.startswith(side)) for side in ("A  ", "B  "))
        assert _columns(line_a[: line_a.index("top-1")]) == _columns(line_b[: line_b.index("top-1")]), lines


def test_an_ablation_table_keeps_its_columns_where_a_class_name_or_step_label_holds_a_bar_or_line_break():
    from training.reports.ablate_table import format_table

    rows = []
    for variant, baseline in (("base | plain", True), ("cutout\non", False)):
        rows.append(
            {
                "variant": variant,
                "tta": "none",
                "baseline": baseline,
                "top1": 0.5,
                "loss": 1.0,
                "fingerprint": "f",
                "num_samples": 30,
                "epochs": 1,
                "train_time_s": 1.0,
                "parameters": 10,
                "top1_diff_points": 0.0,
                "per_class_mean_diff_points": None if baseline else 1.0,
                "mcnemar_vs_baseline": None,
                "diff_interval_vs_baseline": None,
                "largest_class_gain": None if baseline else {"class": "cat|dog", "points": 5.0},
                "largest_class_loss": None if baseline else {"class": "猫", "points": -5.0},
            }
        )
    result = {"recipe": "r", "vary": [{"key": "x", "values": ["0", "1"]}], "set": [], "split": "val", "variants": rows}
    lines = format_table(result).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| variant |"))
    table = lines[header : header + 2 + len(rows)]
    assert len(table) == 4 and all(line.startswith("|") and line.endswith("|") for line in table), table

    def cells(line: str) -> int:  # the bars that are not escaped
        return line.replace("\\|", "").count("|")

    assert {cells(line) for line in table} == {cells(table[0])}, table
    assert "cat\\|dog +5.0" in table[3] and "base \\| plain (baseline)" in table[2], table
