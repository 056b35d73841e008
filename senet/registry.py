"""Named registries: every choice in the suite (gate, squeeze, backbone, study...) is looked up here.

A registry maps a name to a builder. Unknown names raise a :class:`~senet.errors.UserValueError`
(a ``ValueError``) that lists the valid choices, so a typo on the command line becomes one readable
line instead of a traceback.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UserValueError

T = TypeVar("T")


class Registry(Generic[T]):
    """A dict of named entries with a ``register`` decorator and helpful errors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = ()) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or obj.__name__
            for k in (key, *aliases):
                if k in self._entries:
                    raise ValueError(f"{self.kind} '{k}' is registered twice")
                self._entries[k] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        return self.register(name)(obj)

    def remove(self, name: str) -> T:
        """Take an entry out again (tests that register a temporary entry clean up with this)."""
        return self._entries.pop(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UserValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def resolve(self, choice):
        """Return the entry for a name, or ``choice`` itself when it is already a callable."""
        if isinstance(choice, str):
            return self.get(choice)
        if callable(choice):
            return choice
        raise ValueError(f"{self.kind} must be a name or a callable, got {choice!r}")

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()
