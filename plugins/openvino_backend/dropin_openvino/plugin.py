"""The dropin plugin module: what entry point `openvino` in group "dropin" points at.

dropin loads it explicitly at start-up (never at import of the core) and calls its hooks; the
hooks import OpenVINO (with its telemetry declined, see `import_openvino`), and the backend they
register is instantiated only when a model is to be loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

from . import import_openvino

if TYPE_CHECKING:
    from dropin.backend import Backend
    from dropin.registry import Registry
    from dropin.testing import ConformanceModels

hookimpl = pluggy.HookimplMarker("dropin")


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
