"""The numpy backend's plugin module: entry point `numpy` in group "dropin", shipped with the core
so that dropin's own tests (and a plugin author's) need no runtime besides numpy.

It claims only version directories holding `numpy_model.json`, never IR or ONNX files, so it
changes nothing for real models. It also registers the custom nodes of the pipeline tests
(numpy_nodes.py). Block it with DROPIN_BLOCK_PLUGINS=numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:
    from ..backend import Backend
    from ..custom_nodes import CustomNode
    from ..registry import Registry
    from .models import ConformanceModels


@hookimpl
def dropin_register_backends(registry: Registry[Backend]) -> None:
    from .numpy_backend import NumpyBackend

    registry.add("numpy", NumpyBackend)


@hookimpl
def dropin_register_custom_nodes(registry: Registry[CustomNode]) -> None:
    from .numpy_nodes import AddSub, SplitRows, SumRows, ThreadName

    registry.add("add_sub", AddSub)
    registry.add("split_rows", SplitRows)
    registry.add("sum_rows", SumRows)
    registry.add("thread_name", ThreadName)


@hookimpl
def dropin_register_conformance_models(registry: Registry[ConformanceModels]) -> None:
    from .numpy_models import NumpyConformanceModels

    registry.add("numpy", NumpyConformanceModels)
