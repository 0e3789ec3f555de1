"""The dropin plugin module: what entry point `onnxruntime` in group "dropin" points at.

dropin loads it explicitly at start-up and calls its hooks; the backend it registers is
instantiated only when a model is to be loaded, and onnxruntime is imported only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from dropin.backend import Backend
    from dropin.registry import Registry
    from dropin.testing import ConformanceModels

hookimpl = pluggy.HookimplMarker("dropin")


@hookimpl
def dropin_register_backends(registry: Registry[Backend]) -> None:
    from .backend import OnnxRuntimeBackend

    registry.add("onnxruntime", OnnxRuntimeBackend)


@hookimpl
def dropin_register_conformance_models(registry: Registry[ConformanceModels]) -> None:
    # only the test kit calls this hook; the onnx package is imported when a model is written
    from .testing import OnnxConformanceModels

    registry.add("onnxruntime", OnnxConformanceModels)
