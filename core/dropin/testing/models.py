"""The conformance-models contract: how a backend plugin gives the conformance suite test models.

The suite (`dropin.testing.conformance`) is backend-neutral: it never builds a model file itself.
A backend plugin registers, under its backend's name, a `ConformanceModels` subclass that writes
a few small models in the backend's own format:

    @hookimpl
    def dropin_register_conformance_models(registry):
        registry.add("openvino", OpenVINOConformanceModels)

Every model has one input named "x" and one output named "y". A method that cannot build a model
for this backend raises `NotImplementedError`; the tests that need it are then skipped (and say so).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ..dtypes import DType

#: every dtype dropin serves
ALL_DTYPES: frozenset[DType] = frozenset(DType)


class ConformanceModels(abc.ABC):
    """Writes the conformance suite's test models for one backend. Instantiated once per test
    session with no arguments. Each method writes the files of one version directory
    (`version_dir` exists and is empty) so that the backend `claims` and loads it."""

    #: the name it was registered under (the backend's name); set by the registry
    name: str = ""

    #: the element types the backend serves: `identity` is asked for, and tested with, each
    dtypes: ClassVar[frozenset[DType]] = ALL_DTYPES - {DType.STRING}

    #: `plugin_config` the suite loads every model with, e.g. {"INFERENCE_PRECISION_HINT": "f32"}
    #: where the backend would otherwise compute in lower precision (the suite compares exactly)
    plugin_config: ClassVar[Mapping[str, Any]] = {}

    @abc.abstractmethod
    def scale(self, version_dir: Path, factor: float, shape: Sequence[int]) -> None:
        """y = x * factor, FP32. `shape` is the input's (and output's) shape, -1 for a dynamic
        dim: the suite asks for [-1, 2] and [-1, -1]. The metadata must report the -1 dims as -1,
        and the results must be exact (x * factor in float32)."""

    @abc.abstractmethod
    def identity(self, version_dir: Path, dtype: DType, shape: Sequence[int]) -> None:
        """y = x, unchanged, both of `dtype` with `shape` ([-1, 3]). Asked for each of `dtypes`.
        STRING items are bytes; the suite sends UTF-8 text without trailing NUL bytes."""

    @abc.abstractmethod
    def failing(self, version_dir: Path) -> None:
        """An FP32 model with input x of shape [-1] that loads, and whose inference succeeds when
        the number of elements of x is a multiple of 3 and fails (raises from `infer`) otherwise,
        e.g. y = reshape(x, [3, -1]). `y`'s value is not checked."""
