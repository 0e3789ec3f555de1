"""The core's own plugin: the local-directory source, registered exactly as external ones are."""

from __future__ import annotations

from .hookspecs import hookimpl
from .registry import Registry
from .sources import LocalSource, ModelSource


@hookimpl
def dropin_register_sources(registry: Registry[ModelSource]) -> None:
    registry.add("local", LocalSource)
