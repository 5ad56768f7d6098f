"""A name -> object registry, filled by a decorator; unknown names list the known ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """``reg = Registry("dataset")``; ``@reg.register("name")``; ``reg.get("name")``."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a test's or a plugin's temporary entry)."""
        self._items.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._items)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise ValueError(
                f"Unknown {self.kind} {name!r}. Known {self.plural}: {', '.join(self.names())}."
            ) from None
