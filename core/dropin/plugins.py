"""The one facade over pluggy: finds plugins, calls their hooks, lists what each declared and registered.

Plugins are the entry points of group "dropin". They are loaded explicitly by `PluginHost.load`
(never as an import side effect). Environment variables:

- DROPIN_BLOCK_PLUGINS: comma-separated plugin names not to load (e.g. "openvino").
- DROPIN_ALLOW_PLUGINS: when set, only these plugins load (the core's built-in one always does).
- DROPIN_TRACE_PLUGINS: when set, every hook call is logged at DEBUG level.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import pluggy

from . import builtin, hookspecs
from .backend import Backend
from .config import CORE_MODEL_KEYS, ConfigError
from .custom_nodes import CustomNode
from .preprocess import Preprocessor
from .registry import Registry
from .sources import ModelSource
from .vocabulary import Vocabulary

if TYPE_CHECKING:
    from .testing.models import ConformanceModels

log = logging.getLogger("dropin.plugins")

BUILTIN = "builtin"


@dataclass
class PluginInfo:
    """What `dropin plugins` shows about one plugin."""

    name: str
    distribution: str
    version: str
    module: str = ""  # what the entry point names, e.g. "dropin_openvino.plugin"
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)  # registry or vocabulary kind -> names
    error: str | None = None


@dataclass
class Registries:
    """Everything plugins registered."""

    backends: Registry[Backend]
    preprocessors: Registry[Preprocessor]
    sources: Registry[ModelSource]
    custom_nodes: Registry[CustomNode]


class PluginHost:
    """Owns the PluginManager; the rest of the core talks to plugins only through this class."""

    def __init__(
        self, blocked: set[str] | None = None, trace: bool | None = None, allowed: set[str] | None = None
    ) -> None:
        if blocked is None:
            blocked = _names(os.environ.get("DROPIN_BLOCK_PLUGINS", ""))
        if allowed is None and os.environ.get("DROPIN_ALLOW_PLUGINS") is not None:
            allowed = _names(os.environ["DROPIN_ALLOW_PLUGINS"])
        self.allowed = allowed
        if trace is None:
            trace = bool(os.environ.get("DROPIN_TRACE_PLUGINS"))
        self.blocked = blocked
        self.trace = trace
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._info: dict[str, PluginInfo] = {}
        self._vocabulary: Vocabulary | None = None
        self._register(builtin, BUILTIN, PluginInfo(BUILTIN, "dropin", _version("dropin"), builtin.__name__))

    def load(self) -> None:
        """Load every installed entry point of group "dropin", except blocked ones. A plugin that
        fails to import is reported by name and skipped."""
        for ep in sorted(importlib.metadata.entry_points(group=hookspecs.PROJECT), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "?"
            info = PluginInfo(ep.name, dist, version, ep.value)
            if ep.name in self.blocked or (self.allowed is not None and ep.name not in self.allowed):
                why = "DROPIN_BLOCK_PLUGINS" if ep.name in self.blocked else "DROPIN_ALLOW_PLUGINS"
                log.info("plugin %s is not loaded (%s)", ep.name, why)
                info.error = f"blocked by {why}"
                self._info[ep.name] = info
                continue
            if self._pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                self._register(module, ep.name, info)
            except Exception as exc:  # a broken plugin must not take the server down
                info.error = f"failed to load: {type(exc).__name__}: {exc}"
                self._info[ep.name] = info
                log.error("plugin %s (%s %s) %s; skipped", ep.name, dist, version, info.error)

    def register(self, plugin: object, name: str) -> None:
        """Register an in-process plugin object (a module or instance), as tests and embedders do."""
        self._register(plugin, name, PluginInfo(name, "(in process)", ""))

    def _register(self, plugin: object, name: str, info: PluginInfo) -> None:
        self._pm.register(plugin, name=name)
        try:
            self._pm.check_pending()  # an unknown dropin_* hook (a typo) refuses the whole plugin
        except Exception:
            self._pm.unregister(plugin)
            raise
        info.hooks = sorted(caller.name for caller in self._pm.get_hookcallers(plugin) or [])
        self._info[name] = info

    def vocabulary(self) -> Vocabulary:
        """Call `dropin_declare_vocabulary` once (later calls return the same declarations): the
        flags, model keys and errors every plugin declared."""
        if self._vocabulary is None:
            vocabulary = Vocabulary(CORE_MODEL_KEYS)
            for impl in self._impls("dropin_declare_vocabulary"):
                vocabulary.current_plugin = impl.plugin_name
                self._call(impl, "dropin_declare_vocabulary", vocabulary=vocabulary)
            vocabulary.current_plugin = "?"
            for name, info in self._info.items():
                info.registered.update(vocabulary.declared_by(name))
            self._vocabulary = vocabulary
        return self._vocabulary

    def configure(self, given: Mapping[str, Any]) -> None:
        """Call `dropin_configure` with every server option plugins declared: `given` values,
        else the defaults. ConfigError, naming the plugin, when one refuses its settings."""
        options = MappingProxyType(self.vocabulary().server_values(given))
        for impl in self._impls("dropin_configure"):
            try:
                self._call(impl, "dropin_configure", raising=True, options=options)
            except Exception as exc:
                raise ConfigError(f"plugin {impl.plugin_name}: {exc}") from None

    def registries(self) -> Registries:
        """Call the registration hooks, one plugin at a time so each entry knows its plugin."""
        result = Registries(
            backends=Registry("backend", Backend),
            preprocessors=Registry("preprocessor", Preprocessor),
            sources=Registry("source", ModelSource),
            custom_nodes=Registry("custom node", CustomNode),
        )
        self._collect("dropin_register_backends", result.backends)
        result.backends.sort(lambda cls: -backend_priority(cls))
        log.info(
            "backends, in claim order: %s",
            ", ".join(f"{n} (priority {backend_priority(c)})" for n, c in result.backends.items()) or "none",
        )
        self._collect("dropin_register_preprocessors", result.preprocessors)
        self._collect("dropin_register_sources", result.sources)
        self._collect("dropin_register_custom_nodes", result.custom_nodes)
        return result

    def conformance_models(self) -> Registry[ConformanceModels]:
        """Call `dropin_register_conformance_models`: the test-model writers by backend name.
        Only the test kit and `dropin plugins` ask for them, never the server."""
        from .testing.models import ConformanceModels

        registry: Registry[ConformanceModels] = Registry("conformance model", ConformanceModels)
        self._collect("dropin_register_conformance_models", registry)
        return registry

    def _collect(self, hook_name: str, registry: Registry[Any]) -> None:
        for impl in self._impls(hook_name):
            registry.current_plugin = impl.plugin_name
            before = set(registry.names())
            if not self._call(impl, hook_name, registry=registry):
                continue
            added = [n for n in registry.names() if n not in before]
            for name in added:
                registry_entry = registry.get(name)
                if not getattr(registry_entry, "name", None):
                    registry_entry.name = name
            if added:
                self._info[impl.plugin_name].registered.setdefault(registry.kind, []).extend(added)
            if self.trace:
                log.debug("plugin %s: %s registered %s", impl.plugin_name, hook_name, ", ".join(added) or "nothing")
        registry.current_plugin = "?"

    def _impls(self, hook_name: str) -> Iterator[pluggy.HookImpl]:
        """The implementations of a hook in registration order: built-in, then entry points by name."""
        return iter(getattr(self._pm.hook, hook_name).get_hookimpls())

    def _call(self, impl: pluggy.HookImpl, hook_name: str, raising: bool = False, **kwargs: Any) -> bool:
        """Call one plugin's implementation, as pluggy would (with the arguments it names), so
        that whatever it declares or registers is known to be that plugin's. An exception is
        logged and recorded as the plugin's error (False), or raised with `raising`."""
        if self.trace:
            log.debug("plugin %s: calling %s", impl.plugin_name, hook_name)
        try:
            impl.function(*(kwargs[name] for name in impl.argnames))
        except Exception as exc:
            if raising:
                raise
            log.error("plugin %s failed in %s: %s: %s; skipped", impl.plugin_name, hook_name, type(exc).__name__, exc)
            self._info[impl.plugin_name].error = f"{hook_name} failed: {type(exc).__name__}: {exc}"
            return False
        return True

    def plugins(self) -> list[PluginInfo]:
        """Every plugin found, loaded or not, in load order."""
        return list(self._info.values())


def backend_priority(cls: type) -> int:
    """A backend class's claim priority (`Backend.priority`); 0 when it is not an integer."""
    value = getattr(cls, "priority", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _names(text: str) -> set[str]:
    return {n.strip() for n in text.split(",") if n.strip()}


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"
