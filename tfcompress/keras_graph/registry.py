"""A registry keyed by class, looked up along the MRO, with per-call overrides and scoped changes.

Every table in tfcompress that says "for this layer class, do that" is a :class:`Registry`; the layer specs
(:mod:`tfcompress.specs`) are the main one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

Value = TypeVar("Value")


class Registry(Generic[Value]):
    """``{class: value}`` where a lookup of an object or class follows its MRO.

    Args:
        name: what the values are (for messages), e.g. "layer spec".
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[type, Value] = {}

    def register(self, *classes: type, value: Value) -> None:
        """Registers ``value`` for ``classes`` (replacing earlier entries)."""
        for cls in classes:
            if not isinstance(cls, type):
                raise TypeError(f"{self.name} registry keys are classes, got {cls!r}")
            self._entries[cls] = value

    def lookup(self, obj: Any, overrides: Mapping[type, Value] | None = None, *, exact: bool = False) -> Value | None:
        """The value of ``obj``'s class (or of ``obj`` if it is a class), or of its nearest registered base;
        ``overrides`` take precedence at every level of the MRO. ``exact=True`` ignores base classes."""
        cls = obj if isinstance(obj, type) else type(obj)
        for base in cls.__mro__[:1] if exact else cls.__mro__:
            if overrides and base in overrides:
                return overrides[base]
            if base in self._entries:
                return self._entries[base]
        return None

    def registered(self) -> dict[type, Value]:
        """A copy of the entries (class → value), in registration order."""
        return dict(self._entries)

    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry[Value]]:
        """Changes made inside the block are undone when it ends (tests register throw-away entries)."""
        saved = dict(self._entries)
        try:
            yield self
        finally:
            self._entries = saved

    def __contains__(self, cls: type) -> bool:
        return cls in self._entries
