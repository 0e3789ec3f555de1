"""The :predict answer as TF Serving writes it (docs/wire-contract.md#rest): `{"predictions": ...}`
for a request in the row format, `{"outputs": ...}` for one in the column format; strings as text,
or `{"b64": ...}` for an output named `*_bytes` or bytes that are not UTF-8.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import DropinError, Status
from .rest_json import COLUMN, ROW

_KEY = {ROW: "predictions", COLUMN: "outputs"}


def _jsonable(name: str, array: np.ndarray) -> Any:
    """An output as `dumps` takes it: a C-contiguous numeric array (fp16 included: it is written
    as JSON numbers, where OVMS refused fp16 outputs), or nested lists for strings. STRING
    outputs whose name ends in `_bytes`, or that are not UTF-8, become {"b64": ...}."""
    if array.dtype.kind in "OSU":
        as_b64 = name.endswith("_bytes")
        flat = [_string_value(v, as_b64) for v in array.reshape(-1)]
        out = np.empty(len(flat), dtype=object)
        out[:] = flat
        return out.reshape(array.shape).tolist()
    if array.ndim == 0:
        return array.item()
    return np.ascontiguousarray(array)


def _string_value(value: Any, as_b64: bool) -> Any:
    raw = value if isinstance(value, bytes) else str(value).encode()
    if not as_b64:
        try:
            return raw.decode()
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(raw).decode()}


def predict_response(order: str, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """{"predictions": ...} for a row request, {"outputs": ...} for a column request (TF
    Serving's MakeJsonFromTensors)."""
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        if array.ndim and array.dtype.kind in "fiub" and array.flags.c_contiguous:  # the common answer, at once
            return {_KEY[order]: array}
    if order == COLUMN:
        if len(outputs) == 1:
            ((name, array),) = outputs.items()
            return {"outputs": _jsonable(name, array)}
        return {"outputs": {name: _jsonable(name, array) for name, array in outputs.items()}}
    batch = None
    for name, array in outputs.items():
        if array.ndim == 0:
            raise DropinError(
                Status.REST_PROTO_TO_STRING_ERROR, f"output {name} is a scalar: it has no batch to split into rows"
            )
        if batch is None:
            batch = array.shape[0]
        elif array.shape[0] != batch:
            raise DropinError(
                Status.REST_PROTO_TO_STRING_ERROR,
                f"outputs have different batch sizes ({', '.join(f'{n}: {a.shape[0]}' for n, a in outputs.items())}); "
                "use the column format (inputs) instead",
            )
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return {"predictions": _jsonable(name, array)}
    columns = {name: _jsonable(name, array) for name, array in outputs.items()}
    return {"predictions": [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]}
