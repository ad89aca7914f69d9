"""One line for a user out of a library's exception, whose text may run over many lines of advice; a count of
things in words; the standard streams a command line writes its lines to; and the columns a text takes there."""

from __future__ import annotations

import argparse
import codecs
import logging
import os
import re
import select
import signal
import sys
import unicodedata

from .files import file_in_the_way


def counted(count: int, noun: str, plural: str | None = None, separator: str = ",") -> str:
    """``count`` and ``noun``, in the plural for every count but 1: "1 image", "0 images", "1,234 images"
    (``separator`` between thousands: "" for none). The plural adds "es" after s, x, z or sh ("2 classes"),
    else "s" ("2 epochs"); ``plural`` where it is another word ("batch", "batches"; "entry", "entries")."""
    if count == 1:
        word = noun
    else:
        word = plural or noun + ("es" if noun.endswith(("s", "x", "z", "sh")) else "s")
    return f"{count:{separator}} {word}"


def and_listed(names: list[str]) -> str:
    """``names`` as a sentence lists them: "a and b", "a, b and c"."""
    return " and ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} and {names[-1]}"


def command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    """The parser of ``parser``'s subcommand ``command``, else ``parser``: a mistake in a subcommand's flags is told
    with that subcommand's usage, which names the flags it takes, not the program's list of subcommands."""
    # argparse has no public way back to a subcommand's parser; this is the one place that reaches its private
    # action, falling back to the program's usage (tests/test_cli_sweep.py breaks loudly if argparse changes)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def exception_summary(exc: BaseException, after: str | None = None, lines: int = 1, limit: int = 200) -> str:
    """The first ``lines`` non-blank lines of ``exc``'s text (from ``after`` on, where it occurs), joined and cut
    to ``limit`` characters; the exception's type name where the text is empty."""
    text = str(exc)
    if after and after in text:
        text = text.split(after, 1)[1]
    kept = "; ".join([line.strip() for line in text.splitlines() if line.strip()][:lines])
    if len(kept) <= limit:
        return kept or type(exc).__name__
    # a text cut mid-sentence reads as the whole of it: end after the last sentence that fits, unless that
    # drops over half of what fits, and else say it is cut
    sentence = kept[: limit + 1].rfind(". ")
    if sentence > limit // 2:
        return kept[: sentence + 1]
    return kept[: limit - 4].rsplit(" ", 1)[0] + " ..."


def os_error_text(exc: OSError) -> str:
    """An OSError on one line: the path and the reason. A folder wanted where a file is (``mkdir`` of a path
    that is a file, or one under a file) names that file, where the errno text alone says "File exists"."""
    path = exc.filename
    if path is not None and isinstance(exc, (FileExistsError, NotADirectoryError)):
        file = file_in_the_way(path)
        if file is not None:
            return f"{file} is a file, not a folder"
    where = f"{path}: " if path is not None else ""
    return f"{where}{exc.strerror or exc}"


def validation_problems(error, limit: int = 600) -> str:
    """Every problem of a pydantic ``ValidationError`` on one line, ``where: what (got VALUE)``, without pydantic's
    banner and documentation links; a union field that took none of its kinds in one problem of its own. Typed as
    Any to keep pydantic out of this module's imports."""
    problems = []
    for group in _by_union(error.errors(include_url=False)):
        problems.append(_problem(group[0]) if _union_of(group[0]) is None else _union_problem(group))
    return "; ".join(problems)[:limit]


def _problem(problem: dict) -> str:
    where = ".".join(str(part) for part in problem["loc"])
    what = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        what = "no such setting"
    given = problem.get("input")
    # a scalar shows what was typed; a section's whole mapping would drown the message
    shown = (
        f" (got {given!r:.60})" if isinstance(given, (str, int, float, bool)) and problem["type"] != "missing" else ""
    )
    return f"{where}: {what}{shown}" if where else what  # a check across fields names them itself


# How pydantic names a union's member in the location of that member's error: a core type's name, or a schema's
# label (``literal['auto']``, ``constrained-int``, ``list[int]``), which no field name looks like.
_CORE_TYPES = {"bool", "int", "float", "str", "bytes", "none", "decimal", "date", "time", "datetime", "timedelta"}


def _union_tag(part: object) -> bool:
    return isinstance(part, str) and (
        part in _CORE_TYPES or "[" in part or part.startswith(("constrained-", "function-"))
    )


def _union_of(problem: dict) -> tuple | None:
    """The location of the union field whose member ``problem`` is an error of; None for any other problem."""
    loc = tuple(problem["loc"])
    return next((loc[:i] for i, part in enumerate(loc) if _union_tag(part)), None)


def _by_union(problems: list[dict]) -> list[list[dict]]:
    """The problems in order, those of one union field's members (pydantic says each member's, in a row) together."""
    groups: list[list[dict]] = []
    for problem in problems:
        union = _union_of(problem)
        if union is not None and groups and _union_of(groups[-1][0]) == union:
            groups[-1].append(problem)
        else:
            groups.append([problem])
    return groups


# Errors saying a value is not of a member's kind at all, as opposed to one of its kind that breaks a bound.
_OTHER_KIND = ("_type", "_parsing", "literal_error", "none_required", "enum")


