"""Turns a version directory into a `Servable`: the loader.

`Loader.load` runs in a worker thread (the manager awaits it, see manager.py). It chooses the
backend (the model's `backend` key, else the first installed backend that claims the directory,
by priority), has it load a private copy of the files (private_copy.py: never the files a user
may rewrite under a served model), renames its inputs and outputs as the version's
mapping_config.json says (mapping.py), plans every input (the first preprocessor that claims it
converts it) and wraps the result for dynamic batching when the configuration asks for it.
Backends and preprocessors are instantiated once, on first use, and shared by every model.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .backend import Backend, LoadedModel
from .batching import BatchingError, BatchingModel
from .config import ModelConfig
from .mapping import MappingError, apply_mapping, model_load_options, read_mapping
from .models import Servable
from .plugins import Registries
from .preprocess import Preprocessor
from .private_copy import CopyError, private_copy
from .reshape import mark_auto
from .sequences import SequenceTable
from .validation import InputPlan

log = logging.getLogger("dropin.manager")  # one log for a version's whole lifecycle, loads included


class LoadError(Exception):
    """A version could not be loaded; the message is shown in GetModelStatus."""


class Loader:
    """Loads model versions with the installed backends and preprocessors."""

    def __init__(self, registries: Registries) -> None:
        self.registries = registries
        self._backends: dict[str, Backend] = {}
        self._preprocessors: list[tuple[str, Preprocessor]] = []
        self._instances_lock = threading.Lock()
        self._preprocessors_made = False

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

    def choose_backend(self, config: ModelConfig, path: Path) -> str:
        """The backend named by the configuration, else the first installed one that claims `path`."""
        if config.backend:
            return config.backend
        if not os.path.isdir(path):
            raise LoadError(f"{path} is not a directory")
        for name, cls in self.registries.backends.items():
            try:
                if cls.claims(path):
                    return name
            except Exception as exc:
                log.error(
                    "backend %s (plugin %s) failed to inspect %s: %s",
                    name,
                    self.registries.backends.owner(name),
                    path,
                    exc,
                )
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

    def load(self, config: ModelConfig, number: int, path: Path) -> Servable:
        """Version `number` of the model, from `path` (blocking: run it in a worker thread)."""
        backend_name = self.choose_backend(config, path)
        backend = self._backend(backend_name)
        try:
            with private_copy(path) as copy:  # never from files the user may rewrite under us
                try:
                    mapping = read_mapping(copy)
                except MappingError as exc:
                    raise LoadError(f"{path}: {exc}") from None
                try:
                    loaded = backend.load(copy, model_load_options(config.load, mapping))
                except Exception as exc:
                    raise LoadError(
                        f"backend {backend_name} could not load {path}: {str(exc).replace(str(copy), str(path))}"
                    ) from exc
        except CopyError as exc:
            raise LoadError(str(exc)) from None
        try:  # the names clients use (mapping_config.json), before anything is planned on them
            loaded = apply_mapping(loaded, mapping)
        except MappingError as exc:
            loaded.close()
            raise LoadError(f"{path}: {exc}") from None
        try:
            plans = tuple(self._plan(config, loaded.inputs[name]) for name in sorted(loaded.inputs))
            served = self._batched(config, number, loaded, backend_name)
            sequences = self._sequences(config, number, loaded, backend_name)
        except Exception:
            loaded.close()
            raise
        return Servable(config.name, number, served, mark_auto(config.load, plans), backend_name, path, sequences)

    def _sequences(
        self, config: ModelConfig, number: int, loaded: LoadedModel, backend_name: str
    ) -> SequenceTable | None:
        """A stateful model's (empty) table of sequences: a loaded version starts with none."""
        if config.stateful is None:
            return None
        if not loaded.supports_sequences:
            raise LoadError(f"backend {backend_name} does not serve stateful models (model {config.name} is stateful)")
        return SequenceTable(config.name, number, config.stateful, loaded.inputs)

    def _batched(self, config: ModelConfig, number: int, loaded: LoadedModel, backend_name: str) -> LoadedModel:
        """The loaded model, behind dynamic batching if its configuration asks for it."""
        if config.dynamic_batching is None:
            return loaded
        label = f"model {config.name} version {number}"
        try:
            batching = BatchingModel(loaded, config.dynamic_batching, label, backend_name)
        except BatchingError as exc:
            raise LoadError(str(exc)) from None
        log.info("%s: dynamic batching (%s)", label, config.dynamic_batching)
        return batching

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
