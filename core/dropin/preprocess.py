"""The preprocessor contract: plugins that turn what clients send into what a model takes.

At load time the core offers every input of a model version to each registered preprocessor,
in registration order; the first that returns an `InputConverter` claims that input. Per
request, a tensor whose dtype the model input does not take directly, and which the converter
`accepts`, goes through `InputConverter.convert`, in a worker thread when `blocking` is set.

    @hookimpl
    def dropin_register_preprocessors(registry):
        registry.add("image", ImagePreprocessor)
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import numpy as np

from .dtypes import DType
from .shapes import TensorSpec


class InputConverter(abc.ABC):
    """Converts one model input's request tensors. Built once per model version."""

    #: request dtypes this converter takes in place of the model input's own dtype
    accepts: frozenset[DType] = frozenset({DType.STRING})
    #: True when convert() does real work (decoding): the core then runs it in a worker thread
    blocking: bool = True

    @abc.abstractmethod
    def convert(self, name: str, shape: tuple[int, ...], values: np.ndarray) -> np.ndarray:
        """Turn a request tensor into an array that matches the model input. `shape` is the shape
        the client declared; `values` holds its data: for STRING, a 1-D object array of the raw
        `string_val` entries (not yet checked against `shape`), otherwise an array of that shape.
        Raise `DropinError` for bad client data; anything else is reported as a plugin error."""


class Preprocessor(abc.ABC):
    """A preprocessor plugin's entry. One instance per server."""

    name: str = ""

    @abc.abstractmethod
    def claim(self, spec: TensorSpec, options: Mapping[str, Any]) -> InputConverter | None:
        """Called at load time for each model input. Return a converter to claim the input, or
        None. `options` are the model's configuration entries (e.g. color_format, mean, scale)."""
