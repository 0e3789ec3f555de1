"""Follows config.json: when it changes (a file-system event, or a new MD5 seen on a rescan), the
new file is applied; an invalid file changes nothing and the log says why, once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from .config import ConfigError, ModelConfig, parse_config
from .pipelines.config import PipelineSet, parse_pipelines
from .sources import watch_directory

if TYPE_CHECKING:
    from .vocabulary import Vocabulary

log = logging.getLogger("dropin.config")

# Editors and deployment tools write in several steps; wait for the burst to end.
DEBOUNCE_SECONDS = 0.05


class ConfigFile:
    def __init__(
        self,
        path: Path,
        apply: Callable[[list[ModelConfig], PipelineSet], Awaitable[bool]],
        vocabulary: Vocabulary | None = None,
    ) -> None:
        self.path = path
        self._vocabulary = vocabulary  # the model keys plugins declared
        self._apply = apply
        self._digest: str | None = None
        self._lock = asyncio.Lock()
        self._stop: Callable[[], None] | None = None
        self._pending: asyncio.TimerHandle | None = None

    async def reload(self) -> bool:
        """Read and apply the file now, changed or not (POST /v1/config/reload). Raises
        ConfigError, applying nothing, when it is invalid. True if anything changed."""
        async with self._lock:
            data = await asyncio.to_thread(self._read)
            self._digest = hashlib.md5(data).hexdigest()
            models = parse_config(data, self.path, self._vocabulary)
            pipelines = parse_pipelines(json.loads(data), str(self.path))  # parse_config checked them
            changed = await self._apply(models, pipelines)
            names = [m.name for m in models] + [p.name for p in pipelines.pipelines]
            log.info("applied %s: %s", self.path, ", ".join(names) or "no models")
            return changed

    async def check(self) -> None:
        """Apply the file if its contents changed since it was last read; log why if invalid."""
        try:
            data = await asyncio.to_thread(self._read)
        except ConfigError as exc:
            if self._digest != "unreadable":
                log.error("%s; the current configuration stays", exc)
                self._digest = "unreadable"
            return
        if hashlib.md5(data).hexdigest() == self._digest:
            return
        try:
            await self.reload()
        except ConfigError as exc:
            log.error("%s; the current configuration stays", exc)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    def watch(self) -> None:
        """Check the file on every file-system event that touches it (its directory is watched,
        so that a file replaced by a rename is seen too)."""
        loop = asyncio.get_running_loop()
        target = os.path.abspath(self.path)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
                if target in paths:
                    loop.call_soon_threadsafe(schedule)

        def schedule() -> None:
            if self._pending is not None:
                self._pending.cancel()
            self._pending = loop.call_later(DEBOUNCE_SECONDS, lambda: loop.create_task(self.check()))

        try:
            self._stop = watch_directory(Handler(), os.path.dirname(target), recursive=False)
        except OSError as exc:
            log.warning("cannot watch %s (%s); relying on rescans", self.path, exc)

    def close(self) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self._pending is not None:
            self._pending.cancel()
