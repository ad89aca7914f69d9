"""The commands the user-facing docs give, checked against the real argument parsers: every flag exists and takes
what the doc gives it, every subcommand exists, and a `training train --set ...` is a valid configuration of its
recipe (a network built from it). Nothing is run: a doc that names a flag the code renamed fails here, not in a
new user's shell."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = (
    "README.md",
    "docs/own-dataset.md",
    "docs/calibration.md",
    "docs/ray.md",
    "docs/deploy.md",
    "docs/fast-training.md",
    "models/README.md",
)
MODULES = ("training", "export", "service")
EXPORT_COMMANDS = ("verify", "list", "default", "remove", "card", "rederive", "recover")


def _code_block_commands(text: str) -> list[str]:
    """`python -m ...` lines of the indented code blocks, a line ending in a backslash joined to the next."""
    commands, pending = [], ""
    for line in text.splitlines():
        if not line.startswith("    ") and not pending:
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if re.match(r"python -m (training|export|service)\b", pending):
            commands.append(_without_optional_parts(pending))
        pending = ""
    return commands


def _without_optional_parts(command: str) -> str:
    """A synopsis line's command as given, its optional parts (``[--resume]``, ``[--device auto|cpu|cuda]``) and
    a trailing ``...`` left out: what remains must parse; the options named are checked by the inline spans."""
    code, _, comment = command.partition("  #")
    code = re.sub(r"\s*\[[^\]]*\]", "", code).replace(" ...", "")
    return f"{code}  #{comment}" if comment else code


def _inline_commands(text: str) -> list[str]:
    """`python -m ...` code spans, a span broken over two lines joined; spans with an ellipsis, an optional part
    in brackets or a <placeholder> are prose, not commands."""
    spans = re.findall(r"`(python\s+-m\s+(?:training|export|service)\b[^`]*)`", text)
    return [" ".join(s.split()) for s in spans if not _is_prose(s)]


def _is_prose(span: str) -> bool:
    """An ellipsis, an optional part in brackets, a <placeholder> or a one-letter one (seed=S)."""
    return any(mark in span for mark in ("...", "[", "<")) or bool(re.search(r"(^|[\s=])[A-Z]($|\s)", span))


def doc_commands() -> list[tuple[str, str, bool]]:
    """(doc, command, whole): whole for a code block's command, which must parse as given; an inline span may leave
    out a required argument (`python -m service score --engine ray`, naming the option), not misname a flag."""
    found = []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        found += [(doc, command, True) for command in _code_block_commands(text)]
        found += [(doc, command, False) for command in _inline_commands(text)]
    return found


def _parser_and_argv(words: list[str]):
    module, argv = words[2], words[3:]
    if module == "training":
        from training.__main__ import get_args_parser

        return get_args_parser(), argv
    if module == "service":
        from service.__main__ import get_args_parser

        return get_args_parser(), argv
    import export.__main__ as cli

    if argv and argv[0] in EXPORT_COMMANDS:
        return getattr(cli, f"{argv[0]}_parser")(), argv[1:]
    return cli.export_parser(), argv


def parse(command: str, whole: bool = True):
    """The command's parsed arguments, or pytest.fail with argparse's own message."""
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "-m"] and words[2] in MODULES, command
    parser, argv = _parser_and_argv(words)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 0:  # --help: printed, and every parser has it
            return None
        message = err.getvalue().strip().splitlines()[-1]
        if not whole and "the following arguments are required" in message:
            return None
        pytest.fail(f"{command!r}: {message}")


COMMANDS = doc_commands()


def test_each_doc_gives_commands():
    """The extraction finds what the docs hold: an empty list would make every check below vacuous."""
    per_doc = {doc: sum(1 for d, _, whole in COMMANDS if d == doc and whole) for doc in DOCS}
    assert per_doc["docs/own-dataset.md"] >= 12, per_doc
    assert per_doc["docs/ray.md"] >= 4, per_doc
    assert per_doc["README.md"] >= 20 and per_doc["docs/deploy.md"] >= 5, per_doc
    assert sum(1 for d, _, _ in COMMANDS if d == "models/README.md") >= 20


def test_a_synopsis_is_checked_without_its_optional_parts():
    line = "python -m service score DIR --out p.csv [--resume|--overwrite] [--min-confidence 0.8] ...  # rows"
    assert _without_optional_parts(line) == "python -m service score DIR --out p.csv  # rows"
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --outt"):
        parse(_without_optional_parts("python -m service score DIR --outt p.csv [--resume]"))


def test_the_check_catches_a_wrong_flag():
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --models-dirr"):
        parse("python -m export verify pets --models-dirr /tmp/m")
    with pytest.raises(pytest.fail.Exception, match="invalid choice"):
        parse("python -m service score photos/ --engine spark")


@pytest.mark.parametrize("doc, command, whole", COMMANDS, ids=[f"{d}:{c[:70]}" for d, c, _ in COMMANDS])
def test_doc_command_parses(doc, command, whole):
    parse(command, whole)


TRAIN = [(doc, c) for doc, c, whole in COMMANDS if c.startswith("python -m training train ")]


@pytest.mark.parametrize("doc, command", TRAIN, ids=[f"{d}:{c[:70]}" for d, c in TRAIN])
def test_doc_training_settings_are_a_valid_configuration(doc, command):
    """A recipe that exists, --set keys that are settings (or arguments the network takes) and values that pass the
    recipe's checks (epochs above warmup_epochs, ...): what `training train` refuses before reading any data."""
    from training.config import build_config, config_problems, is_ensemble_recipe
    from training.models import create_model

    args = parse(command)
    if is_ensemble_recipe(args.recipe):
        assert not args.set, command  # its members' settings are the recipe's
        return
    config = build_config(args.recipe, args.set or [])
    assert config_problems(config) == [], command
    create_model(config.model.name, 10, [0.5] * 3, [0.25] * 3, **config.model.args)


def bench_commands() -> list[tuple[str, str]]:
    """`python bench/NAME.py ...` code spans of the docs, but prose ones (``_is_prose``)."""
    found = []
    for doc in (*DOCS, "docs/measurements.md"):
        for span in re.findall(r"`(python\s+bench/[^`]*)`", (ROOT / doc).read_text(encoding="utf-8")):
            if not _is_prose(span):
                found.append((doc, " ".join(span.split())))
    return found


BENCH = bench_commands()


@pytest.mark.parametrize("doc, command", BENCH, ids=[f"{d}:{c[:70]}" for d, c in BENCH])
def test_doc_benchmark_command_parses(doc, command, monkeypatch):
    """A benchmark's flags as the docs give them, against its script's own parser."""
    import importlib

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    words = shlex.split(command)
    script = importlib.import_module(Path(words[1]).stem)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            script.get_args_parser().parse_args(words[2:])
    except SystemExit:
        pytest.fail(f"{command!r}: {err.getvalue().strip().splitlines()[-1]}")


def test_the_docs_give_benchmark_commands():
    assert len(BENCH) >= 10, BENCH
