"""The conformance suite's test models, built with the onnx package's helper API (no downloads).

Registered by plugin.py through `dropin_register_conformance_models`; used by
`pytest --dropin-backend=onnxruntime --pyargs dropin.testing.conformance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dropin.dtypes import DType
from dropin.testing import ALL_DTYPES, ConformanceModels

OPSET = 17
IR_VERSION = 8  # readable by every onnxruntime and OpenVINO this plugin supports


def onnx_type(dtype: DType) -> int:
    from onnx import TensorProto

    return {
        DType.FP32: TensorProto.FLOAT, DType.FP64: TensorProto.DOUBLE, DType.FP16: TensorProto.FLOAT16,
        DType.I64: TensorProto.INT64, DType.I32: TensorProto.INT32, DType.I16: TensorProto.INT16,
        DType.I8: TensorProto.INT8, DType.U64: TensorProto.UINT64, DType.U32: TensorProto.UINT32,
        DType.U16: TensorProto.UINT16, DType.U8: TensorProto.UINT8, DType.BOOL: TensorProto.BOOL,
        DType.STRING: TensorProto.STRING,
    }[dtype]


def dims(shape: Sequence[int]) -> list[Any]:
    """-1 becomes a symbolic dim ("d0", "d1", ...), as exporters write dynamic axes."""
    return [d if d >= 0 else f"d{i}" for i, d in enumerate(shape)]


def save(
    version_dir: Path, nodes: list[Any], x: Any, y: Any, initializers: Sequence[Any] = (), name: str = "model"
) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, name, [x], [y], initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    path = Path(version_dir) / "model.onnx"
    onnx.save(model, str(path))
    return path


class OnnxConformanceModels(ConformanceModels):
    dtypes = ALL_DTYPES

    def scale(self, version_dir: Path, factor: float, shape: Sequence[int]) -> None:
        from onnx import TensorProto, helper, numpy_helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims(shape))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims(shape))
        factor_ = numpy_helper.from_array(np.array(factor, np.float32), "factor")
        save(version_dir, [helper.make_node("Mul", ["x", "factor"], ["y"])], x, y, [factor_], "scale")

    def identity(self, version_dir: Path, dtype: DType, shape: Sequence[int]) -> None:
        from onnx import helper

        x = helper.make_tensor_value_info("x", onnx_type(dtype), dims(shape))
        y = helper.make_tensor_value_info("y", onnx_type(dtype), dims(shape))
        save(version_dir, [helper.make_node("Identity", ["x"], ["y"])], x, y, name="identity")

    def failing(self, version_dir: Path) -> None:
        from onnx import TensorProto, helper, numpy_helper

        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "m"])
        rows = numpy_helper.from_array(np.array([3, -1], np.int64), "rows")
        save(version_dir, [helper.make_node("Reshape", ["x", "rows"], ["y"])], x, y, [rows], "failing")