def _union_problem(members: list[dict]) -> str:
    """One union field's problem: where the value is of one member's kind but breaks its bound (-3 for a positive
    int or 'auto'), that bound; else every kind it takes ("'maybe' is not one of true, false, auto")."""
    field = _union_of(members[0]) or ()
    near = [m for m in members if not m["type"].endswith(_OTHER_KIND) or len(m["loc"]) > len(field) + 1]
    if near:
        return _problem({**near[0], "loc": field + tuple(near[0]["loc"][len(field) + 1 :])})
    values, kinds = [], []
    for member in members:
        if member["type"] == "literal_error":
            values += [v.strip().strip("'\"") for v in re.split(r",| or ", member["ctx"]["expected"])]
        elif member["type"].startswith("bool_"):
            values += ["true", "false"]
        elif member["type"] == "none_required":
            values.append("null")
        else:
            kinds.append(member["msg"].removeprefix("Input should be ").split(",")[0])
    if len(values) > 1:
        kinds.append(f"one of {', '.join(values)}")
    else:
        kinds += values
    where = ".".join(str(part) for part in field)
    return f"{where}: {members[0].get('input')!r:.60} is not {' or '.join(kinds)}"


# The project's own loggers, which speak at INFO; libraries (onnxscript, onnx_ir, torch) speak at INFO by the
# hundred lines during an export, so they are heard from WARNING up.
OWN_LOGGERS = ("training", "export", "inference")  # the service logs as bentoml.cifar, under BentoML's setup


def configure_logging() -> None:
    """Logging for a command line: this project's messages at INFO, other libraries' from WARNING."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # a no-op where handlers exist already
    logging.getLogger().setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


# What a command line writes text that its stream's encoding cannot hold with: a file name's undecodable bytes
# (surrogate escapes) as those bytes, as ls and find write them, so that a name copied from the output still
# names the file; anything else (a class name in ASCII output, PYTHONIOENCODING=ascii) as a backslash escape,
# as Python writes it to standard error. Python's own choices each raise UnicodeEncodeError, a traceback where a
# report's path or a model card holds such text: "strict" (a UTF-8 locale) at the bytes, "surrogateescape" (the
# C locale where it is not coerced to UTF-8, whose encoding is ASCII) at any other character.
READABLE_ERRORS = "surrogateescape_else_backslashreplace"


def _surrogateescape_else_backslashreplace(exc: UnicodeError) -> tuple[bytes, int]:
    """Character by character: the codec hands over a run of them, which may mix escaped bytes and others."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = [
        bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF else c.encode("ascii", "backslashreplace")
        for c in exc.object[exc.start : exc.end]
    ]
    return b"".join(out), exc.end


def configure_streams() -> None:
    """Standard output and error for a command line: text the encoding cannot hold is written as READABLE_ERRORS
    says, not raised; a closed standard error (``2>&-``) discards the messages, where ``print(file=sys.stderr)``
    would write them to standard output, into the results a caller reads from it."""
    codecs.register_error(READABLE_ERRORS, _surrogateescape_else_backslashreplace)  # the same handler again: a no-op
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # for the rest of the process: never closed
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) in ("strict", "surrogateescape") and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=READABLE_ERRORS)


# The status of a command whose reader closed its standard output (`| head -1`): the shell's for a process
# ended by SIGPIPE, as the scorer answers (Python ignores SIGPIPE, so a write raises BrokenPipeError instead).
READER_GONE_STATUS = 128 + signal.SIGPIPE


def flushed(status: int) -> int:
    """``status``, once what the command printed has left the buffer: a reader that has gone then raises
    BrokenPipeError within the command's error handling, not in Python's exit, which prints "Exception ignored"
    and ends with status 120."""
    if sys.stdout is not None:
        sys.stdout.flush()
    return status


def reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it: a BrokenPipeError of its own, not of a
    socket or another file the command writes, which is an error to report."""
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), 0)  # POLLERR is reported unasked: a pipe's write end whose reader is gone
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (AttributeError, OSError, ValueError):  # no standard output, or not a file (captured by a test)
        return False


def stop_writing() -> int:
    """The status for a command whose reader has gone, said with nothing on standard error, as Unix tools end;
    what is still buffered is let go into /dev/null, where Python's exit would flush it into the closed pipe."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return READER_GONE_STATUS


def markdown_cell(text: str) -> str:
    """``text`` as one Markdown table cell: a ``|`` in it (a class name, a step label, a file name) would end the
    cell there and a line break the row."""
    return " ".join(text.replace("|", "\\|").splitlines())


def display_width(text: str) -> int:
    """The columns ``text`` takes in a terminal, where ``len`` counts code points: two for an East Asian Wide or
    Fullwidth character (CJK, kana, most emoji), none for a combining mark (the accent of a decomposed "é", as macOS
    writes file names), a format character (zero-width joiner, variation selector) or the vowel and final consonant
    of a decomposed Hangul syllable (drawn in its first jamo's two columns), one for any other."""
    width = 0
    for c in text:
        if (
            unicodedata.combining(c)
            or unicodedata.category(c) in ("Mn", "Me", "Cf")
            or "\u1160" <= c <= "\u11ff"
            or "\ud7b0" <= c <= "\ud7ff"
        ):
            continue
        width += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` and the spaces after it that make it ``width`` columns wide in a terminal (``str.ljust`` pads to a
    count of code points, which puts the columns after a CJK or a decomposed name out of line)."""
    return text + " " * max(0, width - display_width(text))
