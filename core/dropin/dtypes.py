"""The element types dropin serves, and their names in TF Serving, OVMS and numpy.

One table, so that the protocol layer, validation messages and backends agree.
"""

from __future__ import annotations

import enum

import numpy as np


class DType(enum.Enum):
    """An element type. The value is the OVMS precision name used in error messages."""

    FP32 = "FP32"
    FP64 = "FP64"
    FP16 = "FP16"
    I64 = "I64"
    I32 = "I32"
    I16 = "I16"
    I8 = "I8"
    U64 = "U64"
    U32 = "U32"
    U16 = "U16"
    U8 = "U8"
    BOOL = "BOOL"
    STRING = "STRING"

    # Members are singletons compared by identity: hash them by identity too, in C (Enum's
    # own __hash__ is a Python call, paid on every dict or set lookup keyed by a DType).
    __hash__ = object.__hash__

    # Set on every member below, from the tables: plain attributes, because they are read for
    # every tensor of every request (a property plus a dict lookup on an Enum costs more).
    numpy: np.dtype  #: the numpy dtype (little-endian, as on the wire); object for STRING
    tf_enum: int  #: the `tensorflow.DataType` enum value
    itemsize: int

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        found = _FROM_NUMPY.get(dtype)  # a numpy dtype: no conversion
        if found is not None:
            return found
        try:
            return _FROM_NUMPY[np.dtype(dtype)]
        except KeyError:
            raise ValueError(f"numpy dtype {np.dtype(dtype)} has no dropin equivalent") from None

    @classmethod
    def from_tf(cls, tf_enum: int) -> DType | None:
        """The DType of a `tensorflow.DataType` value, or None when dropin does not serve it."""
        return _FROM_TF.get(tf_enum)


_NUMPY: dict[DType, np.dtype] = {
    DType.FP32: np.dtype("<f4"),
    DType.FP64: np.dtype("<f8"),
    DType.FP16: np.dtype("<f2"),
    DType.I64: np.dtype("<i8"),
    DType.I32: np.dtype("<i4"),
    DType.I16: np.dtype("<i2"),
    DType.I8: np.dtype("i1"),
    DType.U64: np.dtype("<u8"),
    DType.U32: np.dtype("<u4"),
    DType.U16: np.dtype("<u2"),
    DType.U8: np.dtype("u1"),
    DType.BOOL: np.dtype("?"),
    DType.STRING: np.dtype(object),
}

# tensorflow/core/framework/types.proto
_TF: dict[DType, int] = {
    DType.FP32: 1,
    DType.FP64: 2,
    DType.I32: 3,
    DType.U8: 4,
    DType.I16: 5,
    DType.I8: 6,
    DType.STRING: 7,
    DType.I64: 9,
    DType.BOOL: 10,
    DType.U16: 17,
    DType.FP16: 19,
    DType.U32: 22,
    DType.U64: 23,
}

# What OVMS prints for request dtypes it has no precision for.
_OVMS_NAMES_OF_OTHER_TF_TYPES: dict[int, str] = {14: "BF16", 8: "UNDEFINED", 18: "UNDEFINED"}

for _member in DType:
    _member.numpy = _NUMPY[_member]
    _member.tf_enum = _TF[_member]
    _member.itemsize = _NUMPY[_member].itemsize

_FROM_TF = {v: k for k, v in _TF.items()}
_FROM_NUMPY: dict[object, DType] = {v: k for k, v in _NUMPY.items() if k is not DType.STRING}


def tf_precision_name(tf_enum: int) -> str:
    """The OVMS precision name of a request dtype, for 'Actual: ...' in error messages."""
    dtype = _FROM_TF.get(tf_enum)
    if dtype is not None:
        return str(dtype.value)
    return _OVMS_NAMES_OF_OTHER_TF_TYPES.get(tf_enum, "UNDEFINED")
