"""Loads and retires model versions so that what is served follows the repository and config.

For each model, a sync pass lists the versions on disk, applies the version policy, loads what
is new (in a worker thread, never on the event loop) and only then retires what is no longer
wanted, by TF Serving's availability-preserving rule (`held_until_successor`): a model never goes
without a version while a successor settles, loads or fails to load, even when the directory of
the version it replaces is gone. A version that fails to load stays LOADING with its reason, the
previous version keeps serving, and the next pass retries it.

Loading one version (choosing its backend, loading a private copy, planning its inputs, dynamic
batching) is the loader's work: loader.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

from .config import ModelConfig
from .errors import DropinError
from .loader import Loader, LoadError
from .models import Model, ModelTable, ModelVersion, Servable, State
from .plugins import Registries
from .settle import ATOMIC_GRACE_SECONDS, SettleTracker
from .sources import Change, ModelSource

log = logging.getLogger("dropin.manager")

_SERVING_OR_LOADING = (State.AVAILABLE, State.LOADING)  # the states a removed model's versions retire from


def _log_failure(task: asyncio.Task[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("model sync failed", exc_info=task.exception())


def held_until_successor(
    model: Model, unselected: list[ModelVersion], selected: set[int], desired: set[int]
) -> ModelVersion | None:
    """When may AVAILABLE versions the policy no longer selects (`unselected`) retire? The one
    place that decides, by TF Serving's availability-preserving rule: once a version the policy
    selects (`selected`, among those on disk that did not fail to load) is AVAILABLE, or when the
    policy selects nothing on disk at all (`desired`, failed ones included, is empty): no successor
    is left, as when the base path is emptied or gone. Until then the newest of them keeps serving
    (returned here), also when its directory is gone (its weights are loaded) and while its
    successor is being copied, settles, loads or fails to load. A model removed from the
    configuration has no successor either: `_retire_all`."""
    if not unselected or not desired:
        return None
    if any(v.state == State.AVAILABLE for n in selected if (v := model.versions.get(n)) is not None):
        return None
    return max(unselected, key=lambda v: v.number)


class ModelManager:
    """Keeps every model's versions in line with its repository.

    `watch` turns on event-driven updates: the sources report file-system changes, and a model is
    synced as soon as a changed version directory has settled (see settle.py). `sync_all` is the
    periodic rescan, the safety net for file systems without events."""

    def __init__(self, registries: Registries, settle_seconds: float = 0.5) -> None:
        self.registries = registries
        self.table = ModelTable()
        self.settle_seconds = settle_seconds
        self.watching = False
        self._sources: dict[str, ModelSource] = {}
        self._trackers: dict[str, SettleTracker] = {}
        self._unwatch: dict[str, Callable[[], None]] = {}
        self._wakeups: dict[str, asyncio.TimerHandle] = {}
        self._synced: set[str] = set()  # models past their first sync (start-up loads at once)
        self.loader = Loader(registries)

    # -- configuration -----------------------------------------------------------------------

    async def apply(self, configs: Iterable[ModelConfig]) -> bool:
        """Serve exactly these models: add new ones, reconfigure changed ones, retire removed ones,
        then sync every changed model with its repository. True if anything changed."""
        configs = list(configs)
        wanted = {c.name: c for c in configs}
        changed: list[Model] = []
        for config in configs:
            model = self.table.models.get(config.name)
            if model is None:
                model = Model(config)
                self.table.models[config.name] = model
                policy = config.version_policy
                log.info("model %s: serving %s (version policy: %s)", config.name, config.base_path, policy)
                changed.append(model)
            elif model.removed or model.config != config:
                async with model.lock:
                    old = model.config
                    model.removed = False
                    model.config = config
                    if old.base_path != config.base_path:
                        self._drop_source(config.name)
                    reload = (old.load, old.backend, old.options, old.dynamic_batching) != (
                        config.load, config.backend, config.options, config.dynamic_batching
                    )
                    log.info(
                        "model %s: configuration changed%s",
                        config.name,
                        ", reloading its versions" if reload else f" (version policy: {config.version_policy})",
                    )
                    if reload:
                        for version in model.versions.values():
                            if version.state == State.AVAILABLE:
                                version.reload = True
                changed.append(model)
        removed = [m for name, m in self.table.models.items() if name not in wanted and not m.removed]
        results = await asyncio.gather(
            *(self.sync(m) for m in changed),
            *(self._retire_all(m) for m in removed),
        )
        return bool(changed or removed) or any(results)

    async def sync_all(self) -> bool:
        """One pass over every configured model (the periodic rescan). True if anything changed."""
        results = await asyncio.gather(*(self.sync(m) for m in list(self.table.models.values()) if not m.removed))
        return any(results)

    # -- one model ---------------------------------------------------------------------------

    async def sync(self, model: Model) -> bool:
        """Bring one model's versions in line with its repository and version policy: load what
        is new, changed or failed-and-changed once it has settled, then retire what is no longer
        wanted. True if a version was loaded, reloaded or retired."""
        async with model.lock:
            if model.removed:
                return False
            try:
                source = self._source(model)
                if self.watching and model.name not in self._unwatch:
                    self._start_watch(model, source)
                on_disk, fingerprints = await asyncio.to_thread(self._scan, source)
            except FileNotFoundError:
                # gone: no version is left to succeed what is loaded, which retires
                if not model.source_missing:
                    log.warning("model %s: %s does not exist: no version to serve", model.name, model.config.base_path)
                model.source_missing, model.source_error = True, None
                on_disk, fingerprints = {}, {}
            except (OSError, LookupError) as exc:
                model.unreadable(f"cannot list versions in {model.config.base_path}: {exc}")
                return False  # unreadable for now: what is loaded keeps serving
            else:
                if model.source_error or model.source_missing:
                    log.info("model %s: %s is readable again", model.name, model.config.base_path)
                model.source_missing, model.source_error = False, None
            usable = self._settled(model, on_disk, fingerprints)
            policy = model.config.version_policy
            desired = policy.select(on_disk)  # what the policy wants on disk, loadable or not
            failed = {n for n in usable if self._failed(model, n) and model.versions[n].fingerprint == fingerprints[n]}
            changed = False
            while True:
                # the policy chooses among the versions that did not fail, also those still settling
                selected = policy.select(on_disk.keys() - failed)
                pending = sorted((n for n in selected & usable if self._needs_load(model, n)), reverse=True)
                if not pending:
                    break
                for number in pending:
                    changed = True
                    if not await self._load(model, number, on_disk[number], fingerprints[number]):
                        failed.add(number)
            unselected = [v for v in model.versions.values() if v.state == State.AVAILABLE and v.number not in selected]
            tracker = self._tracker(model)
            if desired:
                tracker.not_empty()
            elif unselected and (again := tracker.empty(asyncio.get_running_loop().time())) is not None:
                self._wake(model, again)  # `rm -r old && cp -r new`: the new one may be on its way
                return changed
            held = held_until_successor(model, unselected, selected, desired)
            for version in model.versions.values():
                if version is held:
                    gone = "its directory is gone" if version.number not in on_disk else "no longer selected"
                    version.hold(f"{gone}: serving until version {max(selected or desired)} is AVAILABLE")
                elif version.state == State.AVAILABLE:
                    version.hold(None)
            # a failed version the policy still wants stays LOADING (with its reason) to be retried
            retiring = [v for v in unselected if v is not held] + [
                v for v in model.versions.values() if self._failed(model, v.number) and v.number not in desired
            ]
            await asyncio.gather(*(self._retire(model, v) for v in retiring))
            return changed or bool(retiring)

    def _scan(self, source: ModelSource) -> tuple[dict[int, Path], dict[int, Hashable | None]]:
        versions = source.versions()
        return versions, {n: source.fingerprint(path) for n, path in versions.items()}

    def _settled(self, model: Model, on_disk: dict[int, Path], fingerprints: dict[int, Hashable | None]) -> set[int]:
        """The versions on disk that can be used now: loaded ones whose files did not change, and
        new, changed or previously failed ones whose files have stopped changing."""
        tracker = self._tracker(model)
        tracker.keep_only(fingerprints)
        first_pass = model.name not in self._synced
        self._synced.add(model.name)
        now = asyncio.get_running_loop().time()
        usable: set[int] = set()
        wake: float | None = None
        for number, fingerprint in fingerprints.items():
            version = model.versions.get(number)
            known = version is not None and version.state != State.START and version.fingerprint == fingerprint
            if version is not None and version.loading:
                known = True
            if known or first_pass or fingerprint is None:
                usable.add(number)
                tracker.forget(number)
                continue
            again = tracker.ready(number, fingerprint, now)
            if again is None:
                usable.add(number)
                if version is not None and version.state == State.AVAILABLE:
                    version.reload = True  # its files changed and have settled
            else:
                if version is not None and version.state == State.AVAILABLE:
                    usable.add(number)  # keeps serving the files it loaded until the change settles
                wake = again if wake is None else min(wake, again)
        if wake is not None:
            self._wake(model, wake)
        return usable

    def _failed(self, model: Model, number: int) -> bool:
        version = model.versions.get(number)
        if version is None or version.loading:
            return False
        return version.state == State.LOADING and version.error is not None

    def _needs_load(self, model: Model, number: int) -> bool:
        version = model.versions.get(number)
        if version is None or version.state in (State.START, State.END):
            return True
        if version.state == State.LOADING and not version.loading:
            return True  # a failed load whose files changed: retry
        return version.state == State.AVAILABLE and version.reload

    async def _load(self, model: Model, number: int, path: Path, fingerprint: Hashable | None = None) -> bool:
        version = model.versions.get(number)
        if version is None:
            version = ModelVersion(model.name, number)
            model.versions[number] = version
        version.begin_load()
        version.reload = False
        version.fingerprint = fingerprint
        replacing = version.servable
        if replacing is None:
            version.error = None
            version.set_state(State.LOADING, f"from {path}")
        else:
            log.info("model %s version %d: reloading from %s", model.name, number, path)
        started = time.monotonic()
        try:
            servable = await asyncio.to_thread(self.loader.load, model.config, number, path)
        except Exception as exc:  # any failure becomes the version's status, never a crash
            reason = str(exc) if isinstance(exc, (LoadError, DropinError)) else f"{type(exc).__name__}: {exc}"
            version.error = reason
            if replacing is None:
                version.set_state(State.LOADING, f"load failed: {reason}")
            else:
                version.error = f"reload failed, the previously loaded files keep serving: {reason}"
                log.error("model %s version %d: %s", model.name, number, version.error)
            version.end_load()
            return replacing is not None
        version.servable = servable
        version.error = None
        version.set_state(State.AVAILABLE, f"backend {servable.backend}", time.monotonic() - started)
        version.end_load()
        model.update_default()
        if replacing is not None:
            log.info("model %s version %d: reloaded, the previous files retire after their requests", model.name,
                     number)
            asyncio.get_running_loop().create_task(self._close_when_drained(replacing))
        return True

    async def _retire(self, model: Model, version: ModelVersion) -> None:
        servable = version.servable
        version.servable = None
        version.note = None
        version.set_state(State.UNLOADING, "no longer wanted" if servable else "not wanted or gone after a failed load")
        model.update_default()
        started = time.monotonic()
        if servable is not None:
            await self._close_when_drained(servable)
        version.error = None
        version.set_state(State.END, "unloaded", time.monotonic() - started)

    async def _retire_all(self, model: Model) -> bool:
        async with model.lock:
            model.removed = True
            log.info("model %s: removed from the configuration, retiring its versions", model.name)
            self._drop_source(model.name)
            await asyncio.gather(
                *(self._retire(model, v) for v in model.versions.values() if v.state in _SERVING_OR_LOADING)
            )
            return True

    async def _close_when_drained(self, servable: Servable) -> None:
        await servable.drained()
        try:
            await asyncio.to_thread(servable.model.close)
        except Exception as exc:
            log.error("model %s version %d: backend %s failed to close it: %s",
                      servable.model_name, servable.version, servable.backend, exc)

    async def close(self) -> None:
        """Stop watching and retire everything (at shutdown)."""
        self.watching = False
        for name in list(self._unwatch):
            self._drop_source(name)
        await asyncio.gather(*(self._retire_all(m) for m in self.table.models.values() if not m.removed))

    # -- watching ----------------------------------------------------------------------------

    def _tracker(self, model: Model) -> SettleTracker:
        tracker = self._trackers.get(model.name)
        if tracker is None:
            tracker = self._trackers[model.name] = SettleTracker(self.settle_seconds)
        return tracker

    def _start_watch(self, model: Model, source: ModelSource) -> None:
        loop = asyncio.get_running_loop()
        name = model.name

        def notify(change: Change) -> None:  # called on the watcher's thread
            loop.call_soon_threadsafe(self._on_change, name, change)

        try:
            stop = source.watch(notify)
        except Exception as exc:
            log.error("model %s: watching %s failed (%s); relying on rescans", name, model.config.base_path, exc)
            stop = None
        if stop is not None:
            self._unwatch[name] = stop
            log.debug("model %s: watching %s", name, model.config.base_path)

    def _on_change(self, name: str, change: Change) -> None:
        model = self.table.models.get(name)
        if model is None or model.removed or not self.watching:
            return
        now = asyncio.get_running_loop().time()
        if change.version is None:
            # the base directory itself came or went: the next pass watches whatever is there now
            self._stop_watch(name)
            when = now + ATOMIC_GRACE_SECONDS
        else:
            when = self._tracker(model).event(change.version, change.whole, now)
        self._wake(model, when)

    def _wake(self, model: Model, when: float) -> None:
        """Sync `model` at loop time `when` (or earlier, if a sync is already due sooner)."""
        loop = asyncio.get_running_loop()
        pending = self._wakeups.get(model.name)
        if pending is not None:
            if pending.when() <= when and not pending.cancelled():
                return
            pending.cancel()
        self._wakeups[model.name] = loop.call_at(when, self._woken, model)

    def _woken(self, model: Model) -> None:
        self._wakeups.pop(model.name, None)
        task = asyncio.get_running_loop().create_task(self.sync(model))
        task.add_done_callback(_log_failure)

    def _stop_watch(self, name: str) -> None:
        stop = self._unwatch.pop(name, None)
        if stop is not None:
            try:
                stop()
            except Exception as exc:
                log.debug("model %s: stopping the watch failed: %s", name, exc)

    def _drop_source(self, name: str) -> None:
        self._sources.pop(name, None)
        self._trackers.pop(name, None)
        self._synced.discard(name)
        self._stop_watch(name)
        wakeup = self._wakeups.pop(name, None)
        if wakeup is not None:
            wakeup.cancel()

    # -- the model's source ------------------------------------------------------------------

    def _source(self, model: Model) -> ModelSource:
        source = self._sources.get(model.name)
        if source is None:
            base_path = model.config.base_path
            for _, cls in self.registries.sources.items():
                if cls.claims(base_path):
                    source = cls(base_path)
                    break
            else:
                raise LookupError(
                    f"no model source serves {base_path!r} (installed: {', '.join(self.registries.sources.names())})"
                )
            self._sources[model.name] = source
        return source
