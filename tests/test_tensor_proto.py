"""TensorProto <-> numpy for every dtype, both ways, tensor_content and the typed *_val forms."""

from __future__ import annotations

import numpy as np
import pytest

from dropin.dtypes import DType, tf_precision_name
from dropin.errors import DropinError, Status
from dropin.tensor_proto import TYPED_FIELD, ProtoTensor, TensorProto, from_numpy, to_numpy
from dropin.testing.client import to_typed_proto

NUMERIC = [d for d in DType if d is not DType.STRING]


def sample(dtype: DType, shape=(2, 3)) -> np.ndarray:
    rng = np.random.default_rng(int(dtype.tf_enum))
    if dtype is DType.BOOL:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.numpy.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dtype.numpy)
    info = np.iinfo(dtype.numpy)
    return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype.numpy)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: d.value)
def test_tensor_content_round_trip(dtype: DType) -> None:
    array = sample(dtype)
    proto = from_numpy(array)
    assert proto.dtype == dtype.tf_enum
    assert [d.size for d in proto.tensor_shape.dim] == [2, 3]
    assert len(proto.tensor_content) == array.nbytes
    back = to_numpy(TensorProto.FromString(proto.SerializeToString()), dtype, (2, 3), "x")
    assert back.dtype == dtype.numpy
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: d.value)
def test_typed_values_round_trip(dtype: DType) -> None:
    array = sample(dtype)
    proto = to_typed_proto(array, dtype)
    assert not proto.tensor_content
    assert len(getattr(proto, TYPED_FIELD[dtype])) == 6
    back = to_numpy(TensorProto.FromString(proto.SerializeToString()), dtype, (2, 3), "x")
    assert back.dtype == dtype.numpy
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: d.value)
def test_one_typed_value_fills_the_shape(dtype: DType) -> None:
    value = sample(dtype, (1,))
    proto = to_typed_proto(value, dtype)
    back = to_numpy(proto, dtype, (3, 2), "x")
    np.testing.assert_array_equal(back, np.full((3, 2), value[0], dtype=dtype.numpy))


@pytest.mark.parametrize(
    "dtype,values",
    [(DType.I8, [1, 300, 2]), (DType.I8, [-129]), (DType.U8, [-1, 0, 0]), (DType.U8, [256]),
     (DType.I16, [0, 0, 32768]), (DType.U16, [65536, 0, 0]), (DType.FP16, [0, -1, 0]), (DType.FP16, [0x10000])],
    ids=lambda v: str(v),
)
def test_typed_values_outside_the_input_type_are_refused(dtype: DType, values: list[int]) -> None:
    proto = TensorProto(dtype=dtype.tf_enum)
    getattr(proto, TYPED_FIELD[dtype]).extend(values)
    with pytest.raises(DropinError) as info:
        to_numpy(proto, dtype, (1, 3), "x")  # one value would fill the shape: it is checked once
    assert info.value.status is Status.INVALID_VALUE
    assert str(info.value).startswith("Invalid value for the input type - Expected: ") and str(info.value).endswith(
        "; input name: x"
    )


def test_tensor_content_is_not_copied() -> None:
    array = np.arange(12, dtype=np.float32)
    proto = from_numpy(array)
    back = to_numpy(proto, DType.FP32, (3, 4), "x")
    assert not back.flags.owndata  # a view over the request's bytes


def test_half_val_holds_fp16_bit_patterns() -> None:
    array = np.array([1.0, -2.5, 65504.0], dtype=np.float16)
    proto = to_typed_proto(array, DType.FP16)
    assert list(proto.half_val) == [int(v) for v in array.view(np.uint16)]
    np.testing.assert_array_equal(to_numpy(proto, DType.FP16, (3,), "h"), array)


def test_strings_both_ways() -> None:
    array = np.array([b"a", b"\x00\xff", b""], dtype=object)
    proto = from_numpy(array)
    assert proto.dtype == DType.STRING.tf_enum and list(proto.string_val) == list(array)
    assert list(to_numpy(proto, DType.STRING, (3,), "s")) == list(array)
    assert list(ProtoTensor(proto).strings()) == list(array)


def test_scalar() -> None:
    proto = from_numpy(np.array(3.5, dtype=np.float64))
    assert len(proto.tensor_shape.dim) == 0
    assert to_numpy(proto, DType.FP64, (), "s") == 3.5


def test_empty_tensor() -> None:
    proto = from_numpy(np.zeros((0, 4), np.float32))
    assert to_numpy(proto, DType.FP32, (0, 4), "e").shape == (0, 4)


@pytest.mark.parametrize(
    "proto,status,message",
    [
        (TensorProto(dtype=1, tensor_content=b"\0" * 20), Status.INVALID_CONTENT_SIZE,
         "Invalid content size of tensor proto - Expected: 24 bytes; Actual: 20 bytes; input name: x"),
        (TensorProto(dtype=1), Status.INVALID_CONTENT_SIZE,
         "Invalid content size of tensor proto - Expected: 24 bytes; Actual: 0 bytes; input name: x"),
        (TensorProto(dtype=1, float_val=[1, 2]), Status.INVALID_VALUE_COUNT,
         "Invalid number of values in tensor proto container - Expected: 6; Actual: 2; input name: x"),
    ],
    ids=["short content", "no data", "wrong count"],
)
def test_size_errors(proto: TensorProto, status: Status, message: str) -> None:
    with pytest.raises(DropinError) as info:
        to_numpy(proto, DType.FP32, (2, 3), "x")
    assert info.value.status is status
    assert str(info.value) == message


def test_precision_names() -> None:
    assert tf_precision_name(1) == "FP32" and tf_precision_name(9) == "I64" and tf_precision_name(19) == "FP16"
    assert tf_precision_name(7) == "STRING" and tf_precision_name(8) == "UNDEFINED"
