"""The preprocessor contract: plugins that turn what clients send into what a model takes.

Load time (once per model version, in a worker thread): the core offers every input of the
version, as a `TensorSpec`, with the model's configuration options, to each registered
`Preprocessor` in registration order. The first whose `claim` returns an `InputConverter` owns
that input for the life of the version; `claim` returning None leaves it to the next one. An
exception from `claim` fails the version's load, and its message is shown in GetModelStatus, so
raise on options that cannot work (a wrong `color_format`, a `mean` with the wrong length).

Request time: a request tensor whose dtype differs from the model input's and is one the
converter `accepts` (DT_STRING by default) is handed to `InputConverter.convert` after the
request's other checks (input count, names, negative dims). Tensors of the model's own dtype
bypass the converter. `convert` runs in the data plane's thread pool when `blocking` is True
(decoding, tokenizing: anything that takes more than a few microseconds), on the event loop
otherwise. Whatever it returns must have the model input's dtype and a shape the input accepts;
the core checks that and answers a mismatch as the plugin's fault (INTERNAL "Plugin error").

    from dropin.hookspecs import hookimpl

    @hookimpl
    def dropin_register_preprocessors(registry):
        registry.add("image", ImagePreprocessor)

`check_binary_batch` holds OVMS's checks of a DT_STRING tensor that carries one item per batch
entry, so that every preprocessor of that kind answers bad requests alike.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

import numpy as np

from .dtypes import DType
from .errors import DropinError, Status
from .shapes import Dim, TensorSpec


class InputConverter(abc.ABC):
    """Converts one model input's request tensors. Built once per model version by `claim`;
    called from several threads at once, so keep it immutable after construction."""

    #: request dtypes this converter takes in place of the model input's own dtype
    accepts: frozenset[DType] = frozenset({DType.STRING})
    #: True when convert() does real work (decoding): the core then runs it in a worker thread
    blocking: bool = True

    @abc.abstractmethod
    def convert(self, name: str, shape: tuple[int, ...], values: np.ndarray) -> np.ndarray:
        """Turn one request tensor into an array for the model input.

        `name` is the input's name, `shape` the shape the client declared (not yet checked:
        any rank, no negative dims), `values` its data: for STRING a 1-D object array of the
        raw `string_val` entries (`bytes`; their count is not checked against `shape`),
        otherwise an array of `shape` in the request's dtype (possibly a read-only view of the
        request's bytes: never write into it).

        Return an array of the model input's dtype whose shape the input accepts. Raise
        `DropinError` for bad client data, with one of the core's statuses or an `ErrorStatus`
        the plugin declared: its status and message reach the client as they are
        (INVALID_ARGUMENT and friends). Any other exception is logged and answered as INTERNAL
        "Plugin error - preprocessor '<name>' failed on input <input>: <type>: <message>"."""


class Preprocessor(abc.ABC):
    """A preprocessor plugin's entry: registered by class, instantiated once per server (lazily,
    at the first model load); a constructor that raises skips the preprocessor with an error
    in the log."""

    #: the name it was registered under; set by the registry
    name: str = ""

    @abc.abstractmethod
    def claim(self, spec: TensorSpec, options: Mapping[str, Any]) -> InputConverter | None:
        """Called at load time, in a worker thread, for each input of each model version.

        `spec` is the input as the backend loaded it: name, dtype, shape (static, -1 or range
        dims) and layout letters when the model has them ("NHWC", "NCHW", "N..."; None when
        unknown). `options` are the model's configuration entries other than name, base_path,
        model_version_policy and backend, as given in config.json or on the command line: the
        core's (`layout`, `shape`, ...) and those plugins declared (see vocabulary.py; the image
        plugin's `color_format`, `mean`, `scale`, `max_pixels`), as their plugin's check
        returned them; `input_option` reads one that may be given for the whole model or per
        input.

        Return a converter to claim the input, None to leave it. Raise (ValueError with a
        message naming the option) when the options cannot work for this input: the version
        then fails to load with that message."""


def input_option(options: Mapping[str, Any], key: str, input_name: str) -> Any:
    """A model option that OVMS allows for the whole model or per input: `"color_format": "RGB"`
    or `"color_format": {"image": "RGB"}`. None when not given (for this input)."""
    value = options.get(key)
    if isinstance(value, Mapping):
        return value.get(input_name)
    return value


def check_binary_batch(name: str, shape: tuple[int, ...], values: np.ndarray, batch: Dim | None) -> int:
    """OVMS's checks of a DT_STRING request tensor carrying one item (an encoded image, a text)
    per batch entry, in OVMS's order; returns the batch size N.

    - the declared shape must have one dim: INVALID_NO_OF_SHAPE_DIMENSIONS "Expected number of
      binary input shape dimensions: 1; Actual: k; input name: X";
    - the model input must have a batch dim (`batch` is None otherwise): INVALID_BATCH_SIZE
      "Batch not present in input name: X";
    - that dim must equal the number of strings: INVALID_BATCH_SIZE (no details);
    - the model's batch dim must accept N: INVALID_BATCH_SIZE "Expected: 1; Actual: 2; input name: X";
    - N must not be 0: INVALID_BATCH_SIZE (no details);
    - no string may be empty: STRING_VAL_EMPTY "String val is empty".
    """
    if len(shape) != 1:
        raise DropinError(
            Status.INVALID_NO_OF_SHAPE_DIMENSIONS,
            f"Expected number of binary input shape dimensions: 1; Actual: {len(shape)}; input name: {name}",
        )
    if batch is None:
        raise DropinError(Status.INVALID_BATCH_SIZE, f"Batch not present in input name: {name}")
    count = shape[0]
    if count != len(values):
        raise DropinError(Status.INVALID_BATCH_SIZE)
    if not batch.accepts(count):
        raise DropinError(Status.INVALID_BATCH_SIZE, f"Expected: {batch}; Actual: {count}; input name: {name}")
    if count == 0:
        raise DropinError(Status.INVALID_BATCH_SIZE)
    for value in values:
        if not value:
            raise DropinError(Status.STRING_VAL_EMPTY)
    return count
