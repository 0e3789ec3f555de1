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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .backend import Backend
    from .custom_nodes import CustomNode
    from .preprocess import Preprocessor
    from .registry import Registry
    from .sources import ModelSource
    from .testing.models import ConformanceModels
    from .vocabulary import Vocabulary

PROJECT = "dropin"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- vocabulary: called once at start-up, before the command line is parsed ---------------------


@hookspec
def dropin_declare_vocabulary(vocabulary: Vocabulary) -> None:
    """Declare what the plugin adds to dropin's vocabulary (see dropin/vocabulary.py):

    - ``vocabulary.model_key("mean", check=..., flag=True)``: a config.json model key, with its
      values checked by ``check`` when the configuration is read, and optionally the
      single-model flag ``--mean``;
    - ``vocabulary.server_option("greeting", default=...)``: a server-wide flag of ``dropin
      serve``, whose value ``dropin_configure`` receives;
    - ``vocabulary.error(MY_ERROR)``: an ``ErrorStatus`` the plugin raises.

    Called once per process, before the command line and config.json are read (also for
    ``dropin --help`` and ``dropin plugins``): declare, import nothing heavy. Return nothing.
    """


@hookspec
def dropin_configure(options: Mapping[str, Any]) -> None:
    """Receive the values of the server options plugins declared (every one, by name; the
    default where the flag was not given). Called once at server start-up, after the command
    line was read and before any registration hook: the place for work a setting decides
    (an environment variable a runtime reads when it loads, a limit kept for later). Raise
    ValueError, with a message naming the setting, to refuse to start. Return nothing.
    """


# -- registration: called once at start-up, in plugin load order --------------------------------


@hookspec
def dropin_register_backends(registry: Registry[Backend]) -> None:
    """Add backend classes by name: ``registry.add("openvino", OpenVINOBackend)``.

    Called once at start-up, before any model loads. A model configuration may name its backend
    (``"backend": "openvino"``); otherwise each backend is asked whether it ``claims`` the version
    directory, highest ``Backend.priority`` first (ties: registration order, that is built-in,
    then entry points sorted by name), and the first that does loads it. Return nothing.
    """


@hookspec
def dropin_register_preprocessors(registry: Registry[Preprocessor]) -> None:
    """Add preprocessor classes by name: ``registry.add("image", ImagePreprocessor)``.

    Called once at start-up. At each model version load, every input is offered to each
    preprocessor in registration order; the first whose ``claim`` returns a converter owns it.
    Return nothing.
    """


@hookspec
def dropin_register_sources(registry: Registry[ModelSource]) -> None:
    """Add model repository source classes by name: ``registry.add("local", LocalSource)``.

    Called once at start-up. For every model, the first source in registration order whose
    ``claims(base_path)`` is true lists its versions. Return nothing.
    """


@hookspec
def dropin_register_custom_nodes(registry: Registry[CustomNode]) -> None:
    """Add pipeline custom node classes by name: ``registry.add("crop", CropBoxes)``.

    Called once at start-up. A pipeline node of type "custom" names a library of config.json's
    ``custom_node_library_config_list``; that library's ``name`` (or else the file name in its
    ``base_path``, without ``libcustom_node_`` and ``.so``) picks the class registered here, which
    is built with the node's ``params`` when the pipeline is (see dropin/custom_nodes.py).
    Return nothing.
    """


# -- testing: called only by the test kit (dropin.testing), never by the server ---------------


@hookspec
def dropin_register_conformance_models(registry: Registry[ConformanceModels]) -> None:
    """Add, under a backend's name, the class that writes test models in that backend's format:
    ``registry.add("openvino", OpenVINOConformanceModels)`` (a ``dropin.testing.ConformanceModels``
    subclass).

    Called only by the backend conformance suite (``pytest --dropin-backend=NAME --pyargs
    dropin.testing.conformance``) and by ``dropin plugins``, never while serving, so the class
    may import test-only packages (a model builder) inside its methods. Return nothing.
    """
