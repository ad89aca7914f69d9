"""The ``key=value`` overrides of ``--set``: read as YAML, resolved to the settings they name, checked and applied
to a recipe's raw settings; and the ones a resumed run takes, which set only where it runs.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from inference.messages import exception_summary

from .config import AUGMENT_PRESETS, MERGED_SECTIONS, Config, ConfigError, _kinds
from .config_validation import _dotted_settings, close_settings, validate_config
from .config_yaml import YamlMistake, read_yaml


def _parse_value(text: str) -> Any:
    # YAML's scalars give true/false, numbers, lists ([60,120]) and null for free.
    try:
        return read_yaml(text) if text != "" else ""
    except YamlMistake as exc:
        raise ConfigError(f"value {text!r}: {exc.problem}") from exc
    except yaml.reader.ReaderError as exc:
        raise ConfigError(_unreadable_value(text, exc)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"value {text!r} is not YAML ({exception_summary(exc, lines=2)}): quote it, or close its brackets"
        ) from exc


def _unreadable_value(text: str, exc: yaml.reader.ReaderError) -> str:
    """What to say of a value holding a character YAML's reader refuses, which quoting does not mend: bytes that
    are no UTF-8 (a file named in another encoding, which Python passes on as surrogate escapes) or a control
    character."""
    if any("\ud800" <= char <= "\udfff" for char in text):
        return (
            f"value '{_as_bytes(text)}' is not UTF-8 text (a name in another encoding?), and settings are UTF-8: "
            "rename it, or give a link to it whose name is UTF-8 (ln -s)"
        )
    return (
        f"value {text!r} holds the character #x{exc.character:02x}, which YAML takes only as an escape in double "
        "quotes: rename it, or give a link to it under another name (ln -s)"
    )


def _as_bytes(text: str) -> str:
    """``text`` with each undecodable byte (which Python keeps as a surrogate escape) written as ``\\xff``."""
    escaped = all("\udc80" <= char <= "\udcff" for char in text if "\ud800" <= char <= "\udfff")
    return text.encode("utf-8", "surrogateescape" if escaped else "backslashreplace").decode(
        "utf-8", "backslashreplace"
    )


def field_owner(key: str) -> str:
    """Resolve a bare key (``lr``) to its section (``optim.lr``); model arguments are the fallback."""
    owners = [
        name
        for name, f in Config.model_fields.items()
        if isinstance(f.default_factory, type)
        and issubclass(f.default_factory, BaseModel)
        and key in f.default_factory.model_fields
    ]
    if len(owners) > 1:
        raise ConfigError(f"{key!r} is ambiguous ({', '.join(owners)}): write it as section.{key}")
    if owners:
        return f"{owners[0]}.{key}"
    if key in Config.model_fields:
        return key
    return f"model.args.{key}"


def _split_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    key, value = item.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {item!r} has no key before '='")
    # .epochs, train..epochs: a setting named "" was refused as "no such setting", naming none
    if "" in key.strip().split("."):
        raise ConfigError(
            f"override {item!r}: key {key.strip()!r} has an empty part beside a dot; write section.setting"
        )
    # "lr = 0.1", quoted as one word: the key's spaces would make it a model argument named "lr " (the value's
    # are YAML's to ignore)
    return key.strip(), value


def check_distinct(overrides: list[str]) -> None:
    """One command line's overrides set each key once: a second value is a mistake (an edited, copied command),
    not a choice. A preset or a whole section sets fields without naming them: after one, a field may be set
    again (``augment=basic cutout=8``, a preset tweaked), but not before it (``cutout=8 augment=basic`` would
    undo the cutout without a word). (Layers of overrides, a recipe member's then the command line's, do replace
    earlier values.)"""
    named: dict[str, str] = {}  # field -> the override that named it
    covered: dict[str, str] = {}  # field or section -> the preset or section override that set it unnamed
    for item in overrides:
        fields, implicit = _fields_set(item)
        for field in fields:
            if implicit:
                undone = next((known for known in named if _overlap(known, field)), None)
                if undone is not None:
                    raise ConfigError(
                        f"{item!r} sets {undone} again after {named[undone]!r}, and would undo it: put the "
                        f"preset or section first and the field after it, or keep one"
                    )
                twice = next((known for known in covered if _overlap(known, field)), None)
                if twice is not None and covered[twice] != item:
                    raise ConfigError(f"{field} is set twice ({covered[twice]!r} and {item!r}): keep one")
                covered[field] = item
            elif field in named:
                raise ConfigError(f"{field} is set twice ({named[field]!r} and {item!r}): keep one")
            else:
                named[field] = item


def _fields_set(item: str) -> tuple[set[str], bool]:
    """The dotted fields an override sets, and whether it sets them without naming them: ``augment=basic`` each
    of the preset's (unnamed), ``train={epochs: 5}`` those of the mapping (a merged section: named),
    ``model={...}`` the whole section (unnamed)."""
    key, value = _split_override(item)
    dotted = key if "." in key or key == "augment" else field_owner(key)
    if dotted == "augment" and not value.startswith("{"):
        return {f"augment.{name}" for name in AUGMENT_PRESETS.get(value, {})} or {"augment"}, True
    if value.lstrip().startswith("{"):
        try:
            parsed = _parse_value(value)
        except ConfigError:
            return {dotted}, True  # apply_overrides says what is wrong with it
        if dotted in MERGED_SECTIONS and isinstance(parsed, dict):
            return {f"{dotted}.{name}" for name in parsed}, False  # merged: it sets what it names, {} nothing
        if isinstance(parsed, dict):  # a mapping replaced whole (model, model.args): every field under it
            return {dotted}, True
    return {dotted}, False


def _overlap(a: str, b: str) -> bool:
    """Whether setting ``a`` and ``b`` touches one field: equal, or one a section holding the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        key, value = _split_override(item)
        if key == "augment" and not value.startswith("{"):
            if value not in AUGMENT_PRESETS:
                raise ConfigError(f"unknown augment preset {value!r}; valid: {', '.join(AUGMENT_PRESETS)}")
            raw["augment"] = {**raw.get("augment", {}), **AUGMENT_PRESETS[value]}
            continue
        path = (key if "." in key else field_owner(key)).split(".")
        _check_inside_a_mapping(key, path)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {key!r}: {part!r} is not a section")
        parsed = _parse_value(value)
        if len(path) == 1 and not isinstance(parsed, dict):
            _check_not_a_section(key, value, parsed)
        if path[-1] in MERGED_SECTIONS and len(path) == 1 and isinstance(parsed, dict):
            # augment={cutout: 8} sets those fields, as augment.cutout=8 does: replacing the section would drop
            # the recipe's other settings of it without a word (airbench's reflect padding, its alternating flip)
            node[path[-1]] = {**(node.get(path[-1]) or {}), **parsed}
        else:
            node[path[-1]] = parsed
    return raw


