"""Registries that plugins add their classes to, keyed by the name configs refer to."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name -> class table, in registration order (built-in, then entry points sorted
    by name). The plugin host then sorts the backends by `Backend.priority` (`sort`), so the
    order of `names()` is also the order in which backends are asked to claim a version directory."""

    def __init__(self, kind: str, base: type) -> None:
        self.kind = kind
        self._base = base
        self._entries: dict[str, type[T]] = {}
        self._owners: dict[str, str] = {}
        #: the plugin whose hook is running; set by the plugin host so entries know their owner
        self.current_plugin: str = "?"

    def add(self, name: str, cls: type[T]) -> None:
        """Register `cls` under `name`. Names are unique per registry."""
        if not isinstance(cls, type) or not issubclass(cls, self._base):
            raise TypeError(f"{self.kind} {name!r} must be a subclass of {self._base.__qualname__}, got {cls!r}")
        if name in self._entries:
            raise ValueError(
                f"{self.kind} {name!r} is registered twice: by plugin {self._owners[name]!r} "
                f"and by plugin {self.current_plugin!r}"
            )
        self._entries[name] = cls
        self._owners[name] = self.current_plugin

    def get(self, name: str) -> type[T]:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(self._entries) or "none"
            raise KeyError(f"no {self.kind} named {name!r} (installed: {known})") from None

    def owner(self, name: str) -> str:
        """The plugin that registered `name`."""
        return self._owners[name]

    def sort(self, key: Callable[[type[T]], Any]) -> None:
        """Reorder the entries by `key(cls)` (stable: equal keys keep registration order)."""
        self._entries = dict(sorted(self._entries.items(), key=lambda item: key(item[1])))

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> Iterator[tuple[str, type[T]]]:
        return iter(list(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"<{self.kind} registry: {', '.join(self._entries) or 'empty'}>"
