"""A raw configuration validated as a Config, and its refusal said so the user can act on it: each number out of
range with the whole range its setting takes, each mistyped key with the setting it most likely meant.
"""

from __future__ import annotations

import difflib
from typing import Any, Sequence, get_args

from pydantic import BaseModel, ValidationError

from inference.messages import validation_problems

from .config import _SAID_WHOLE, Config, ConfigError


def validate_config(raw: dict[str, Any], started: bool = False) -> Config:
    """``raw`` as a Config, or a ConfigError listing every invalid field. ``started``: the config of a run
    under way, whose schedule problems are warned about, not refused."""
    try:
        return Config.model_validate(raw, context={"started": started})
    except ValidationError as exc:
        unknown = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "extra_forbidden"]
        problems = validation_problems(_RangedErrors(exc))
        hints = did_you_mean(unknown) + _model_arguments_meant(raw)
        raise ConfigError(f"invalid configuration: {problems}{hints}") from exc


def _model_arguments_meant(raw: dict[str, Any]) -> str:
    """A hint for each model argument named like a setting (``warmup_epoch``): a mistyped --set key goes to the
    model, which is built only after the config is valid, so a refusal of the setting it was meant for
    (``warmup_epochs 5 is not below train.epochs 2``) would otherwise hide the typo that caused it."""
    model = raw.get("model")
    args = model.get("args") if isinstance(model, dict) else None
    if not isinstance(args, dict):
        return ""
    return "".join(
        f"; {key!r} is no setting (a --set key that is none is passed to the model): did you mean {' or '.join(close)}?"
        for key in args
        if isinstance(key, str) and (close := close_settings(key))
    )


# pydantic's errors for a number out of a field's bounds or not of its kind: each says one bound at most ("less
# than 1"), or none ("a finite number"), never the range the setting takes
_RANGE_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "finite_number",
        "int_from_float",
        "int_parsing_size",
    }
)
_BOUNDS = {"gt": "<", "ge": "<=", "lt": "<", "le": "<="}


class _RangedErrors:
    """A ValidationError's errors as ``validation_problems`` reads them, each number out of range saying the
    whole range its setting takes and the value given."""

    def __init__(self, exc: ValidationError) -> None:
        self._errors = [_with_range(error) for error in exc.errors(include_url=False)]

    def errors(self, include_url: bool = False) -> list[Any]:
        return self._errors


def _with_range(error: Any) -> Any:
    if error["type"] == _SAID_WHOLE:
        return {**error, "input": None}
    valid = _valid_range(tuple(error["loc"])) if error["type"] in _RANGE_ERRORS else None
    if valid is None:
        return error
    # the value is said here, beside the range, so none is appended after it
    return {**error, "msg": f"{error['msg']} (valid: {valid}; got {error['input']!r:.60})", "input": None}


def _valid_range(loc: tuple[Any, ...]) -> str | None:
    """The values a section's numeric field takes, as ``0 <= value < 1``; None for any other location."""
    if len(loc) != 2 or loc[0] not in Config.model_fields:
        return None
    section = Config.model_fields[loc[0]].default_factory
    if not (isinstance(section, type) and issubclass(section, BaseModel)) or loc[1] not in section.model_fields:
        return None
    field = section.model_fields[loc[1]]
    bounds = {name: getattr(m, name) for m in field.metadata for name in _BOUNDS if hasattr(m, name)}
    if not bounds:
        return None
    shown = {name: f"{bound:g}" if isinstance(bound, float) else str(bound) for name, bound in bounds.items()}
    lower = next((f"{shown[n]} {_BOUNDS[n]} " for n in ("gt", "ge") if n in bounds), "")
    upper = next((f" {_BOUNDS[n]} {shown[n]}" for n in ("lt", "le") if n in bounds), "")
    whole = int in {field.annotation, *get_args(field.annotation)}
    if not upper:  # value >= 1 reads more plainly than 1 <= value
        bound = next(n for n in ("gt", "ge") if n in bounds)
        return f"{'a whole number' if whole else 'a number'} {_BOUNDS[bound].replace('<', '>')} {shown[bound]}"
    return f"{lower}{'whole number' if whole else 'value'}{upper}"


