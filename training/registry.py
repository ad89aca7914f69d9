"""A name -> constructor registry, shared by models and datasets.

Registration is by decorator; a duplicate name fails at import time and an
unknown name fails with the list of valid ones, so typos never fall through
to a default.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from inference.errors import UsageError

T = TypeVar("T", bound=Callable)


class UnknownName(UsageError, KeyError):
    """A name the registry does not hold: the user's to correct, a UsageError; still a KeyError, as a lookup
    that fails is."""

    def __str__(self) -> str:  # KeyError's would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def decorator(fn: T) -> T:
            key = name or fn.__name__
            if key in self._entries:
                raise ValueError(f"duplicate {self.kind} name {key!r}")
            self._entries[key] = fn
            return fn

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries))
            raise UnknownName(f"unknown {self.kind} {name!r}; valid names: {valid}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
