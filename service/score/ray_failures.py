"""A failed Ray job in one line: Ray hands this process a remote traceback of a thousand characters or more,
wrapped in its own exceptions; the scorer says which stage raised what, and keeps Ray's whole text in a file.

Apart from the engine because reading Ray's text is a job of its own, tied to the wording of Ray's wrappers
and of Python's tracebacks rather than to how the engine runs.
"""

from __future__ import annotations

import os
import re
import tempfile

from . import ray_stages
from .errors import DecoderFailure

# How a stage's DecoderFailure ends the remote traceback Ray Data puts in its UserCodeException's text, which is
# all that reaches this process of it.
_DECODER_FAILURE_LINE = re.compile(rf"^\S*\b{DecoderFailure.__name__}: (.+)$", re.MULTILINE)


def _decoder_failure(exc: BaseException) -> DecoderFailure | None:
    """The ``DecoderFailure`` a stage raised, from the exceptions Ray wraps it in (whose text is a remote
    traceback, over a thousand characters): its one line, as the local engine says it."""
    found, seen = None, set()
    step: BaseException | None = exc
    while step is not None and id(step) not in seen:
        seen.add(id(step))
        if isinstance(step, DecoderFailure) and step.args and isinstance(step.args[0], str):
            found = step.args[0]
        elif (line := _DECODER_FAILURE_LINE.search(str(step))) is not None:
            found = found or line[1]
        cause = getattr(step, "cause", None)  # a RayTaskError's: the stage's own exception
        step = cause if isinstance(cause, BaseException) else step.__cause__ or step.__context__
    return None if found is None else DecoderFailure(found)


# Ray's text of a remote failure: the stage's traceback (its own chain included), then Ray's wrappers' own, each
# joined to the one before by Python's chaining line; colour codes around the task's name.
_CHAINED = re.compile(
    r"\n\n(?:The above exception was the direct cause of the following exception"
    r"|During handling of the above exception, another exception occurred):\n\n"
)
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_FRAME = re.compile(r'^\s+File "(?P<file>[^"]*)", line \d+, in (?P<function>\S+)', re.MULTILINE)
_TASK = re.compile(r"^ray::(?P<task>\S+?)(?:\(\))? ", re.MULTILINE)
# ray_stages' functions in a stage's traceback, and the stage each runs.
_STAGE_FUNCTIONS = {
    "read_files": "read_files",
    "decode_files": "decode_files",
    "__init__": "Classify",
    "__call__": "Classify",
}


def job_failure(exc: BaseException) -> str:
    """One line for a failed Ray job: the stage that failed and its exception (Ray's text of it is a remote
    traceback of a thousand characters or more, on many lines)."""
    text = _COLOUR.sub("", str(exc)).strip()
    # the last exception raised in the stage itself, before Ray's wrappers (ray.exceptions.UserCodeException)
    raised = [line for line in map(_raised, _CHAINED.split(text)) if line and not line.startswith("ray.")]
    said = raised[-1] if raised else f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
    stage = _stage(text)
    return f"the Ray job failed{f' in stage {stage}' if stage else ''}: {said[:300]}"


def _raised(block: str) -> str:
    """The exception line of one traceback in Ray's text: the first line after its frames (after its first line,
    Ray's name of the task, where it has none) that no space starts; '' where there is none."""
    lines = block.splitlines()
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    if not frames and not (lines and lines[0].startswith("ray::")):
        return ""
    after = frames[-1] + 1 if frames else 1
    return next((line for line in lines[after:] if line and not line[0].isspace()), "")


def _stage(text: str) -> str | None:
    """The stage the traceback ran in: the last of ray_stages' stage functions among its frames, else Ray's name
    of the task (a fused one names every stage it runs); None for a failure that names no task (an actor lost)."""
    ours = [
        _STAGE_FUNCTIONS[found["function"]]
        for found in _FRAME.finditer(text)
        if os.path.basename(found["file"]) == os.path.basename(ray_stages.__file__)
        and found["function"] in _STAGE_FUNCTIONS
    ]
    if ours:
        return ours[-1]
    task = _TASK.search(text)
    return task["task"][:200] if task else None


def _kept(exc: BaseException) -> str:
    """Ray's whole text of a failure, written to a file of its own: where it is, for the one line that names it."""
    try:
        fd, path = tempfile.mkstemp(prefix="score-ray-failure-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(_COLOUR.sub("", str(exc)))
    except OSError:
        return ""
    return f" (Ray's traceback: {path})"
