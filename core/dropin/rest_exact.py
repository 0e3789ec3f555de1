"""The common :predict body read straight into arrays (docs/wire-contract.md#rest): when a body's
inputs are exactly what the model version's `ExactPlan` says, numbers only in its shapes, they are
read as their types without the general path's `tensors` and validation (rest_json.py), which
take every other body and say what is wrong with it. tests/test_rest_exact.py holds the two
paths to the same arrays or the same error.

Each step here is paid by every request, several times its price in a loop once served (an
inference evicts the interpreter's working set; docs/performance.md): the most common body, a
one-input model's `{"instances": [...]}`, is read in fewer of them (`exact_unnamed`).
"""

from __future__ import annotations

import re
import warnings
from math import isfinite
from typing import Any

import numpy as np

from .casting import cast
from .rest_json import COLUMN, ROW, PredictRequest, loads, may_hold_literals
from .validation import ExactInput, ExactPlan

# `_exact_array` turns a value beyond float32's range into inf, which it checks for; numpy's
# warning about it would only be noise in the log (`cast` then refuses the value)
warnings.filterwarnings("ignore", "overflow encountered in cast", RuntimeWarning, re.escape(__name__) + r"\Z")

#: input types read from JSON numbers as they are, without a cast (`_exact_array`)
_READ_AS_IS = (np.dtype(np.float32), np.dtype(np.float64))
_total = np.add.reduce  # finite unless a value is not (or the sum overflows: `cast` reads them again)
#: arrays of up to this many values are summed in Python, whose sum costs less than numpy's
#: reduction below it (`_finite`)
_SUMMED_IN_PYTHON = 128
#: the formats of a body whose only key holds its one input without a name (`exact_unnamed`)
_UNNAMED = {"instances": ROW, "inputs": COLUMN}


def parse_predict(
    body: bytes, plan: ExactPlan | None
) -> tuple[str, dict[str, np.ndarray], None] | tuple[str, None, PredictRequest]:
    """A :predict body: its format (row or column), then its inputs as arrays when they fit
    `plan` exactly (`exact_unnamed`, `exact_arrays`) or else the parsed request, for `tensors`."""
    doc = loads(body)
    literals, quotes = may_hold_literals(body), body.count(b'"')
    if plan is not None:
        unnamed = exact_unnamed(doc, literals, quotes, plan)
        if unnamed is not None:
            return unnamed[0], unnamed[1], None
    request = PredictRequest(doc, literals, quotes)
    arrays = exact_arrays(request, plan) if plan is not None else None
    return (request.order, arrays, None) if arrays is not None else (request.order, None, request)


def exact_unnamed(
    doc: Any, literals: bool, quotes: int, plan: ExactPlan
) -> tuple[str, dict[str, np.ndarray]] | None:
    """`exact_arrays` of the most common body in fewer steps, which a request served pays for
    (docs/performance.md): a model of one input, `{"instances": [...]}` or `{"inputs": [...]}`
    alone, numbers only: `quotes` (the body's `"`) only the key's two, and `literals`
    (`may_hold_literals`) false. Its format and arrays, or None for any other body, which
    `PredictRequest` reads."""
    if literals or quotes != 2 or type(doc) is not dict or len(doc) != 1 or len(plan.inputs) != 1:
        return None
    ((key, node),) = doc.items()
    order = _UNNAMED.get(key)
    if order is None:
        return None
    expected = plan.inputs[0]
    array = _exact_array(node, expected, True)
    return None if array is None else (order, {expected.name: array})


def exact_arrays(request: PredictRequest, plan: ExactPlan) -> dict[str, np.ndarray] | None:
    """A parsed request's inputs as arrays when they are exactly what `plan` says (numbers only,
    in its shapes), each read as or cast to its type (`cast` refuses a value the type would
    change); else None, and `tensors` and the data plane's validation decide, with their
    messages. Numbers written as floats for an integer input take `tensors`, which reads them
    exactly."""
    if request.may_hold_literals:
        return None
    node = request.node
    numbers_only = not request.may_hold_strings
    if isinstance(node, list):  # no names: the plan's one input
        if len(plan.inputs) != 1:
            return None
        expected = plan.inputs[0]
        array = _exact_array(node, expected, numbers_only)
        if array is None:
            return None
        arrays = {expected.name: array}
    elif isinstance(node, dict) and request.order == COLUMN and node.keys() == plan.by_name.keys():
        by_name = plan.by_name
        arrays = {}
        # in the body's order, as `tensors` reads them: the first input that is wrong is the one named
        for name, value in node.items():
            array = _exact_array(value, by_name[name], numbers_only)
            if array is None:
                return None
            arrays[name] = array
    else:
        return None
    request.node = None
    return arrays


def _exact_array(value: Any, expected: ExactInput, numbers_only: bool) -> np.ndarray | None:
    """One input of `exact_arrays`: its array, or None when it is not exactly `expected`."""
    shape = expected.shape
    if not isinstance(value, list) or not shape or len(value) != shape[0]:  # before reading it
        return None
    target = expected.dtype.numpy
    if numbers_only and target in _READ_AS_IS:
        # numbers only (no null, boolean or string): read as the type at once, in one numpy call
        # where a cast takes three (docs/performance.md); a value beyond float32's range becomes
        # inf, and is refused below
        try:
            array = np.asarray(value, target)
        except (ValueError, TypeError, OverflowError, RuntimeWarning):  # ragged; warnings as errors
            return None
        if array.shape != shape:
            return None
        if _finite(array):
            return array
        return cast(np.asarray(value), expected.dtype, expected.name)  # rare: says which value is too large
    try:
        raw = np.asarray(value)
    except (ValueError, TypeError, OverflowError):  # ragged
        return None
    kind = raw.dtype.kind
    if raw.shape != shape or kind not in "iuf" or (kind == "f" and target.kind in "iub"):
        return None
    return cast(raw, expected.dtype, expected.name)


def _finite(array: np.ndarray) -> bool:
    """Whether no value of a float array is infinite (JSON has no NaN). A small array's values
    are summed as Python floats: numpy's reduction costs several microseconds a request when
    served (docs/performance.md). The sum of float32 values cannot overflow a float64."""
    if array.size <= _SUMMED_IN_PYTHON:
        return isfinite(sum(array.ravel().tolist()))
    return isfinite(_total(array, None))
