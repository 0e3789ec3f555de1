"""Requests to stateful models in tests: the special inputs as OVMS's clients send them.

    inputs = {"x": x, **special(sequence_id=7, control=START)}             # gRPC, typed fields
    inputs = {"x": x, **special(sequence_id=7, control=START, typed=False)}  # gRPC, tensor_content
    body = {"x": x.tolist(), **special_json(7, START)}                   # REST
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType
from ..sequences import SEQUENCE_CONTROL_INPUT, SEQUENCE_END, SEQUENCE_ID, SEQUENCE_START
from ..tensor_proto import TensorProto, from_numpy
from .client import to_typed_proto

START, END = SEQUENCE_START, SEQUENCE_END


def special(sequence_id: int | None = None, control: int | None = None, typed: bool = True) -> dict[str, TensorProto]:
    """`sequence_id` (DT_UINT64 [1], in uint64_val) and `sequence_control_input` (DT_UINT32 [1],
    in uint32_val), as tensorflow's make_tensor_proto makes them; or in tensor_content."""
    protos = {}
    for name, value, dtype in ((SEQUENCE_ID, sequence_id, DType.U64), (SEQUENCE_CONTROL_INPUT, control, DType.U32)):
        if value is not None:
            array = np.array([value], dtype=dtype.numpy)
            protos[name] = to_typed_proto(array, dtype) if typed else from_numpy(array)
    return protos


def special_json(sequence_id: int | None = None, control: int | None = None) -> dict[str, Any]:
    """The special inputs of a REST request's "inputs", as OVMS's REST client sends them."""
    inputs: dict[str, Any] = {}
    if sequence_id is not None:
        inputs[SEQUENCE_ID] = [sequence_id]
    if control is not None:
        inputs[SEQUENCE_CONTROL_INPUT] = [control]
    return inputs


def sequence_id_of(response: Any) -> int:
    """The sequence_id output of a PredictResponse, where OVMS puts it: one uint64_val."""
    proto = response.outputs[SEQUENCE_ID]
    assert proto.dtype == DType.U64.tf_enum and [d.size for d in proto.tensor_shape.dim] == [1], proto
    assert len(proto.uint64_val) == 1 and not proto.tensor_content, proto
    return int(proto.uint64_val[0])
