"""One registry pattern for everything pluggable: task families, renderers, baselines, metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from hf_icl.errors import unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → object map whose lookups fail with the allowed names and a did-you-mean."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, where: str = "") -> T:
        if name not in self._items:
            raise unknown_name(self.kind, name, self._items, where)
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