def _check_not_a_section(key: str, text: str, value: Any) -> None:
    """``model=resnet9``, ``schedule=cosine``: a section given one value, which pydantic refuses as "Input should be
    a valid dictionary or instance of ModelConfig", naming neither the mistake nor the setting meant."""
    section = Config.model_fields[key].default_factory if key in Config.model_fields else None
    if not (isinstance(section, type) and issubclass(section, BaseModel)):
        return
    named = (
        f"; to choose it by name, {key}.name={text}"
        if "name" in section.model_fields and isinstance(value, str)
        else ""
    )
    raise ConfigError(
        f"cannot set {key}={text}: {key} is a section of settings; set one of them as {key}.SETTING=VALUE{named}"
    )


def _check_inside_a_mapping(key: str, path: list[str]) -> None:
    """``schedule.milestones.0=30``: only a mapping's entries are set one by one; a list's index or a number's
    part would become a mapping of its own, refused as "Input should be a valid list"."""
    section = Config.model_fields[path[0]].default_factory if path[0] in MERGED_SECTIONS else None
    if len(path) < 3 or not (isinstance(section, type) and issubclass(section, BaseModel)):
        return
    if path[1] not in section.model_fields:
        return
    kinds = _kinds(section.model_fields[path[1]].annotation)
    if dict not in kinds:
        whole = "[...]" if kinds & {list, tuple} else "VALUE"
        raise ConfigError(f"cannot set {key!r}: {path[0]}.{path[1]} is set whole, as {path[0]}.{path[1]}={whole}")


