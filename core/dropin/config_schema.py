"""The shape of OVMS's config.json beyond the models themselves, checked as OVMS's schema does
(every object refuses keys it does not define), and the keys dropin accepts without giving them
a meaning, each logged once with the model or list it concerns."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from .config import OVMS_MODEL_KEYS, ConfigError

log = logging.getLogger("dropin.config")

TOP_KEYS = frozenset({
    "model_config_list", "pipeline_config_list", "mediapipe_config_list", "custom_loader_config_list",
    "custom_node_library_config_list", "monitoring",
})
# pipeline_config_list and custom_node_library_config_list: pipelines/config.py.
# Each list OVMS accepts that dropin does not serve: its items' keys (required, allowed), and what
# dropin tells the operator.
_LISTS: dict[str, tuple[frozenset[str], frozenset[str], str]] = {
    "mediapipe_config_list": (
        frozenset({"name"}),
        frozenset({"name", "base_path", "graph_path", "subconfig"}),
        "MediaPipe graphs are not served yet",
    ),
}
_LOADER_KEYS = frozenset({"loader_name", "library_path", "loader_config_file"})
# What a model key without effect means in dropin (a plugin that declares the key gives it one).
_WHY = {
    "stateful": "stateful models are not served yet",
    "low_latency_transformation": "stateful models are not served yet",
    "idle_sequence_cleanup": "stateful models are not served yet",
    "max_sequence_number": "stateful models are not served yet",
    "custom_loader_options": "custom loaders are not supported",
    "cache_dir": "the model cache directory is the server's --cache_dir",
}

_reported: set[tuple[str, ...]] = set()


def _once(*key: str) -> bool:
    if key in _reported:
        return False
    _reported.add(key)
    return True


def _only(body: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(extra)}")


def _objects(document: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{where}: {key} must be a list of objects")
    return items


def check_document(document: Mapping[str, Any], where: str) -> None:
    """Refuse a key OVMS does not know, at any level outside the models; log once each list
    that dropin accepts but does not serve, naming what it ignores."""
    _only(document, TOP_KEYS, where)
    for key, (required, allowed, why) in _LISTS.items():
        items = _objects(document, key, where)
        for item in items:
            label = f"{where}: {key} item {item.get('name', '?')!r}"
            _only(item, allowed, label)
            missing = sorted(required - set(item))
            if missing:
                raise ConfigError(f"{label} needs {', '.join(missing)}")
        names = ", ".join(str(item["name"]) for item in items)
        if names and _once(key, names):
            log.warning("%s: %s: %s ignored", key, why, names)
    loaders = _objects(document, "custom_loader_config_list", where)
    for item in loaders:
        config = item.get("config")
        if set(item) != {"config"} or not isinstance(config, dict):
            raise ConfigError(f'{where}: every custom_loader_config_list item must be {{"config": {{...}}}}')
        _only(config, _LOADER_KEYS, f"{where}: custom_loader_config_list item {config.get('loader_name', '?')!r}")
    loader_names = ", ".join(str(item["config"].get("loader_name", "?")) for item in loaders)
    if loader_names and _once("custom_loader_config_list", loader_names):
        log.warning("custom_loader_config_list: custom loaders are not supported: %s ignored", loader_names)
    monitoring = document.get("monitoring", {})
    if not isinstance(monitoring, dict):
        raise ConfigError(f"{where}: monitoring must be an object")
    _only(monitoring, {"metrics"}, f"{where}: monitoring")


def report_unsupported(name: str, entry: Mapping[str, Any], declared: Iterable[str]) -> None:
    """Log once per model and key each OVMS model key of `entry` that has no effect here: no
    plugin declared it and the core does not read it."""
    for key in sorted(set(entry) & OVMS_MODEL_KEYS - set(declared) - {"allow_cache"}):
        if _once("model", name, key):
            why = _WHY.get(key, "no installed plugin gives it a meaning")
            log.warning("model %s: config key %s is not supported (%s) and is ignored", name, key, why)
