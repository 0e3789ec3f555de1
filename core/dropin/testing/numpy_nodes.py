"""Custom nodes for the core's pipeline tests, registered by the numpy plugin (numpy_plugin.py):

- "add_sub" (OVMS's test library of that name): input_numbers + add_value - sub_value, FP32, any
  shape; params add_value and sub_value (numbers as strings, as OVMS's params are);
- "split_rows": a demultiplexer: data FP32 (N, D) -> rows (N, 1, D), one branch per row (use
  with demultiply_count N, or -1 for any number of rows);
- "sum_rows": a gather's consumer: rows FP32 (N, 1, D) -> total (1, D), the sum of the branches;
- "thread_name": data FP32 (any 2-D) -> thread STRING (1,), the name of the thread it ran in.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np

from ..custom_nodes import CustomNode
from ..dtypes import DType
from ..shapes import TensorSpec


def _number(params: Mapping[str, str], name: str) -> float:
    try:
        return float(params.get(name, "0"))
    except ValueError:
        raise ValueError(f"param {name} must be a number, got {params[name]!r}") from None


class AddSub(CustomNode):
    def __init__(self, params: Mapping[str, str]) -> None:
        super().__init__(params)
        self.delta = np.float32(_number(params, "add_value") - _number(params, "sub_value"))

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return {"input_numbers": TensorSpec.of("input_numbers", DType.FP32, [-1, -1])}

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return {"output_numbers": TensorSpec.of("output_numbers", DType.FP32, [-1, -1])}

    def execute(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"output_numbers": inputs["input_numbers"] + self.delta}


class SplitRows(CustomNode):
    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return {"data": TensorSpec.of("data", DType.FP32, [-1, -1])}

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return {"rows": TensorSpec.of("rows", DType.FP32, [-1, 1, -1])}

    def execute(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        data = inputs["data"]
        return {"rows": data.reshape(data.shape[0], 1, data.shape[1])}


class SumRows(CustomNode):
    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return {"rows": TensorSpec.of("rows", DType.FP32, [-1, 1, -1])}

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return {"total": TensorSpec.of("total", DType.FP32, [1, -1])}

    def execute(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"total": inputs["rows"].sum(axis=0)}


class ThreadName(CustomNode):
    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return {"data": TensorSpec.of("data", DType.FP32, [-1, -1])}

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return {"thread": TensorSpec.of("thread", DType.STRING, [1])}

    def execute(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return {"thread": np.array([threading.current_thread().name.encode()], dtype=object)}
