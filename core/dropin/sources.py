"""The model repository source contract, and the built-in local-directory source.

A source lists the numbered version directories of one model's base path. The core decides
what to load (version policy) and when (start-up, events, rescans).

    @hookimpl
    def dropin_register_sources(registry):
        registry.add("local", LocalSource)
"""

from __future__ import annotations

import abc
import importlib
import logging
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

log = logging.getLogger("dropin.sources")


@dataclass(frozen=True)
class Change:
    """Something changed in version directory `version` of a source, or in the base directory
    itself when `version` is None (it was created, deleted, or renamed away or into place).

    `whole` means the directory itself appeared or disappeared in one step (renamed, moved or
    deleted), so a new one may be complete already; otherwise its files are being written,
    replaced or removed."""

    version: int | None
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
        worker thread. Raise FileNotFoundError when the base path does not exist (the model has
        no versions), another OSError when it cannot be read now (what is loaded keeps serving)."""

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


def preferred_spelling(number: int, names: list[str]) -> str:
    """Which of several directories naming the same version (`7`, `007`) is served: the number
    written plainly, or else the name that sorts first, so that the choice never depends on the
    order in which the file system lists them."""
    plain = str(number)
    return plain if plain in names else min(names)


class LocalSource(ModelSource):
    """A directory on the local file system: `<base_path>/<version>/`."""

    def __init__(self, base_path: str) -> None:
        super().__init__(base_path)
        self._ignored: set[str] = set()
        self._warned: set[tuple[str, ...]] = set()

    @classmethod
    def claims(cls, base_path: str) -> bool:
        return "://" not in base_path

    def versions(self) -> dict[int, Path]:
        names: dict[int, list[str]] = {}
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
                names.setdefault(number, []).append(entry.name)
        found: dict[int, Path] = {}
        for number, spellings in names.items():
            chosen = preferred_spelling(number, spellings)
            if len(spellings) > 1 and tuple(sorted(spellings)) not in self._warned:
                self._warned.add(tuple(sorted(spellings)))
                log.warning(
                    "%s: directories %s are both version %d; serving %s, ignoring the other%s",
                    self.base_path, " and ".join(sorted(spellings)), number, chosen, "s" if len(spellings) > 2 else "",
                )
            found[number] = Path(self.base_path, chosen)
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
        """Watch the base directory's tree, and its parent for the base directory itself being
        deleted, renamed away or (re)created: the caller then asks `watch` again."""
        base = os.path.abspath(self.base_path)
        parent = os.path.dirname(base)
        stops: list[Callable[[], None]] = []

        def stop() -> None:
            for each in stops:
                each()

        if parent != base and os.path.isdir(parent):
            try:
                stops.append(watch_directory(_BaseEvents(base, notify), parent, recursive=False))
            except OSError as exc:  # e.g. not readable: only rescans see the base path come and go
                log.debug("cannot watch %s for %s itself (%s)", parent, base, exc)
        try:
            if os.path.isdir(base):
                stops.append(watch_directory(_VersionEvents(base, notify), base, recursive=True))
        except OSError as exc:  # e.g. out of inotify watches: rescans still work
            log.warning("cannot watch %s (%s); relying on rescans", base, exc)
            stop()
            return None
        return stop if stops else None


# One watchdog observer thread serves every watched directory.
_OBSERVER: BaseObserver | None = None
_OBSERVER_LOCK = threading.Lock()
_WATCH_LOCK = threading.Lock()
_WATCH_USERS: dict[ObservedWatch, int] = {}  # handlers per watch, which ends with the last one

# watchdog holds the "moved from" half of a rename up to its pairing delay (0.5 s by default) to
# pair it with the "moved to" half, and so reports a directory renamed out of a watched tree only
# then, holding every later event behind it. The kernel queues both halves of one rename together,
# so a short wait pairs them as well; an unpaired rename is reported as deleted + created, which
# the handlers below treat alike.
MOVE_PAIRING_SECONDS = 0.02


def _shorten_move_pairing() -> None:
    for module, name in (
        ("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),  # watchdog >= 7
        ("watchdog.observers.inotify_buffer", "InotifyBuffer"),  # watchdog 6
    ):
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        if isinstance(getattr(cls, "delay", None), (int, float)):
            cls.delay = MOVE_PAIRING_SECONDS
            return


def shared_observer() -> BaseObserver:
    global _OBSERVER
    with _OBSERVER_LOCK:
        if _OBSERVER is None:
            _shorten_move_pairing()
            _OBSERVER = Observer()
            _OBSERVER.daemon = True
            _OBSERVER.start()
        return _OBSERVER


def watch_directory(handler: FileSystemEventHandler, path: str, recursive: bool) -> Callable[[], None]:
    """Send the events under `path` to `handler` until the returned function is called. Several
    handlers may watch the same directory (models sharing a parent, config.json next to them):
    stopping one leaves the others watching."""
    observer = shared_observer()
    with _WATCH_LOCK:
        watch = observer.schedule(handler, path, recursive=recursive)
        _WATCH_USERS[watch] = _WATCH_USERS.get(watch, 0) + 1
    stopped = False

    def stop() -> None:
        nonlocal stopped
        with _WATCH_LOCK:
            if stopped:
                return
            stopped = True
            _WATCH_USERS[watch] -= 1
            try:
                if _WATCH_USERS[watch] == 0:
                    del _WATCH_USERS[watch]
                    observer.unschedule(watch)
                else:
                    observer.remove_handler_for_watch(handler, watch)
            except KeyError:  # watchdog already dropped it
                pass

    return stop


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
                self.notify(Change(dest, whole=dest_is_root and event.is_directory))
            if number is not None:  # renamed away (out of the base path or within it)
                self.notify(Change(number, whole=is_root and event.is_directory))
            return
        if number is None or (is_root and event.event_type == "modified"):
            return
        whole = is_root and event.is_directory and event.event_type in ("created", "deleted")
        self.notify(Change(number, whole=whole))


class _BaseEvents(FileSystemEventHandler):
    """Watches a base directory's parent for the base directory itself coming or going."""

    def __init__(self, base: str, notify: Callable[[Change], None]) -> None:
        self.base = base
        self.notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "deleted", "moved") or event.is_synthetic:
            return
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
        if self.base in paths:
            self.notify(Change(None, whole=True))
