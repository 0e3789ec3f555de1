"""Loads and retires model versions so that what is served follows the repository and config.

For each model, a sync pass lists the versions on disk, applies the version policy, loads what
is new (in a worker thread, never on the event loop) and only then retires what is no longer
wanted, so a model never goes without a version while a newer one loads. A version that fails
to load stays LOADING with its reason, the previous version keeps serving, and the next pass
retries it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterable

from .backend import Backend
from .config import ModelConfig
from .errors import DropinError
from .models import Model, ModelTable, ModelVersion, Servable, State
from .plugins import Registries
from .preprocess import Preprocessor
from .sources import ModelSource
from .validation import InputPlan

log = logging.getLogger("dropin.manager")


class LoadError(Exception):
    """A version could not be loaded; the message is shown in GetModelStatus."""


class ModelManager:
    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        self.table = ModelTable()
        self._sources: dict[str, ModelSource] = {}
        self._backends: dict[str, Backend] = {}
        self._preprocessors: list[tuple[str, Preprocessor]] = []
        self._instances_lock = threading.Lock()
        self._preprocessors_made = False

    # -- configuration -----------------------------------------------------------------------

    async def apply(self, configs: Iterable[ModelConfig]) -> None:
        """Serve exactly these models: add new ones, reconfigure changed ones, retire removed ones,
        then sync every model with its repository."""
        configs = list(configs)
        wanted = {c.name: c for c in configs}
        changed: list[Model] = []
        for config in configs:
            model = self.table.models.get(config.name)
            if model is None:
                model = Model(config)
                self.table.models[config.name] = model
                log.info("model %s: serving %s (version policy: %s)", config.name, config.base_path, config.version_policy)
                changed.append(model)
            elif model.removed or model.config != config:
                log.info("model %s: configuration changed, reloading its versions", config.name)
                async with model.lock:
                    model.removed = False
                    model.config = config
                    self._sources.pop(config.name, None)
                    for version in model.versions.values():
                        if version.state == State.AVAILABLE:
                            version.reload = True
                changed.append(model)
        removed = [m for name, m in self.table.models.items() if name not in wanted]
        await asyncio.gather(
            *(self.sync(m) for m in changed),
            *(self._retire_all(m) for m in removed),
        )

    async def sync_all(self) -> None:
        """One pass over every configured model (the periodic rescan)."""
        await asyncio.gather(*(self.sync(m) for m in list(self.table.models.values()) if not m.removed))

    # -- one model ---------------------------------------------------------------------------

    async def sync(self, model: Model) -> None:
        """Bring one model's versions in line with its repository and version policy."""
        async with model.lock:
            if model.removed:
                return
            try:
                on_disk = await asyncio.to_thread(self._source(model).versions)
            except (OSError, LookupError) as exc:
                if not model.source_error:
                    log.error("model %s: cannot list versions in %s: %s", model.name, model.config.base_path, exc)
                model.source_error = True
                return
            if model.source_error:
                log.info("model %s: %s is readable again", model.name, model.config.base_path)
                model.source_error = False
            policy = model.config.version_policy
            desired = policy.select(on_disk)
            failed: set[int] = set()
            while True:
                wanted = policy.select(set(on_disk) - failed)
                pending = sorted((n for n in wanted if self._needs_load(model, n)), reverse=True)
                if not pending:
                    break
                for number in pending:
                    if not await self._load(model, number, on_disk[number]):
                        failed.add(number)
            # a failed version the policy still wants stays LOADING (with its reason) to be retried
            retiring = [
                v for v in model.versions.values()
                if v.number not in wanted
                and (v.state == State.AVAILABLE or (v.state == State.LOADING and not v.loading and v.number not in desired))
            ]
            await asyncio.gather(*(self._retire(model, v) for v in retiring))

    def _needs_load(self, model: Model, number: int) -> bool:
        version = model.versions.get(number)
        if version is None or version.state in (State.START, State.END):
            return True
        if version.state == State.LOADING and not version.loading:
            return True  # a failed load: retry
        return version.state == State.AVAILABLE and version.reload

    async def _load(self, model: Model, number: int, path: Path) -> bool:
        version = model.versions.get(number)
        if version is None:
            version = ModelVersion(model.name, number)
            model.versions[number] = version
        version.begin_load()
        version.reload = False
        replacing = version.servable
        if replacing is None:
            version.error = None
            version.set_state(State.LOADING, f"from {path}")
        else:
            log.info("model %s version %d: reloading from %s", model.name, number, path)
        started = time.monotonic()
        try:
            servable = await asyncio.to_thread(self._load_blocking, model.config, number, path)
        except Exception as exc:  # any failure becomes the version's status, never a crash
            reason = str(exc) if isinstance(exc, (LoadError, DropinError)) else f"{type(exc).__name__}: {exc}"
            version.error = reason
            if replacing is None:
                version.set_state(State.LOADING, f"load failed: {reason}")
            else:
                version.error = None
                log.error("model %s version %d: reload failed, the loaded files keep serving: %s", model.name, number, reason)
            version.end_load()
            return replacing is not None
        version.servable = servable
        version.error = None
        version.set_state(State.AVAILABLE, f"backend {servable.backend}", time.monotonic() - started)
        version.end_load()
        model.update_default()
        if replacing is not None:
            asyncio.get_running_loop().create_task(self._close_when_drained(replacing))
        return True

    async def _retire(self, model: Model, version: ModelVersion) -> None:
        servable = version.servable
        version.servable = None
        version.set_state(State.UNLOADING, "no longer wanted" if servable else "version directory is gone")
        model.update_default()
        if servable is not None:
            await self._close_when_drained(servable)
        version.error = None
        version.set_state(State.END)

    async def _retire_all(self, model: Model) -> None:
        async with model.lock:
            model.removed = True
            await asyncio.gather(
                *(self._retire(model, v) for v in model.versions.values() if v.state in (State.AVAILABLE, State.LOADING))
            )

    async def _close_when_drained(self, servable: Servable) -> None:
        await servable.drained()
        try:
            await asyncio.to_thread(servable.model.close)
        except Exception as exc:
            log.error("model %s version %d: backend %s failed to close it: %s", servable.model_name, servable.version, servable.backend, exc)

    async def close(self) -> None:
        """Retire everything (at shutdown)."""
        await asyncio.gather(*(self._retire_all(m) for m in self.table.models.values()))

    # -- blocking work, in worker threads ----------------------------------------------------

    def _source(self, model: Model) -> ModelSource:
        source = self._sources.get(model.name)
        if source is None:
            base_path = model.config.base_path
            for _, cls in self.registries.sources.items():
                if cls.claims(base_path):
                    source = cls(base_path)
                    break
            else:
                raise LookupError(f"no model source serves {base_path!r} (installed: {', '.join(self.registries.sources.names())})")
            self._sources[model.name] = source
        return source

    def _backend(self, name: str) -> Backend:
        with self._instances_lock:
            backend = self._backends.get(name)
            if backend is None:
                try:
                    cls = self.registries.backends.get(name)
                except KeyError as exc:
                    raise LoadError(exc.args[0]) from None
                try:
                    backend = cls()
                except Exception as exc:
                    raise LoadError(
                        f"backend {name!r} (plugin {self.registries.backends.owner(name)}) failed to start: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                self._backends[name] = backend
            return backend

    def _choose_backend(self, config: ModelConfig, path: Path) -> str:
        if config.backend:
            return config.backend
        if not os.path.isdir(path):
            raise LoadError(f"{path} is not a directory")
        for name, cls in self.registries.backends.items():
            try:
                if cls.claims(path):
                    return name
            except Exception as exc:
                log.error("backend %s (plugin %s) failed to inspect %s: %s", name, self.registries.backends.owner(name), path, exc)
        files = sorted(p.name for p in path.iterdir())[:10]
        installed = ", ".join(self.registries.backends.names()) or "none"
        raise LoadError(
            f"no backend can load {path} (files: {', '.join(files) or 'none'}; installed backends: {installed})"
        )

    def _preprocessor_instances(self) -> list[tuple[str, Preprocessor]]:
        with self._instances_lock:
            if not self._preprocessors_made:
                for name, cls in self.registries.preprocessors.items():
                    try:
                        self._preprocessors.append((name, cls()))
                    except Exception as exc:
                        log.error(
                            "preprocessor %s (plugin %s) failed to start and is skipped: %s: %s",
                            name, self.registries.preprocessors.owner(name), type(exc).__name__, exc,
                        )
                self._preprocessors_made = True
            return self._preprocessors

    def _load_blocking(self, config: ModelConfig, number: int, path: Path) -> Servable:
        backend_name = self._choose_backend(config, path)
        backend = self._backend(backend_name)
        try:
            loaded = backend.load(path, config.load)
        except Exception as exc:
            raise LoadError(f"backend {backend_name} could not load {path}: {exc}") from exc
        try:
            plans = tuple(self._plan(config, loaded.inputs[name]) for name in sorted(loaded.inputs))
        except Exception:
            loaded.close()
            raise
        return Servable(config.name, number, loaded, plans, backend_name)

    def _plan(self, config: ModelConfig, spec) -> InputPlan:  # type: ignore[no-untyped-def]
        for name, preprocessor in self._preprocessor_instances():
            try:
                converter = preprocessor.claim(spec, config.options)
            except Exception as exc:
                raise LoadError(
                    f"preprocessor {name} (plugin {self.registries.preprocessors.owner(name)}) failed on input "
                    f"{spec.name}: {type(exc).__name__}: {exc}"
                ) from exc
            if converter is not None:
                return InputPlan(spec, converter, name)
        return InputPlan(spec)
