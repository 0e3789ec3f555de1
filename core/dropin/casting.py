"""Request values converted to a model input's element type, refusing what would change them.

A typed gRPC field (`int_val` for 8- and 16-bit inputs, `half_val`) or a JSON number holds a value
in a wider type than the input. numpy's `astype` would wrap it (300 -> 44 in I8), truncate it
(1.9 -> 1), overflow it to inf (1e40 in FP32) or read a boolean as 1; `cast` refuses each with
INVALID_ARGUMENT naming the input and what it takes. The checks are whole-array numpy reductions
(min, max, a finiteness test), so they cost a few passes over the data; values already of the
input's type (`tensor_content`, `float_val` for FP32, ...) are returned untouched.
"""

from __future__ import annotations

import numpy as np

from .dtypes import DType
from .errors import DropinError, Status

# Above this magnitude a float64 no longer holds every integer: a JSON number written as a
# float (1.0, 1e18) that large may already be a neighbour of what the client wrote.
EXACT_FLOAT_INT = 1 << 53

# the integers each integer (and boolean) type holds
_INT_RANGE: dict[DType, tuple[int, int]] = {
    dtype: (int(np.iinfo(dtype.numpy).min), int(np.iinfo(dtype.numpy).max))
    for dtype in DType
    if dtype.numpy.kind in "iu"
}
_INT_RANGE[DType.BOOL] = (0, 1)

# the largest finite value of the 32- and 64-bit float types, by item size
_FLOAT_MAX = {4: float(np.finfo(np.float32).max), 8: float(np.finfo(np.float64).max)}
_largest, _magnitude = np.maximum.reduce, np.absolute  # NaN is largest: it takes the slow path


def cast(values: np.ndarray, dtype: DType, name: str, expected: str | None = None) -> np.ndarray:
    """`values` as `dtype`, unchanged in value, or DropinError INVALID_VALUE. `expected` replaces
    the description of what the input takes in the message (e.g. for fp16 bit patterns)."""
    target = dtype.numpy
    if values.dtype == target:
        return values
    kind = values.dtype.kind
    if kind == "b":
        _refuse(values, np.ones(values.shape, bool), name, expected or f"{dtype.value} numbers")
    int_range = _INT_RANGE.get(dtype)
    if int_range is not None:
        low, high = int_range
        if kind == "f":
            # the range as floats: its ends (and +-2^53) are 0 or powers of two, exact in float64
            lower, upper = float(max(low, -EXACT_FLOAT_INT)), float(min(high + 1, EXACT_FLOAT_INT + 1))
            with np.errstate(invalid="ignore"):
                ok = (values >= lower) & (values < upper) & (np.floor(values) == values)  # NaN fails all
            if not ok.all():
                first = float(values.reshape(-1)[np.flatnonzero(~ok)[0]])
                in_range = low <= first <= high and first == first // 1  # refused only for being inexact
                exact = " (numbers written with a fraction or exponent: within +-2^53)" if in_range else ""
                _refuse(values, ~ok, name, expected or f"{dtype.value} values, integers in [{low}, {high}]{exact}")
        elif values.size and (int(values.min()) < low or int(values.max()) > high):
            outside = (values < low) | (values > high)
            _refuse(values, outside, name, expected or f"{dtype.value} values, integers in [{low}, {high}]")
        return values.astype(target)
    # a float input: only a finite value that becomes infinite is refused (NaN and inf given as
    # such in float_val stay what they are)
    if values.size and target.itemsize >= 4:
        # the common case first, without errstate (a context manager costs more than the cast of a
        # small tensor): integers of 64 bits or fewer, and floats within the target's range, fit
        # (one reduction over the magnitudes: a reduction costs about 0.5 us on a small array)
        if kind in "iu" or _largest(_magnitude(values), None) <= _FLOAT_MAX[target.itemsize]:
            return values.astype(target)
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(target)
    if not np.isfinite(out).all():
        overflowed = ~np.isfinite(out) & (np.isfinite(values) if kind == "f" else True)
        if overflowed.any():
            limit = float(np.finfo(target).max)
            _refuse(values, overflowed, name, expected or f"{dtype.value} values, in [{-limit:g}, {limit:g}]")
    return out


def refuse_booleans(values: np.ndarray, dtype: DType, name: str) -> None:
    """Refuse a boolean among JSON numbers (`values`: the parsed leaves, an object array), which
    numpy would read as 1 or 0. Types are compared in C (`map(type, ...)`), not value by value."""
    flat = values.reshape(-1)
    if bool in set(map(type, flat)):
        is_bool = np.fromiter(map(type, flat), object, flat.size) == bool  # noqa: E721  (elementwise, numpy)
        _refuse(flat, is_bool, name, f"{dtype.value} numbers")


def _refuse(values: np.ndarray, bad: np.ndarray, name: str, expected: str) -> None:
    """Raise for the first value flagged in `bad` (only on the error path: the index costs a pass)."""
    first = values.reshape(-1)[int(np.flatnonzero(bad)[0])]
    if isinstance(first, (bool, np.bool_)):
        actual = "true" if first else "false"
    else:
        actual = repr(first.item() if isinstance(first, np.generic) else first)
    raise DropinError(Status.INVALID_VALUE, f"Expected: {expected}; Actual: {actual}; input name: {name}")
