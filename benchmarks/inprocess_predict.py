"""In-process Predict hot path: RequestScope.infer on a static (1,3,224,224)... model, no metrics."""
import asyncio, sys, time, types, statistics
import numpy as np
import dropin
from dropin.backend import LoadedModel
from dropin.dataplane import RequestScope
from dropin.dtypes import DType
from dropin.models import Servable
from dropin.shapes import TensorSpec
from dropin.validation import InputPlan
from dropin.tensor_proto import from_numpy
print(dropin.__file__)

class M(LoadedModel):
    def __init__(self, spec): self._i = {spec.name: spec}; self.out = {"y": np.zeros(1, np.float32)}
    @property
    def inputs(self): return self._i
    @property
    def outputs(self): return self._i
    async def infer(self, inputs): return self.out

class T:  # a decoded request tensor
    def __init__(self, a): self.a = a; self.tf_dtype = 1; self.shape = a.shape
    def array(self, name, dtype): return self.a
    def strings(self): raise NotImplementedError

async def main():
    for shape in [(1, 10), (1, 3, 224, 224)]:
        spec = TensorSpec.of("x", DType.FP32, shape)
        servable = Servable("m", 1, M(spec), (InputPlan(spec),), "fake")
        plane = types.SimpleNamespace(max_elements=0, max_tensor_bytes=0, reshaper=None)
        req = {"x": T(np.zeros(shape, np.float32))}
        runs = []
        for _ in range(7):
            n = 50000
            t = time.perf_counter()
            for _ in range(n):
                scope = RequestScope(plane, None)
                scope._servable = servable
                servable.in_flight += 1
                await scope.infer(req)
                scope.__exit__(None, None, None)
            runs.append((time.perf_counter() - t) / n * 1e6)
        print(shape, f"median {statistics.median(runs):.2f} us per in-process Predict (min {min(runs):.2f})")
asyncio.run(main())
