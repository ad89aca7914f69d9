"""The refusal of what the user gave: the base of every typed user error, here at the bottom so that
``inference``, ``training`` and ``export`` can all raise it."""

from __future__ import annotations

import importlib.util


class UsageError(ValueError):
    """What the user named or gave wrong (an unknown name, a file that is not what it should be, an --out in the
    way): the command lines print it in one line and exit with status 2. They catch this and the other typed
    refusals (ConfigError, DatasetError, ManifestError, ...), never a bare KeyError or ValueError: one of those is
    a bug and keeps its traceback. A ValueError, so that code catching those around a lookup goes on catching it."""


def missing_package(exc: ImportError) -> str | None:
    """The package an import failed for because this install lacks it (torch on the serving install,
    ``scripts/setup.sh serve``), to be said in one line; None for any other import error: a mistake in the code's
    own imports keeps its traceback, not a false "install it"."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    try:
        return top if importlib.util.find_spec(top) is None else None
    except (ImportError, ValueError):  # a finder that refuses it: not importable here either
        return top
