"""TensorProto <-> numpy, both ways.

Requests: `tensor_content` is read with np.frombuffer (no copy); the typed `*_val` fields are
accepted as TF Serving accepts them, a single value filling the whole shape, and converted to the
input's type only when no value changes (`casting.cast`). Responses carry
raw little-endian `tensor_content` (strings go to `string_val`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from math import prod

import numpy as np

from ._proto.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from .casting import cast
from .dtypes import DType
from .errors import DropinError, Status
from .validation import ExactPlan

TensorProto = tensor_pb2.TensorProto

# The typed field a TensorProto uses for each dtype (tensor.proto).
TYPED_FIELD: dict[DType, str] = {
    DType.FP32: "float_val",
    DType.FP64: "double_val",
    DType.FP16: "half_val",
    DType.I32: "int_val",
    DType.I16: "int_val",
    DType.I8: "int_val",
    DType.U8: "int_val",
    DType.U16: "int_val",
    DType.I64: "int64_val",
    DType.U32: "uint32_val",
    DType.U64: "uint64_val",
    DType.BOOL: "bool_val",
    DType.STRING: "string_val",
}

# numpy type of the typed field's Python values, before the cast to the tensor's dtype
_FIELD_NUMPY: dict[str, np.dtype] = {
    "float_val": np.dtype("<f4"),
    "double_val": np.dtype("<f8"),
    "half_val": np.dtype("<i4"),
    "int_val": np.dtype("<i4"),
    "int64_val": np.dtype("<i8"),
    "uint32_val": np.dtype("<u4"),
    "uint64_val": np.dtype("<u8"),
    "bool_val": np.dtype("?"),
}


class ProtoTensor:
    """A request TensorProto seen through the data plane's `RequestTensor` protocol."""

    __slots__ = ("proto", "shape")

    def __init__(self, proto: TensorProto) -> None:
        self.proto = proto
        self.shape: tuple[int, ...] = tuple([d.size for d in proto.tensor_shape.dim])

    @property
    def tf_dtype(self) -> int:
        return self.proto.dtype

    def strings(self) -> np.ndarray:
        values = self.proto.string_val
        out = np.empty(len(values), dtype=object)
        out[:] = list(values)
        return out

    def array(self, name: str, dtype: DType) -> np.ndarray:
        return to_numpy(self.proto, dtype, self.shape, name)


def decode_exact(plan: ExactPlan, tensors: Mapping[str, TensorProto]) -> dict[str, np.ndarray] | None:
    """A request's inputs (a PredictRequest's `inputs` map) as arrays, read without a copy, when
    they are exactly what `plan` says; else None, and the request takes the validating path."""
    inputs = plan.inputs
    if len(tensors) != len(inputs):
        return None
    arrays = {}
    for expected in inputs:
        name = expected.name
        if name not in tensors:  # `in`: indexing a protobuf map of messages would add the key
            return None
        tensor = tensors[name]
        content = tensor.tensor_content
        if (
            tensor.dtype != expected.dtype.tf_enum
            or len(content) != expected.nbytes
            # dims of other names, or fields this server does not know, take the validating path
            or tensor.tensor_shape != expected.tf_shape
        ):
            return None
        # read-only, over the request's bytes: np.frombuffer and a reshape in one call
        arrays[name] = np.ndarray(expected.shape, expected.dtype.numpy, content)
    return arrays


def to_numpy(proto: TensorProto, dtype: DType, shape: tuple[int, ...], name: str) -> np.ndarray:
    """The tensor's data as `dtype` in `shape` (already validated); raises the content-size errors."""
    count = prod(shape)
    if dtype is DType.STRING:
        values = proto.string_val
        if len(values) != count:
            raise DropinError(
                Status.INVALID_VALUE_COUNT, f"Expected: {count}; Actual: {len(values)}; input name: {name}"
            )
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(shape)

    content = proto.tensor_content
    if content:
        expected = count * dtype.itemsize
        if len(content) != expected:
            raise DropinError(
                Status.INVALID_CONTENT_SIZE,
                f"Expected: {expected} bytes; Actual: {len(content)} bytes; input name: {name}",
            )
        return np.frombuffer(content, dtype=dtype.numpy).reshape(shape)

    field = TYPED_FIELD[dtype]
    values = getattr(proto, field)
    given = len(values)
    if given != count and given != 1:
        if given == 0:
            raise DropinError(
                Status.INVALID_CONTENT_SIZE,
                f"Expected: {count * dtype.itemsize} bytes; Actual: 0 bytes; input name: {name}",
            )
        raise DropinError(Status.INVALID_VALUE_COUNT, f"Expected: {count}; Actual: {given}; input name: {name}")
    raw = np.array(values, dtype=_FIELD_NUMPY[field])
    if dtype is DType.FP16:  # half_val holds the fp16 bit patterns in int32s
        data = cast(raw, DType.U16, name, "FP16 bit patterns in half_val, integers in [0, 65535]").view("<f2")
    else:  # int_val is wider than I8, U8, I16 and U16: out-of-range values are refused, not wrapped
        data = cast(raw, dtype, name)
    if given != count:  # one value fills the whole shape, as in TF Serving (the size was bounded by validation)
        return np.full(shape, data[0], dtype=data.dtype)
    return data.reshape(shape)


def fill_proto(proto: TensorProto, array: np.ndarray, dtype: DType | None = None) -> None:
    """Write `array` into an (empty) TensorProto: dtype, shape and data."""
    if dtype is None:
        dtype = DType.STRING if array.dtype == object or array.dtype.kind in "SU" else DType.from_numpy(array.dtype)
    proto.dtype = dtype.tf_enum  # type: ignore[assignment]  # the stubs want DataType, a subclass of int
    if array.ndim:  # a scalar's TensorProto has no tensor_shape at all
        proto.tensor_shape.MergeFromString(_shape_bytes(array.shape))
    if dtype is DType.STRING:
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1))
    else:
        # tobytes() writes C order whatever the strides: a copy first only to change the type
        numpy_dtype = dtype.numpy
        proto.tensor_content = (array if array.dtype == numpy_dtype else array.astype(numpy_dtype)).tobytes()


@lru_cache(maxsize=256)
def _shape_bytes(shape: tuple[int, ...]) -> bytes:
    """A serialized TensorShapeProto: merging it costs less than adding the dims one by one, and
    a model answers with few distinct shapes."""
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]
    return tensor_shape_pb2.TensorShapeProto(dim=dims).SerializeToString()


def from_numpy(array: np.ndarray, dtype: DType | None = None) -> TensorProto:
    """A new TensorProto holding `array`."""
    proto = TensorProto()
    fill_proto(proto, array, dtype)
    return proto

