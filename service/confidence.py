"""The ``min_confidence`` threshold of /classify and of the scorer: one parser, one marking rule.

A prediction whose top-1 confidence is below the threshold is marked (``confident: false``), never
dropped: the caller decides what to do with it. The models' confidences are calibrated at export
(temperature scaling inside the graph), which is what makes a fixed threshold mean something.
"""

from __future__ import annotations

import math

from .contract import as_sent


def parse_min_confidence(value: object) -> float:
    """A threshold from text (a form field, a command-line argument) or a JSON number.

    ValueError with a message that completes "min_confidence ..." for anything else, for booleans
    and for values outside 0..1 (NaN included)."""
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"must be a number from 0 to 1, got {value[:50]!r}") from None
    elif isinstance(value, float):
        number = value
    elif isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 1:  # a JSON integer has no size limit: float() of one past 1e308 raises
            sign = "a negative" if value < 0 else "a"
            shown = str(value) if abs(value) < 10**50 else f"{sign} number of {len(str(abs(value)))} digits"
            raise ValueError(f"must be between 0 and 1, got {shown}")
        number = float(value)
    else:
        raise ValueError(f"must be a number from 0 to 1, got {as_sent(value)}"[:200])
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"must be between 0 and 1, got {number:g}")
    return number


def is_confident(top1_confidence: float, min_confidence: float) -> bool:
    """At the threshold counts as confident, so min_confidence 0 marks every prediction confident."""
    return top1_confidence >= min_confidence
