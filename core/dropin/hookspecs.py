"""Every hook a dropin plugin can implement.

Hooks run at start-up only, never per request: a registration hook adds classes to a registry,
and the serving path calls the objects made from them directly. Implement a hook with

    import pluggy
    hookimpl = pluggy.HookimplMarker("dropin")

    @hookimpl
    def dropin_register_backends(registry): ...

and expose the module as an entry point in group "dropin" (see plugins/openvino_backend/).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .preprocess import Preprocessor
    from .registry import Registry
    from .sources import ModelSource

PROJECT = "dropin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration: called once at start-up, in plugin load order --------------------------------


@hookspec
def dropin_register_backends(registry: "Registry[Backend]") -> None:
    """Add backend classes by name: ``registry.add("openvino", OpenVINOBackend)``.

    Called once at start-up, before any model loads. A model configuration may name its backend
    (``"backend": "openvino"``); otherwise each backend, in registration order, is asked whether
    it ``claims`` the version directory, and the first that does loads it. Return nothing.
    """


@hookspec
def dropin_register_preprocessors(registry: "Registry[Preprocessor]") -> None:
    """Add preprocessor classes by name: ``registry.add("image", ImagePreprocessor)``.

    Called once at start-up. At each model version load, every input is offered to each
    preprocessor in registration order; the first whose ``claim`` returns a converter owns it.
    Return nothing.
    """


@hookspec
def dropin_register_sources(registry: "Registry[ModelSource]") -> None:
    """Add model repository source classes by name: ``registry.add("local", LocalSource)``.

    Called once at start-up. For every model, the first source in registration order whose
    ``claims(base_path)`` is true lists its versions. Return nothing.
    """
