"""The conformance suite's test models, written as OpenVINO IR with the opset API (no downloads).

Registered by plugin.py through `dropin_register_conformance_models`; used by
`pytest --dropin-backend=openvino --pyargs dropin.testing.conformance`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

from dropin.dtypes import DType
from dropin.testing import ALL_DTYPES, ConformanceModels

_OV_TYPES: dict[DType, ov.Type] = {
    DType.FP32: ov.Type.f32,
    DType.FP64: ov.Type.f64,
    DType.FP16: ov.Type.f16,
    DType.I64: ov.Type.i64,
    DType.I32: ov.Type.i32,
    DType.I16: ov.Type.i16,
    DType.I8: ov.Type.i8,
    DType.U64: ov.Type.u64,
    DType.U32: ov.Type.u32,
    DType.U16: ov.Type.u16,
    DType.U8: ov.Type.u8,
    DType.BOOL: ov.Type.boolean,
    DType.STRING: ov.Type.string,
}


def _parameter(shape: Sequence[int], element_type: ov.Type) -> ov.Node:
    node = ops.parameter(
        ov.PartialShape([ov.Dimension(d) if d >= 0 else ov.Dimension() for d in shape]), element_type, name="x"
    )
    node.output(0).get_tensor().set_names({"x"})
    return node


def _save(version_dir: Path, output: ov.Node, parameter: ov.Node, name: str) -> None:
    output.output(0).get_tensor().set_names({"y"})
    model = ov.Model([ops.result(output)], [parameter], name)
    ov.save_model(model, str(Path(version_dir) / "model.xml"), compress_to_fp16=False)


class OpenVINOConformanceModels(ConformanceModels):
    # OpenVINO's CPU plugin computes I64/U64 in 32 bits and FP64 as FP32 inside every operation,
    # even a no-op Reshape: the suite's exact round trip of their limits fails, so they are not
    # declared (the backend logs a warning when a model has such inputs or outputs).
    dtypes = ALL_DTYPES - {DType.I64, DType.U64, DType.FP64}
    # OpenVINO computes in bf16 on CPUs that have it; the suite compares results exactly
    plugin_config = {"INFERENCE_PRECISION_HINT": "f32"}

    def scale(self, version_dir: Path, factor: float, shape: Sequence[int]) -> None:
        x = _parameter(shape, ov.Type.f32)
        _save(version_dir, ops.multiply(x, ops.constant(np.float32(factor))), x, "scale")

    def identity(self, version_dir: Path, dtype: DType, shape: Sequence[int]) -> None:
        x = _parameter(shape, _OV_TYPES[dtype])
        # a no-op Reshape moves data only (a Convert would compute fp64 in f32 on the CPU plugin)
        _save(version_dir, ops.reshape(x, ops.shape_of(x), special_zero=False), x, "identity")

    def failing(self, version_dir: Path) -> None:
        x = _parameter([-1], ov.Type.f32)
        # the shape is only checked at inference: 7 values cannot become 3 rows
        _save(version_dir, ops.reshape(x, ops.constant(np.array([3, -1], np.int64)), special_zero=False), x, "failing")
