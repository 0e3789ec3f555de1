"""Every hook a dropin plugin can implement.

Hooks run at start-up only, never per request: a registration hook adds classes to a registry,
and the serving path calls the objects made from them directly. Implement a hook with

    import pluggy
    hookimpl = pluggy.HookimplMarker("dropin")

    @hookimpl
    def dropin_register_backends(registry): ...

and expose the module as an entry point in group "dropin" (see plugins/openvino_backend/).
docs/plugins.md has a section for every hook below; tests/test_core_boundaries.py checks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .preprocess import Preprocessor
    from .registry import Registry
    from .sources import ModelSource
    from .testing.models import ConformanceModels

PROJECT = "dropin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- registration: called once at start-up, in plugin load order --------------------------------


@hookspec
def dropin_register_backends(registry: "Registry[Backend]") -> None:
    """Add backend classes by name: ``registry.add("openvino", OpenVINOBackend)``.

    Called once at start-up, before any model loads. A model configuration may name its backend
    (``"backend": "openvino"``); otherwise each backend is asked whether it ``claims`` the version
    directory, highest ``Backend.priority`` first (ties: registration order, that is built-in,
    then entry points sorted by name), and the first that does loads it. Return nothing.
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


# -- testing: called only by the test kit (dropin.testing), never by the server ---------------


@hookspec
def dropin_register_conformance_models(registry: "Registry[ConformanceModels]") -> None:
    """Add, under a backend's name, the class that writes test models in that backend's format:
    ``registry.add("openvino", OpenVINOConformanceModels)`` (a ``dropin.testing.ConformanceModels``
    subclass).

    Called only by the backend conformance suite (``pytest --dropin-backend=NAME --pyargs
    dropin.testing.conformance``) and by ``dropin plugins``, never while serving, so the class
    may import test-only packages (a model builder) inside its methods. Return nothing.
    """
