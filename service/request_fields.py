"""The typed fields of a request: their validators, and pydantic's errors turned into the contract's refusals.

The request models (``ClassifyInput``, ``InferInput``, the protocol's) validate with these, so a bad field is
refused with the reason the contract names for it (a bad ``k`` is ``bad_k``), never guessed from pydantic's words.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from inference.fits import FITS
from inference.preprocess import in_unit_range

from .confidence import parse_min_confidence
from .contract import ReasonName, Rejection, as_sent, is_reason
from .uploads import base64_hint, unknown_fit

FIELDS = ("images", "k", "model", "min_confidence", "fit")


# The reason a field's problems are refused with.
FIELD_REASONS: dict[str, ReasonName] = {
    "images": "malformed_request",
    "k": "bad_k",
    "model": "malformed_request",
    "min_confidence": "bad_min_confidence",
    "fit": "bad_fit",
}


# The JSON type of each optional /classify field, and its words for a refusal.
JSON_TYPES: dict[str, tuple[type | tuple[type, ...], str]] = {
    "k": (int, "a JSON integer"),
    "model": (str, "a model name (a string) or null"),
    "min_confidence": ((int, float), "a JSON number from 0 to 1, or null"),
    "fit": (str, "a fit name (a string) or null"),
}


# The fields that are numbers; the others are names.
NUMBERS = frozenset(key for key, (types, _) in JSON_TYPES.items() if types is not str)


def refusal_error(reason: ReasonName, message: str) -> PydanticCustomError:
    """A validation error that names its reason, so that the answer needs no guessing from pydantic's words."""
    return PydanticCustomError(reason, "{message}", {"message": message})


def integer_k(value: Any) -> int | None:
    """``k`` as sent: a JSON integer, or text that reads as one; JSON null or an empty form field means not
    given (as for every optional field: a browser form sends an input left blank as one)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise refusal_error("bad_k", f"k must be an integer, got {value[:50]!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise refusal_error("bad_k", f"k must be an integer, got {as_sent(value)}"[:200])
    return value


def model_name(value: Any) -> str | None:
    """``model`` as sent: a name; empty means the default, as does JSON null."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise refusal_error("malformed_request", f"'model' must be a model name, got {as_sent(value)}"[:200])
    return value


def threshold(value: Any) -> float | None:
    """``min_confidence`` as sent: a number from 0 to 1 (JSON or text); JSON null or an empty form field means
    none."""
    if value is None or value == "":
        return None
    try:
        return parse_min_confidence(value)
    except ValueError as exc:
        raise refusal_error("bad_min_confidence", f"min_confidence {exc}") from None


def fit_name(value: Any) -> str | None:
    """``fit`` as sent: a name from ``inference.fits.FITS``; empty means the model's own, as does JSON null."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in FITS:
        raise refusal_error("bad_fit", unknown_fit(value))
    return value


_BOUNDS = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le")}


def rejection_from(error: ValidationError) -> Rejection:
    """The first problem pydantic found with a request's fields, as the refusal the contract names for it."""
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "request"
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    where = where[:200] or "request"
    kind = first["type"]
    if is_reason(kind):
        return Rejection(kind, first["msg"])  # raised by the validators above, in the contract's words
    if kind == "bytes_invalid_encoding":  # /infer's pixels
        hint = base64_hint(first["input"]) if isinstance(first["input"], str) else ""
        return Rejection("bad_encoding", f"{where} is not valid base64 ({first['ctx']['encoding_error']}){hint}")
    if field == "images" and first["type"] == "too_short":
        return Rejection("no_images", "no images: send one or more files in the 'images' field")
    if field == "items" and first["type"] == "too_short":  # /infer's
        return Rejection("no_images", "no items: send one or more in 'items'")
    if first["type"] == "extra_forbidden":
        return Rejection("malformed_request", f"unknown field {where}: this route does not read it")
    if field in ("images", "items") and first["type"] == "too_long":  # items: /infer's images
        limit, count = first["ctx"]["max_length"], first["ctx"].get("actual_length")
        got = f", got {count}" if count is not None else ""
        return Rejection("too_many_images", f"too many images: at most {limit} per request{got}")
    reason = FIELD_REASONS.get(field, "malformed_request")
    if first["type"] in _BOUNDS:
        words, key = _BOUNDS[first["type"]]
        return Rejection(reason, f"{field} must be {words} {first['ctx'][key]}, got {_shown(first['input'])}"[:200])
    return Rejection(reason, f"{where}: {first['msg']}"[:300])


def _shown(value: Any) -> str:
    """A request's value as the client wrote it (JSON's ``true``, not Python's ``True``)."""
    try:
        return json.dumps(value)[:100]
    except (TypeError, ValueError):
        return repr(value)[:100]


def tensor_rejection(values: np.ndarray, what: str) -> Rejection | None:
    """A model input given as floats that no decoded image can be: NaN, infinite or outside [0, 1]. The models
    would answer it with probabilities of NaN, or with confidence about pixels they never saw."""
    if in_unit_range(values):
        return None
    return out_of_range(what)


def out_of_range(what: str) -> Rejection:
    """The refusal of model input values outside [0, 1] (``tensor_rejection``'s)."""
    return Rejection("bad_tensor", f"{what}: values must be in [0, 1] (RGB scaled from 0..255)")
