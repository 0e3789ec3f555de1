"""The model repository source contract, and the built-in local-directory source.

A source lists the numbered version directories of one model's base path. The core decides
what to load (version policy) and when (start-up, events, rescans).

    @hookimpl
    def dropin_register_sources(registry):
        registry.add("local", LocalSource)
"""

from __future__ import annotations

import abc
import logging
import os
from pathlib import Path

log = logging.getLogger("dropin.sources")


class ModelSource(abc.ABC):
    """Where one model's versions live. Created once per model base path."""

    name: str = ""

    def __init__(self, base_path: str) -> None:
        self.base_path = base_path

    @classmethod
    @abc.abstractmethod
    def claims(cls, base_path: str) -> bool:
        """True if this source serves `base_path` (for example by its scheme, "s3://...")."""

    @abc.abstractmethod
    def versions(self) -> dict[int, Path]:
        """The versions present now: number -> a local directory a backend can read. Runs in a
        worker thread. Raise OSError when the base path cannot be read at all."""


def parse_version(name: str) -> int | None:
    """A version number from a directory name: only fully numeric, positive names count."""
    if not name.isdigit() or not name.isascii():
        return None
    number = int(name)
    if number <= 0 or number >= 2**63:
        return None
    return number


class LocalSource(ModelSource):
    """A directory on the local file system: `<base_path>/<version>/`."""

    def __init__(self, base_path: str) -> None:
        super().__init__(base_path)
        self._ignored: set[str] = set()

    @classmethod
    def claims(cls, base_path: str) -> bool:
        return "://" not in base_path

    def versions(self) -> dict[int, Path]:
        found: dict[int, Path] = {}
        with os.scandir(self.base_path) as entries:
            for entry in entries:
                if not entry.is_dir():
                    continue
                number = parse_version(entry.name)
                if number is None:
                    if entry.name not in self._ignored:
                        self._ignored.add(entry.name)
                        log.info("ignoring %s: not a version directory (a positive number)", entry.path)
                    continue
                found[number] = Path(entry.path)
        return found
