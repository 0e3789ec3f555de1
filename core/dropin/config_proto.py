"""Model configuration from TF Serving's ModelServerConfig proto (HandleReloadConfigRequest).

A client names each model's name, base path and version policy; every other setting comes from
the model's current configuration, or from the defaults for a model the server does not know.
Base paths must lie inside --reload_config_roots (`config.base_path_inside`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import config as config_mod
from .config import ConfigError, ModelConfig, VersionPolicy


def models_from_proto(
    server_config: Any, current: Mapping[str, ModelConfig], defaults: ModelConfig | None, roots: tuple[Path, ...]
) -> list[ModelConfig]:
    """The models a ModelServerConfig asks to serve; ConfigError, naming what is wrong, if it is
    not a model_config_list or names a base path outside `roots`. `current`: the configuration
    of every model the server has, by name."""
    which = server_config.WhichOneof("config")
    if which != "model_config_list":
        raise ConfigError("only model_config_list is supported (custom_model_config is not)")
    models: list[ModelConfig] = []
    for entry in server_config.model_config_list.config:
        base_path = config_mod.base_path_inside(entry.name, entry.base_path, roots)
        template = current.get(entry.name, defaults)
        model = config_mod.model_config({"name": entry.name, "base_path": base_path})
        policy = policy_from_proto(entry.model_version_policy)
        if template is not None:
            model = dataclasses.replace(template, name=model.name, base_path=model.base_path)
        models.append(dataclasses.replace(model, version_policy=policy))
    return models


def policy_from_proto(policy: Any) -> VersionPolicy:
    """A FileSystemStoragePathSourceConfig.ServableVersionPolicy as a VersionPolicy (unset: latest 1)."""
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        if not policy.specific.versions:
            raise ConfigError("model_version_policy.specific.versions must not be empty")
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)
    return VersionPolicy()
