"""The commands the user-facing docs give, checked against the real argument parsers: every flag exists and takes
what the doc gives it (spelt in full, the options a synopsis puts in brackets included), every subcommand exists,
and a `training train --set ...` is a valid configuration of its recipe (a network built from it). Then what the
docs point to: every repository path they name exists, and every section that a doc or a code comment names
(`docs/deploy.md`, "Photos") is there. Nothing is run: a doc that names a flag the code renamed fails here, not in
a new user's shell."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
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
    return [_without_optional_parts(command) for command in _code_block_synopses(text)]


def _code_block_synopses(text: str) -> list[str]:
    """The code blocks' `python -m ...` commands as written, optional parts included: a line ending in a backslash
    joined to the next, and a line of optional parts alone (``[--replace]   # ...``) added to the command above
    it, its comment left out."""
    commands: list[str] = []
    pending, above = "", False
    for line in text.splitlines():
        if not line.startswith("    ") and not pending:
            above = False
            continue
        if not pending and above and line.strip().startswith("["):
            code, _, comment = commands[-1].partition("  #")
            more = line.strip().partition("  #")[0].strip()
            commands[-1] = f"{code.rstrip()} {more}  #{comment}" if comment else f"{code} {more}"
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        above = bool(re.match(r"python -m (training|export|service)\b", pending))
        if above:
            commands.append(pending)
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
    import export.parsers as cli

    if argv and argv[0] in EXPORT_COMMANDS:
        return getattr(cli, f"{argv[0]}_parser")(), argv[1:]
    return cli.export_parser(), argv


def _spelt_out(parser: argparse.ArgumentParser) -> None:
    """No abbreviated flags: argparse would take `--no-sample-figure` for `--no-sample-figures`, so a doc could
    lose a letter, or name a flag a later one makes ambiguous, and still pass."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _spelt_out(sub)


def parse(command: str, whole: bool = True):
    """The command's parsed arguments, or pytest.fail with argparse's own message."""
    words = shlex.split(command, comments=True)
    assert words[:2] == ["python", "-m"] and words[2] in MODULES, command
    parser, argv = _parser_and_argv(words)
    _spelt_out(parser)
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


def _with_each_optional_part(command: str) -> list[str]:
    """The command without its optional parts, plus one of them at a time, each of its alternatives spelt out:
    ``[--precision fp16|int8]`` gives ``--precision fp16`` and ``--precision int8``, ``[--resume|--overwrite]``
    each flag, ``[--default | --default-for cpu|cuda]`` each side; a trailing ``...`` (repeatable) is dropped."""
    code = command.partition("  #")[0]
    base = _without_optional_parts(code).strip()
    variants = []
    for part in re.findall(r"\[([^\]]*)\]", code):
        for side in re.split(r"\s+\|\s+", part):
            words = [word.split("|") for word in side.split() if word != "..."]
            variants += [f"{base} {' '.join(choice)}" for choice in itertools.product(*words)]
    return variants


OPTIONAL = [
    (doc, variant)
    for doc in DOCS
    for synopsis in _code_block_synopses((ROOT / doc).read_text(encoding="utf-8"))
    for variant in _with_each_optional_part(synopsis)
]


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
    with pytest.raises(pytest.fail.Exception, match="unrecognized arguments: --no-sample-figure"):
        parse("python -m training evaluate --checkpoint r/best.pt --no-sample-figure")


@pytest.mark.parametrize("doc, command, whole", COMMANDS, ids=[f"{d}:{c[:70]}" for d, c, _ in COMMANDS])
def test_doc_command_parses(doc, command, whole):
    parse(command, whole)


TRAIN = [(doc, c) for doc, c, whole in COMMANDS if c.startswith("python -m training train ")]


@pytest.mark.parametrize("doc, command", TRAIN, ids=[f"{d}:{c[:70]}" for d, c in TRAIN])
def test_doc_training_settings_are_a_valid_configuration(doc, command):
    """A recipe that exists, --set keys that are settings (or arguments the network takes) and values that pass the
    recipe's checks (epochs above warmup_epochs, ...): what `training train` refuses before reading any data."""
    from training.config_checks import config_problems
    from training.config_recipes import build_config, is_ensemble_recipe
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


def test_an_optional_part_is_checked_alone():
    """What a synopsis puts in brackets is checked too: flags a user copies from them must exist and take what
    the brackets give, choices included."""
    synopsis = _code_block_synopses(
        "    python -m export --checkpoint r/best.pt --name m [--precision fp16|int8]\n"
        "        [--int8-ranges minmax|entropy]   # how ranges are set\n"
        "        [--replace]              # NAME is listed already\n"
    )
    assert synopsis == [
        "python -m export --checkpoint r/best.pt --name m [--precision fp16|int8] "
        "[--int8-ranges minmax|entropy] [--replace]"
    ]
    assert _with_each_optional_part(synopsis[0]) == [
        f"python -m export --checkpoint r/best.pt --name m {part}"
        for part in (
            "--precision fp16",
            "--precision int8",
            "--int8-ranges minmax",
            "--int8-ranges entropy",
            "--replace",
        )
    ]
    assert _with_each_optional_part("python -m x [--default | --default-for cpu|cuda] [--model NAME ...]") == [
        "python -m x --default",
        "python -m x --default-for cpu",
        "python -m x --default-for cuda",
        "python -m x --model NAME",
    ]
    with pytest.raises(pytest.fail.Exception, match="invalid choice: 'percentil'"):
        parse("python -m export --checkpoint r/best.pt --name m --int8-ranges percentil")


def test_the_docs_give_optional_parts():
    assert len(OPTIONAL) >= 30, OPTIONAL
    assert any("--int8-ranges entropy" in variant for _, variant in OPTIONAL)


@pytest.mark.parametrize("doc, command", OPTIONAL, ids=[f"{d}:{c[:70]}" for d, c in OPTIONAL])
def test_doc_optional_part_parses(doc, command):
    parse(command)


PAGES = ("README.md", "models/README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md"))))
TOP_FOLDERS = ("bench", "deploy", "docs", "export", "inference", "models", "scripts", "service", "tests", "training")


