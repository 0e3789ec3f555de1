#!/usr/bin/env python3
"""In-process cost of turning a request's values into checked tensors: validation plus the typed
gRPC fields (`float_val`, `int_val`, one value filling a shape) and REST JSON (parse included).

No server: `validate_request` on `ProtoTensor`s and on `PredictRequest.parse(body).tensors()`,
the code both front ends run per request. Best of 5 repeats of this process's CPU time (robust to
other jobs on a shared machine), microseconds per request.

    .venv/bin/python benchmarks/value_conversion.py
"""

from __future__ import annotations

import json
import time
import timeit
from collections.abc import Callable

import numpy as np

from dropin.dtypes import DType
from dropin.rest_json import PredictRequest
from dropin.shapes import TensorSpec
from dropin.tensor_proto import TYPED_FIELD, ProtoTensor, TensorProto
from dropin.validation import InputPlan, validate_request


def typed(dtype: DType, shape: tuple[int, ...], values: list) -> TensorProto:
    proto = TensorProto(dtype=dtype.tf_enum)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    getattr(proto, TYPED_FIELD[dtype]).extend(values)
    return proto


def grpc_case(dtype: DType, shape: tuple[int, ...], values: list) -> Callable[[], object]:
    plans = [InputPlan(TensorSpec.of("x", dtype, [-1] * len(shape)))]
    proto = typed(dtype, shape, values)
    return lambda: validate_request(plans, {"x": ProtoTensor(proto)})


def rest_case(dtype: DType, rank: int, doc: object) -> Callable[[], object]:
    specs = {"x": TensorSpec.of("x", dtype, [-1] * rank)}
    plans = [InputPlan(specs["x"])]
    body = json.dumps(doc).encode()
    return lambda: validate_request(plans, PredictRequest.parse(body).tensors(specs))


def main() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((1, 224, 224, 3)).round(4)
    pixels = rng.integers(0, 256, (1, 224, 224, 3))
    cases = {
        "gRPC float_val FP32, 3 values": grpc_case(DType.FP32, (1, 3), [1.0, 2.0, 3.0]),
        "gRPC int_val U8, 3 values": grpc_case(DType.U8, (1, 3), [1, 2, 3]),
        "gRPC int_val I32, 3 values": grpc_case(DType.I32, (1, 3), [1, 2, 3]),
        "gRPC float_val FP32, 150528 values": grpc_case(DType.FP32, (1, 224, 224, 3), image.reshape(-1).tolist()),
        "gRPC int_val U8, 150528 values": grpc_case(DType.U8, (1, 224, 224, 3), pixels.reshape(-1).tolist()),
        "gRPC one float_val fills (1000,10)": grpc_case(DType.FP32, (1000, 10), [1.5]),
        "REST FP32, 3 numbers": rest_case(DType.FP32, 2, {"inputs": {"x": [[1.0, 2.0, 3.0]]}}),
        "REST I32, 3 numbers": rest_case(DType.I32, 2, {"inputs": {"x": [[1, 2, 3]]}}),
        "REST FP32, 150528 numbers": rest_case(DType.FP32, 4, {"instances": image.tolist()}),
        "REST U8, 150528 numbers": rest_case(DType.U8, 4, {"instances": pixels.tolist()}),
    }
    print("| case | us per request |\n|---|---|")
    for name, run in cases.items():
        run()
        number = 20 if "150528" in name else 2000
        best = min(timeit.repeat(run, number=number, repeat=5, timer=time.process_time)) / number
        print(f"| {name} | {best * 1e6:.1f} |", flush=True)


if __name__ == "__main__":
    main()
