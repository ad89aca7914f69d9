"""One line for a user out of a library's exception, whose text may run over many lines of advice."""

from __future__ import annotations

import logging

from .files import file_in_the_way


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
    banner and documentation links. Typed as Any to keep pydantic out of this module's imports."""
    problems = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"])
        what = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            what = "no such setting"
        given = problem.get("input")
        # a scalar shows what was typed; a section's whole mapping would drown the message
        shown = (
            f" (got {given!r:.60})"
            if isinstance(given, (str, int, float, bool)) and problem["type"] != "missing"
            else ""
        )
        problems.append(f"{where}: {what}{shown}" if where else what)  # a check across fields names them itself
    return "; ".join(problems)[:limit]


# The project's own loggers, which speak at INFO; libraries (onnxscript, onnx_ir, torch) speak at INFO by the
# hundred lines during an export, so they are heard from WARNING up.
OWN_LOGGERS = ("training", "export", "inference")  # the service logs as bentoml.cifar, under BentoML's setup


def configure_logging() -> None:
    """Logging for a command line: this project's messages at INFO, other libraries' from WARNING."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # a no-op where handlers exist already
    logging.getLogger().setLevel(logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
