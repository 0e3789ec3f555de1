#!/usr/bin/env python3
"""The data plane's per-request cost in-process, without a network or a backend: RequestScope.infer
(validation, then a model that answers at once) on a static model of shape (1,10) and
(1,3,224,224), 50000 calls per run, median of 7 runs. Compare two trees by running it with each
on PYTHONPATH (e.g. `git archive main core/dropin | tar -x -C /tmp/main`):

    .venv/bin/python benchmarks/inprocess_predict.py
    PYTHONPATH=/tmp/main/core .venv/bin/python benchmarks/inprocess_predict.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
import types
from collections.abc import Mapping

import numpy as np

import dropin
from dropin.backend import LoadedModel
from dropin.dtypes import DType
from dropin.models import Servable
from dropin.request_scope import RequestScope
from dropin.shapes import TensorSpec
from dropin.validation import InputPlan


class Instant(LoadedModel):
    def __init__(self, spec: TensorSpec) -> None:
        self._specs = {spec.name: spec}
        self._out = {"y": np.zeros(1, np.float32)}

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._specs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._specs

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self._out


class Decoded:  # a request tensor as a front end decoded it
    tf_dtype = DType.FP32.tf_enum

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape = array.shape

    def array(self, name: str, dtype: DType) -> np.ndarray:
        return self._array

    def strings(self) -> np.ndarray:
        raise NotImplementedError


async def main() -> None:
    print(dropin.__file__)
    for shape in [(1, 10), (1, 3, 224, 224)]:
        spec = TensorSpec.of("x", DType.FP32, shape)
        servable = Servable("m", 1, Instant(spec), (InputPlan(spec),), "instant")
        plane = types.SimpleNamespace(max_elements=0, max_tensor_bytes=0)
        request = {"x": Decoded(np.zeros(shape, np.float32))}
        runs = []
        for _ in range(7):
            n = 50000
            started = time.perf_counter()
            for _ in range(n):
                scope = RequestScope(plane, None)  # type: ignore[arg-type]
                scope._servable = servable
                servable.in_flight += 1
                await scope.infer(request)
                scope.__exit__(None, None, None)
            runs.append((time.perf_counter() - started) / n * 1e6)
        print(f"{shape}: {statistics.median(runs):.2f} us per in-process Predict (min {min(runs):.2f})")


if __name__ == "__main__":
    asyncio.run(main())
