"""TensorProtos with their values in the typed fields (float_val, int_val, ...), as some clients
send them, rather than in tensor_content."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._proto.tensorflow.core.framework import tensor_pb2
from ..dtypes import DType
from ..tensor_proto import TYPED_FIELD
from .client import to_typed_proto


def typed(dtype: DType, shape: tuple[int, ...], values: Sequence[object]) -> tensor_pb2.TensorProto:
    """A TensorProto with `values` in the typed field of `dtype` (fp16: bit patterns), as given."""
    proto = to_typed_proto(np.zeros(0, dtype.numpy), dtype)
    del proto.tensor_shape.dim[:]
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, TYPED_FIELD[dtype]).extend(values)
    return proto