# Where a run runs, not what it computes: the data's location (the data itself is checked when a run resumes),
# the device and threads, the evaluation batch. A resumed run may take new values for these (a preempted run
# continued on another machine, from another folder); any other change would make it another run.
PLACEMENT_KEYS = ("data.root", "data.cache_dir", "train.device", "train.threads", "train.eval_batch_size")
# Those of them that change the arithmetic (kernels, the order of sums): a run moved so is no longer bit-identical.
NUMERICS_KEYS = ("train.device", "train.threads")


def placement_overrides(overrides: list[str]) -> list[str]:
    """The ``key=value`` overrides among ``overrides`` that set where a run runs."""
    return [item for item in overrides if "=" in item and _full_key(_split_override(item)[0]) in PLACEMENT_KEYS]


def _full_key(key: str) -> str:
    return key if "." in key else field_owner(key)


def config_differences(a: Config, b: Config, ignore: tuple[str, ...] = ()) -> list[str]:
    """The fields where two configs differ, as ``section.field: a -> b``; ``ignore``: fields left out."""

    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict) or not node:
            return {prefix: node}
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}

    def shown(value: Any) -> Any:
        return '""' if value == "" else value  # an emptied setting (data.cache_dir "", no cache) is said, not blank

    left, right = flat(a.model_dump(mode="json")), flat(b.model_dump(mode="json"))
    return [
        f"{key.rstrip('.')}: {shown(left.get(key, '(unset)'))} -> {shown(right.get(key, '(unset)'))}"
        for key in sorted(left.keys() | right.keys())
        if left.get(key, "(unset)") != right.get(key, "(unset)")
        and key.rstrip(".") not in ignore
        # a mapping emptied (model.args {dropout: 0.5} -> {}): its entries say it, not "model.args: (unset) -> {}"
        and sorted(map(str, (left.get(key, "(unset)"), right.get(key, "(unset)")))) != ["(unset)", "{}"]
    ]


def with_placement(config: Config, overrides: list[str] | None = None, like: Config | None = None) -> Config:
    """``config`` run elsewhere: its ``PLACEMENT_KEYS`` taken from ``like`` and then set by ``overrides``
    (``key=value``, bare keys as ``--set`` takes them). Any other key is refused: it would change the run."""
    raw = config.model_dump(mode="json")
    if like is not None:
        source = like.model_dump(mode="json")
        for key in PLACEMENT_KEYS:
            section, name = key.split(".")
            raw[section][name] = source[section][name]
    for item in overrides or []:
        key, value = _split_override(item)
        if _full_key(key) == "train.epochs":  # the one setting a resume changes, with a flag of its own
            raise ConfigError(
                f"a resumed run's epoch budget is changed with --epochs, not --set: --epochs {value.strip()}"
            )
        meant = [] if _full_key(key) in _dotted_settings() or key.startswith("model.args.") else close_settings(key)
        # a mistyped setting is said as the typo it is, but pointed only to what a resume takes: epohcs to
        # --epochs, and ler (optim.lr) still to another run, not to a setting that --set would refuse next
        if "train.epochs" in meant:
            raise ConfigError(
                f"{key!r} is no setting (did you mean train.epochs?): a resumed run's epoch budget is changed with "
                f"--epochs, not --set: --epochs {value.strip()}"
            )
        if placed := [dotted for dotted in meant if dotted in PLACEMENT_KEYS]:
            raise ConfigError(
                f"{key!r} is no setting (did you mean {' or '.join(placed)}?): a resumed run takes new values only "
                f"for where it runs ({', '.join(PLACEMENT_KEYS)})"
            )
        if _full_key(key) not in PLACEMENT_KEYS:
            guess = f" (no setting; did you mean {' or '.join(meant)}?)" if meant else ""
            raise ConfigError(
                f"a resumed run takes new values only for where it runs ({', '.join(PLACEMENT_KEYS)}): {key!r}"
                f"{guess} would make it another run; start one with `python -m training train`"
            )
    return validate_config(apply_overrides(raw, list(overrides or [])), started=True)
