"""YAML as recipes, ``--set`` values and config.yaml files are read and written: each mistake said on one line with
its line number, numbers read as their writer meant them, and what is written read back as it was.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from inference.files import write_text_atomic
from inference.messages import exception_summary

from .config import Config


class YamlMistake(yaml.constructor.ConstructorError):
    """YAML that parses, but not as its writer meant: said as the mistake, not as "not YAML"."""

    @property
    def line(self) -> int | None:
        """The line of the text the mistake is on, which a file's refusal names (a 60-line recipe); None where
        the mistake names its own lines (a key given twice)."""
        return self.problem_mark.line + 1 if self.problem_mark is not None else None


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong with a YAML text, on one line with its line number (yaml's own text spans several, with a
    snippet of the text): a mistake as itself, a syntax error as "not YAML"."""
    if isinstance(exc, YamlMistake):  # YAML that parses, but not as meant: "not YAML" would be false
        return f"line {exc.line}: {exc.problem}" if exc.line is not None else str(exc.problem)
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        # a context other than "while parsing ..." is the first half of the sentence: "expected a single document in
        # the stream, but found another document", "found duplicate anchor 'a'; first occurrence, second occurrence"
        said = f"{exc.context}, {exc.problem}" if exc.context and not exc.context.startswith("while ") else exc.problem
        return f"not YAML: {said} at line {exc.problem_mark.line + 1}"
    return f"not YAML: {exception_summary(exc)}"


class _Loader(yaml.SafeLoader):
    """YAML as recipes and overrides are read: YAML 1.1 (yes, no, on and off are booleans) with YAML 1.2's
    numbers (below), since a string reaches a model argument as it is."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError) as exc:  # a tag's own constructor: 2001-13-45 as a date, !!bool maybe
            if isinstance(exc, yaml.YAMLError):
                raise
            tag = node.tag.rpartition(":")[2]
            why = f" ({exception_summary(exc)})" if not isinstance(exc, KeyError) else ""  # a KeyError says the key
            raise YamlMistake(
                None, None, f"{node.value!r} is no {tag}{why}: quote it to give it as text", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # !!map or !!set on text or a list: its items are no pairs
            tag = node.tag.rpartition(":")[2]
            raise YamlMistake(
                None,
                None,
                f"!!{tag} takes a mapping {{...}}, not a {node.id}: quote it to give it as text",
                node.start_mark,
            )
        seen: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then a key of base: an override, meant
                continue
            _check_colon_spaced(node, key_node, value_node)
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)):
                continue  # the base class refuses an unhashable key; a null one names no setting
            if key in seen:
                # yaml keeps the last silently: a second `train:` section dropped the first's epochs unnoticed
                lines = sorted({seen[key].start_mark.line + 1, key_node.start_mark.line + 1})
                where = f" (line{'s' if len(lines) > 1 else ''} {' and '.join(map(str, lines))})"
                raise YamlMistake(
                    None, None, f"{key!r} is given twice{where}: the second would replace the first; keep one"
                )
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _check_colon_spaced(node: yaml.MappingNode, key: yaml.Node, value: yaml.Node) -> None:
    """``{width:8}`` is a key "width:8" with no value (``{1:16}``, the base-60 number 76): YAML's colon needs a
    space after it. Refused here, where the text is known, not as a model argument or setting nobody wrote."""
    plain_key = isinstance(key, yaml.ScalarNode) and key.style is None and ":" in key.value
    no_value = isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:null" and value.value == ""
    if node.flow_style and plain_key and no_value:
        name, _, given = key.value.partition(":")
        raise YamlMistake(
            None,
            None,
            f"{key.value!r} is a key without a value: put a space after its colon, {{{name}: {given}}}",
            key.start_mark,
        )


_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
# YAML 1.1 reads epochs=1:30 as the base-60 number 90, epochs=010 as the octal 8, and -.5 and 1e3 as strings: each
# silently not what its writer meant. Numbers here are read as YAML 1.2 and Python write them: 010 is ten, 0o10
# eight, 0x10 sixteen; a signed .5, 1e3 and 5e-3 are floats; 1:30 is text, which a number setting refuses.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT, re.compile(r"^[-+]?(?:0b[01_]+|0o[0-7_]+|0x[0-9a-fA-F_]+|[0-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node)).replace("_", "")
    digits = text.lstrip("+-")
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
    try:
        value = int(digits[2:] if base != 10 else digits, base)
    except ValueError:  # an explicit !!int tag on text that is no number
        raise YamlMistake(None, None, f"{text!r} is not an integer", node.start_mark) from None
    return -value if text.startswith("-") else value


_Loader.add_constructor(_INT, _construct_int)


def _construct_timestamp(loader: _Loader, node: yaml.ScalarNode) -> Any:
    text = loader.construct_scalar(node)
    # an explicit !!timestamp on text that is no date: the base constructor fails on it with an AttributeError
    if not loader.timestamp_regexp.match(text):
        raise YamlMistake(None, None, f"{text!r} is no timestamp: quote it to give it as text", node.start_mark)
    return loader.construct_yaml_timestamp(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def read_yaml(text: str) -> Any:
    """YAML as recipes, --set values and hand-edited config.yaml files are read (``_Loader``)."""
    return yaml.load(text, Loader=_Loader)


class _Dumper(yaml.SafeDumper):
    """YAML written so that ``read_yaml`` and YAML 1.1's readers (``yaml.safe_load``) read it back as it was: text
    either would read as a number is quoted. SafeDumper alone quotes only what YAML 1.1 reads so, and writes a
    recipe named 0912, or a model argument '1e3', bare, which read_yaml reads as the numbers 912 and 1000.0."""


_Dumper.yaml_implicit_resolvers = {
    first: [
        *yaml.SafeDumper.yaml_implicit_resolvers.get(first, []),
        *(resolver for resolver in _Loader.yaml_implicit_resolvers.get(first, []) if resolver[0] in (_INT, _FLOAT)),
    ]
    for first in {*yaml.SafeDumper.yaml_implicit_resolvers, *_Loader.yaml_implicit_resolvers}
}


def dump_yaml(data: Any) -> str:
    """``data`` as YAML that ``read_yaml`` reads back as it is (config.yaml, an ensemble run's record)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


def save_config(config: Config, path: Path) -> None:
    write_text_atomic(path, dump_yaml(config.model_dump(mode="json")))
