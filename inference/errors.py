"""The refusal of what the user gave: the base of every typed user error, here at the bottom so that
``inference``, ``training`` and ``export`` can all raise it."""

from __future__ import annotations


class UsageError(ValueError):
    """What the user named or gave wrong (an unknown name, a file that is not what it should be, an --out in the
    way): the command lines print it in one line and exit with status 2. They catch this and the other typed
    refusals (ConfigError, DatasetError, ManifestError, ...), never a bare KeyError or ValueError: one of those is
    a bug and keeps its traceback. A ValueError, so that code catching those around a lookup goes on catching it."""