def _sections(page: str) -> list[str]:
    """A page's headings, and the bold words that open a paragraph or an item (``- **Muon for the ResNet-9**``)."""
    text = (ROOT / page).read_text(encoding="utf-8")
    headings = [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]
    return headings + re.findall(r"^\s*(?:- )?\*\*([^*\n]+)\*\*", text, flags=re.MULTILINE)


def _line(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


# a page and a section, as the docs and the code's comments name them: `docs/deploy.md`, "Photos"
PAGE_SECTION = r'((?:docs/[\w-]+|models/README)\.md)[`\'"]?,? ?"([^"\n]+)"'
SOURCES = ("*.py", "*.yaml", "*.toml", "*.sh")


def section_references() -> list[tuple[str, str, str]]:
    """(where, page, section) for each page and section named in the docs and in the code's comments (where the
    measurements behind a choice are), and each "Section" below / (above, "Section") of a page: the section must
    be there, a heading or a paragraph's bold lead beginning with its name."""
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for m in re.finditer(PAGE_SECTION, text):
            found.append((f"{page}:{_line(text, m.start())}", m.group(1), m.group(2)))
        for m in re.finditer(r'"([^"\n]+)",? (?:below|above)\b|\b(?:below|above), "([^"\n]+)"', text):
            found.append((f"{page}:{_line(text, m.start())}", page, m.group(1) or m.group(2)))
    sources = [ROOT / "pyproject.toml"] + [
        path for folder in TOP_FOLDERS if folder != "tests" for glob in SOURCES for path in (ROOT / folder).rglob(glob)
    ]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(PAGE_SECTION, text):
            found.append((f"{path.relative_to(ROOT)}:{_line(text, m.start())}", m.group(1), m.group(2)))
    return found


SECTIONS = section_references()


def test_the_docs_and_the_code_refer_to_sections():
    kinds = [where.partition(":")[0].rpartition(".")[2] for where, _, _ in SECTIONS]
    assert kinds.count("md") >= 20 and kinds.count("py") >= 15, SECTIONS


def test_a_section_may_be_a_bold_lead():
    assert "Muon for the ResNet-9" in _sections("docs/fast-training.md")
    assert "Photos (2-core CPU, no GPU)" in _sections("docs/deploy.md")


@pytest.mark.parametrize("where, page, section", SECTIONS, ids=[f"{w}:{s[:40]}" for w, _, s in SECTIONS])
def test_section_reference_resolves(where, page, section):
    assert (ROOT / page).is_file(), f"{where} names {page}, which does not exist"
    sections = _sections(page)
    assert any(s.startswith(section) for s in sections), f"{where}: {page} has no section {section!r}: {sections}"


def repository_paths() -> list[tuple[str, str]]:
    """(where, path) for each code span of the docs that is a path in one of the repository's own folders
    (bench/results/score.json, service/score/ray_engine.py), a glob (``*``) included."""
    found = []
    for page in PAGES:
        text = (ROOT / page).read_text(encoding="utf-8")
        for m in re.finditer(r"`((?:%s)/[\w./*-]*)`" % "|".join(TOP_FOLDERS), text):
            found.append((f"{page}:{_line(text, m.start())}", m.group(1)))
    return found


PATHS = repository_paths()


def test_the_docs_name_repository_paths():
    assert len(PATHS) >= 100, len(PATHS)


@pytest.mark.parametrize("where, path", PATHS, ids=[f"{w}:{p}" for w, p in PATHS])
def test_doc_repository_path_exists(where, path):
    assert any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists(), f"{where} names {path}: no such file"
