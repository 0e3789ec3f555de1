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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable

from watchdog.events import DirCreatedEvent, DirMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("dropin.sources")


@dataclass(frozen=True)
class Change:
    """Something changed in version directory `version` of a source.

    `whole` means the directory itself appeared in one step (renamed or moved into place), so it
    may be complete already; otherwise its files are being written, replaced or removed."""

    version: int
    whole: bool = False


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

    def fingerprint(self, version_dir: Path) -> Hashable | None:
        """A value that changes whenever the files of a version change, so that a version still
        being written is not loaded and a changed one is reloaded. Runs in a worker thread.
        None (the default) means the source cannot tell: versions load as soon as they appear."""
        return None

    def watch(self, notify: Callable[[Change], None]) -> Callable[[], None] | None:
        """Start reporting changes by calling `notify` (from any thread). Return a function that
        stops watching, or None when this source cannot watch now: periodic rescans then do
        the work, and `watch` is asked again on the next rescan."""
        return None


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

    def fingerprint(self, version_dir: Path) -> Hashable | None:
        """Every file's relative path, inode, size and modification time: a copy in progress, a
        replaced file and an atomically swapped directory all change it."""
        files = []
        try:
            for root, dirs, names in os.walk(version_dir, followlinks=False):
                dirs.sort()
                for name in sorted(names):
                    path = os.path.join(root, name)
                    try:
                        st = os.stat(path)
                    except OSError:  # vanished or a dangling link: still part of the picture
                        files.append((os.path.relpath(path, version_dir), 0, -1, 0))
                        continue
                    files.append((os.path.relpath(path, version_dir), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            return None
        return tuple(files)

    def watch(self, notify: Callable[[Change], None]) -> Callable[[], None] | None:
        base = os.path.abspath(self.base_path)
        if not os.path.isdir(base):
            return None
        handler = _VersionEvents(base, notify)
        try:
            watch = shared_observer().schedule(handler, base, recursive=True)
        except OSError as exc:  # e.g. out of inotify watches: rescans still work
            log.warning("cannot watch %s (%s); relying on rescans", base, exc)
            return None
        return lambda: shared_observer().unschedule(watch)


# One watchdog observer thread serves every local source.
_OBSERVER: Observer | None = None
_OBSERVER_LOCK = threading.Lock()


def shared_observer() -> Observer:
    global _OBSERVER
    with _OBSERVER_LOCK:
        if _OBSERVER is None:
            _OBSERVER = Observer()
            _OBSERVER.daemon = True
            _OBSERVER.start()
        return _OBSERVER


# Reading files (a backend loading a model) must not look like a change.
_CHANGES = {"created", "deleted", "modified", "moved", "closed"}


class _VersionEvents(FileSystemEventHandler):
    """Turns watchdog events under a base path into `Change`s of version directories."""

    def __init__(self, base: str, notify: Callable[[Change], None]) -> None:
        self.base = base
        self.notify = notify

    def _version(self, path: str | bytes) -> tuple[int | None, bool]:
        """The version a path is in, and whether it is the version directory itself."""
        rel = os.path.relpath(os.fsdecode(path), self.base)
        if rel == "." or rel.startswith(".."):
            return None, False
        parts = rel.split(os.sep)
        return parse_version(parts[0]), len(parts) == 1

    def on_any_event(self, event: FileSystemEvent) -> None:
        # Watchdog adds synthetic events for the contents of a directory moved in: not writes.
        if event.event_type not in _CHANGES or event.is_synthetic:
            return
        number, is_root = self._version(event.src_path)
        if event.event_type == "moved":
            dest, dest_is_root = self._version(getattr(event, "dest_path", ""))
            if dest is not None:
                self.notify(Change(dest, whole=dest_is_root and isinstance(event, DirMovedEvent)))
            if number is not None:
                self.notify(Change(number))
            return
        if number is None or (is_root and event.event_type == "modified"):
            return
        self.notify(Change(number, whole=is_root and isinstance(event, DirCreatedEvent)))
