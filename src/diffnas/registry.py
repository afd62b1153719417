"""A tiny name -> factory registry, used for ops, spaces, strategies and components."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise a KeyError that lists what is available."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        """Register `obj` under `name`."""
        self.register(name)(obj)

    def get(self, name: str) -> T:
        """Return the object registered under `name`."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The message for a name that is not registered: the closest names, then all."""
        close = self.suggest(name)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} available: {', '.join(sorted(self._items))}"

    def suggest(self, name: str) -> list[str]:
        """Registered names close to `name`: a case-insensitive match first, else near spellings."""
        if not isinstance(name, str):
            return []
        same = [k for k in self._items if k.lower() == name.lower()]
        if same:
            return same
        folded = {k.lower(): k for k in self._items}
        return [folded[k] for k in difflib.get_close_matches(name.lower(), folded, n=3)]

    def lookup(self, name: str) -> str | None:
        """`name` as registered, ignoring case; None when no name (or more than one) matches."""
        if name in self._items:
            return name
        same = [k for k in self._items if isinstance(name, str) and k.lower() == name.lower()]
        return same[0] if len(same) == 1 else None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)