def _setting_names() -> dict[str, list[str]]:
    """Each setting's own name -> its dotted names (``name`` is in three sections)."""
    names: dict[str, list[str]] = {}
    for section, f in Config.model_fields.items():
        if isinstance(f.default_factory, type) and issubclass(f.default_factory, BaseModel):
            for name in f.default_factory.model_fields:
                names.setdefault(name, []).append(f"{section}.{name}")
    return names


def _dotted_settings() -> set[str]:
    """Every setting's dotted name (``train.epochs``)."""
    return {dotted for names in _setting_names().values() for dotted in names}


def close_settings(key: str) -> list[str]:
    """The settings a mistyped key most likely meant, dotted (``epohcs`` and ``optim.epochs`` -> ``train.epochs``),
    those of the section it names first; none for a key like no setting (a model's own argument)."""
    section, _, name = key.rpartition(".")
    if not section and key in Config.model_fields:  # a section's own name: nothing mistyped
        return []
    names = _setting_names()
    close = [dotted for match in difflib.get_close_matches(name, names, n=2, cutoff=0.75) for dotted in names[match]]
    if not section:  # a section mistyped (trian.epochs is refused as the section trian)
        sections = [s for s in Config.model_fields if s != "recipe"]
        # a section's name said long (optimizer, augmentation, dataset) is too far from it for difflib's cutoff
        close += _run_together(name, sections, names) or difflib.get_close_matches(name, sections, n=1, cutoff=0.75)
    own = [dotted for dotted in close if dotted.startswith(f"{section}.")]
    if section == "model" and not own:  # model: {name: wrn_16_4, dropout: 0.1}: a network's own argument
        return [f"model.args.{name}"]
    # dict.fromkeys: a setting both close to the whole key and its rest (modelimage_size) is hinted at once
    return [dotted for dotted in dict.fromkeys(own or close) if dotted != key][:2]


def _run_together(name: str, sections: list[str], names: dict[str, list[str]]) -> list[str]:
    """A section and its setting written as one word (``dataroot``, ``train_epochs``, ``optimizer_lr``): that
    setting where the rest is close to one of the section's, else the one setting of another section it is close to
    (``trainlr``: optim.lr, not train, which has no lr); the section alone where the rest is letters
    (``optimizer``)."""
    for section in (s for s in sections if name.startswith(s)):
        rest = name[len(section) :]
        said = rest.lstrip("_-")
        matches = difflib.get_close_matches(said, names, n=2, cutoff=0.75)
        # the section said long (optimizer_lr, traininglr): the setting is the rest's end, whole
        ends = (said[cut:].lstrip("_-") for cut in range(1, len(said)) if said[:cut].isalpha())
        matches += [end for end in ends if end in names][:1]
        dotted = list(dict.fromkeys(dotted for match in matches for dotted in names[match]))
        meant = [setting for setting in dotted if setting.startswith(f"{section}.")]
        if meant or len(dotted) == 1:
            return (meant or dotted)[:1]
        return [section] if rest.isalpha() else []
    return []


def did_you_mean(keys: list[str], arguments: Sequence[str] = ()) -> str:
    """A hint for the mistyped ``keys`` that are close to a setting (or to one of a model's ``arguments``), to
    append to the error naming them ("" if none is): a typo said only as "no such setting", or as an argument the
    model does not take, leaves the user to search the recipe for the right name."""
    hints = [
        (key, close)
        for key in keys
        if (close := difflib.get_close_matches(key, arguments, n=1, cutoff=0.75) or close_settings(key))
    ]
    if len(keys) == 1 and hints:  # the one key refused: the hint can be for no other
        return f"; did you mean {' or '.join(hints[0][1])}?"
    # several refused: each hint names its key, or it would read as meant for the key said last
    return "".join(f"; {key}: did you mean {' or '.join(close)}?" for key, close in hints)
