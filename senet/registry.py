"""Named registries: every choice in the suite (gate, squeeze, backbone, study...) is looked up here.

A registry maps a name to a builder. Unknown names raise a :class:`~senet.errors.UserValueError`
(a ``ValueError``) that lists the valid choices, so a typo on the command line becomes one readable
line instead of a traceback.

A registry made with an ``info`` dataclass keeps, beside each entry, what other code needs to know
about it (a gate's output range, the paper's result for a choice), given as keywords when the entry
is registered: one registration is all a new choice needs.
"""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import UserValueError

T = TypeVar("T")


@dataclass(frozen=True)
class Choice:
    """A choice resolved once: its name (what reports and hooks show) and its registry entry."""

    name: str
    entry: Any


class Registry(Generic[T]):
    """A dict of named entries with a ``register`` decorator and helpful errors."""

    def __init__(self, kind: str, info: type | None = None):
        self.kind = kind
        self._info_type = info
        self._entries: dict[str, T] = {}
        self._info: dict[str, Any] = {}

    def register(self, name: str | None = None, *, aliases: tuple[str, ...] = (), **info) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            key = name or obj.__name__
            details = self._details(key, info)
            for k in (key, *aliases):
                if k in self._entries:
                    raise ValueError(f"{self.kind} '{k}' is registered twice")
                self._entries[k] = obj
                self._info[k] = details
            return obj

        return deco

    def _details(self, key: str, info: dict[str, Any]) -> Any:
        if self._info_type is None:
            if info:
                raise TypeError(f"{self.kind} registry keeps no details; got {', '.join(info)} for {key!r}")
            return None
        try:
            return self._info_type(**info)
        except TypeError as e:
            raise TypeError(f"{self.kind} {key!r}: {e}") from None

    def add(self, name: str, obj: T, **info) -> T:
        return self.register(name, **info)(obj)

    def remove(self, name: str) -> T:
        """Take an entry out again (tests that register a temporary entry clean up with this)."""
        self._info.pop(name, None)
        return self._entries.pop(name)

    @contextlib.contextmanager
    def registered(self, name: str, obj: T, **info) -> Iterator[T]:
        """``obj`` registered as ``name`` inside the ``with`` block only."""
        self.add(name, obj, **info)
        try:
            yield obj
        finally:
            self.remove(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UserValueError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def info(self, name: str) -> Any:
        """The details registered with ``name`` (an instance of the registry's ``info`` class)."""
        self.get(name)
        return self._info[name]

    def resolve(self, choice):
        """Return the entry for a name, or ``choice`` itself when it is already a callable."""
        return self.choice(choice).entry

    def choice(self, value) -> Choice:
        """``value`` resolved once: a registered name, a :class:`Choice`, or a callable (named after
        its ``__name__``)."""
        if isinstance(value, Choice):
            return value
        if isinstance(value, str):
            return Choice(value, self.get(value))
        if callable(value):
            return Choice(getattr(value, "__name__", "custom"), value)
        raise ValueError(f"{self.kind} must be a name or a callable, got {value!r}")

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


#: Where a config field names its choices: a registry, a registry named ``"module:NAME"`` (imported
#: when first read, for registries whose modules import the config), or a tuple of names.
Choices = Registry | str | tuple[str, ...]


def choice_field(default: str, choices: Choices, **metadata):
    """A dataclass field whose value is one of ``choices`` (``senet config`` lists them, and the
    config's validation checks them)."""
    return field(default=default, metadata={"choices": choices, **metadata})


def choice_names(choices: Choices) -> list[str]:
    """The names a field's ``choices`` allow."""
    if isinstance(choices, str):
        module, _, attr = choices.partition(":")
        choices = getattr(importlib.import_module(module), attr)
    return choices.names() if isinstance(choices, Registry) else list(choices)
