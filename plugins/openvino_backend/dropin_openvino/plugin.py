"""The dropin plugin module: what entry point `openvino` in group "dropin" points at.

dropin loads it explicitly at start-up (never at import of the core) and calls its hooks; the
hooks import OpenVINO (with its telemetry declined, see `import_openvino`), and the backend they
register is instantiated only when a model is to be loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pluggy

from . import import_openvino, server_options

if TYPE_CHECKING:
    from dropin.backend import Backend
    from dropin.registry import Registry
    from dropin.testing import ConformanceModels
    from dropin.vocabulary import Vocabulary

hookimpl = pluggy.HookimplMarker("dropin")


@hookimpl
def dropin_declare_vocabulary(vocabulary: Vocabulary) -> None:
    vocabulary.server_option(
        "cache_dir", metavar="DIR",
        help="OpenVINO's model cache: compiled models are kept here and later loads skip compiling (default: "
             f"{server_options.DEFAULT_CACHE_DIR} if it exists; per model, allow_cache: false opts out)",
    )
    vocabulary.server_option(
        "cpu_extension", metavar="LIBRARY", help="shared library of custom OpenVINO operations, added to the Core",
    )


@hookimpl
def dropin_configure(options: Mapping[str, Any]) -> None:
    server_options.configure(options)


@hookimpl
def dropin_register_backends(registry: Registry[Backend]) -> None:
    import_openvino()
    from .backend import OpenVINOBackend

    registry.add("openvino", OpenVINOBackend)


@hookimpl
def dropin_register_conformance_models(registry: Registry[ConformanceModels]) -> None:
    # only the test kit calls this hook; the import stays out of the server's start-up
    import_openvino()
    from .testing import OpenVINOConformanceModels

    registry.add("openvino", OpenVINOConformanceModels)
