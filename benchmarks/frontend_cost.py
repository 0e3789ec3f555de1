"""In-process cost of one Predict through the front ends and the data plane, without a network.

A numpy model (y = 2 * x on a 1x10 FP32 input) stands in for a backend, so that only dropin's own
per-request work is measured: the gRPC servicer's Predict and the REST handler's predict, with
metrics off and on. The gRPC servicer runs as in a handler thread of grpc's server: in the calling
thread (the model offers `infer_now`); with metrics on, it hands the request to an event loop
running in another thread and waits, as the server does.

    python benchmarks/frontend_cost.py                # CPU time per request (min and median of runs)
    python benchmarks/frontend_cost.py --openvino     # REST on a real OpenVINO model, against a minimal handler
    python benchmarks/frontend_cost.py grpc off 3000  # only run 3000 requests, for an instruction count:

    PYTHONHASHSEED=0 setarch $(uname -m) -R valgrind --tool=callgrind --separate-threads=yes \\
        python benchmarks/frontend_cost.py grpc off N

for N = 1000 and 3000: (main thread's Ir at 3000 - at 1000) / 2000 is the instructions per request,
the same from run to run (wall-clock times on a shared machine vary more than the differences).
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from dropin._proto.tensorflow_serving.apis import predict_pb2
from dropin.config import ModelConfig
from dropin.dataplane import DataPlane
from dropin.dtypes import DType
from dropin.grpc_api import OnLoop, PredictionService
from dropin.metrics import Metrics
from dropin.models import Model, ModelTable, ModelVersion, Servable, State
from dropin.rest_api import RestApi
from dropin.shapes import TensorSpec
from dropin.validation import InputPlan

REST_BODY = b'{"instances": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]]}'


class Double:
    streams = None
    inputs = {"x": TensorSpec.of("x", DType.FP32, [1, 10])}
    outputs = {"y": TensorSpec.of("y", DType.FP32, [1, 10])}

    async def infer(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": arrays["x"] * 2}

    infers_now = True

    def infer_now(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"y": arrays["x"] * 2}


class Manager:  # what the data plane uses of the ModelManager
    loader = None  # reshape reloads only

    def __init__(self, table: ModelTable) -> None:
        self.table = table


class Context:  # what the servicer uses of grpc's ServicerContext
    def abort(self, code: Any, message: str) -> None:
        raise RuntimeError(message)

    def add_callback(self, callback: Callable[[], None]) -> bool:
        return True


class Body:  # what the REST handler uses of aiohttp's request
    def __init__(self, body: bytes) -> None:
        self.content_length = len(body)
        self.content = self
        self._body = body

    async def iter_any(self) -> Any:
        yield self._body

    def is_eof(self) -> bool:  # a small body arrives with the request's head
        return True

    def read_nowait(self) -> bytes:
        return self._body

    def exception(self) -> BaseException | None:  # the connection did not fail
        return None


def background_loop() -> asyncio.AbstractEventLoop:
    """The server's event loop, in a thread of its own (the servicer runs in the caller's)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return loop


def front_ends(metrics_on: bool) -> tuple[PredictionService, RestApi]:
    table = ModelTable()
    model = Model(ModelConfig(name="m", base_path="/nonexistent"))
    version = ModelVersion("m", 1, State.AVAILABLE)
    version.servable = Servable("m", 1, Double(), (InputPlan(Double.inputs["x"]),), "numpy")  # type: ignore[arg-type]
    model.versions[1] = version
    model.update_default()
    table.models["m"] = model
    metrics = Metrics() if metrics_on else None
    dataplane = DataPlane(Manager(table), metrics=metrics)  # type: ignore[arg-type]
    rest = RestApi(dataplane, asyncio.Event(), 1 << 20, metrics=metrics)
    return PredictionService(dataplane, OnLoop(background_loop())), rest


def calls(kind: str, metrics_on: bool) -> Callable[[], Any]:
    grpc_service, rest = front_ends(metrics_on)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    tensor = request.inputs["x"]
    tensor.dtype = 1  # type: ignore[assignment]
    for size in (1, 10):
        tensor.tensor_shape.dim.add().size = size
    tensor.tensor_content = np.arange(10, dtype="<f4").tobytes()
    context = Context()
    if kind == "grpc":
        return lambda: grpc_service.Predict(request, context)
    return lambda: rest.predict(Body(REST_BODY), "m", 0)  # type: ignore[arg-type]


def run(loop: asyncio.AbstractEventLoop, call: Callable[[], Any], n: int) -> None:
    first = call()
    if not inspect.isawaitable(first):  # the gRPC servicer: a plain call
        for _ in range(n - 1):
            call()
        return

    async def many(first: Awaitable[Any]) -> None:
        await first
        for _ in range(n - 1):
            await call()

    loop.run_until_complete(many(first))


def with_openvino(loop: asyncio.AbstractEventLoop) -> None:
    """REST Predict on a real OpenVINO model (serving_overhead's 1x10 `y = 2x + 1`, compiled once)
    against the minimal REST server's handler (rest_overhead.py) on the same compiled model, in
    turn. An inference evicts much of what the request's Python had in the core's caches, so each
    step of a request costs several times what it costs in a loop of its own (docs/performance.md)."""
    import tempfile
    from pathlib import Path

    from aiohttp import web
    from rest_overhead import minimal_answer
    from serving_overhead import REST_BODY as FLOATS
    from serving_overhead import tiny_model

    from dropin.backend import LoadOptions
    from dropin_openvino.backend import OpenVINOBackend

    directory = Path(tempfile.mkdtemp()) / "1"
    tiny_model(directory)
    served = OpenVINOBackend().load(directory, LoadOptions())
    table = ModelTable()
    entry = Model(ModelConfig(name="m", base_path=str(directory.parent)))
    version = ModelVersion("m", 1, State.AVAILABLE)
    version.servable = Servable("m", 1, served, tuple(InputPlan(s) for s in served.inputs.values()), "openvino")
    entry.versions[1] = version
    entry.update_default()
    table.models["m"] = entry
    rest = RestApi(DataPlane(Manager(table)), asyncio.Event(), 1 << 20)  # type: ignore[arg-type]
    compiled = served._compiled
    assert compiled is not None
    request = compiled.create_infer_request()
    view = request.get_input_tensor(0).data

    async def minimal() -> web.Response:  # rest_overhead.minimal_server's handler
        return web.Response(body=minimal_answer(request, view, FLOATS), content_type="application/json")

    cases: dict[str, Callable[[], Any]] = {
        "minimal REST handler": minimal,
        "dropin REST Predict": lambda: rest.predict(Body(FLOATS), "m", 0),  # type: ignore[arg-type]
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(7):  # in turn, so that the machine's drift hits both
        for name, call in cases.items():
            run(loop, call, 300)
            started = time.process_time()
            run(loop, call, 10000)
            best[name] = min(best[name], (time.process_time() - started) / 10000 * 1e6)
    for name, us in best.items():
        print(f"{name}, OpenVINO 1x10: min {us:.2f} us (CPU time)")
    served.close()


def main() -> None:
    loop = asyncio.new_event_loop()
    if sys.argv[1:] == ["--openvino"]:
        with_openvino(loop)
        return
    if len(sys.argv) == 4:  # one kind, N requests, for callgrind
        kind, metrics, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
        call = calls(kind, metrics == "on")
        run(loop, call, 300)  # warm up
        gc.collect()
        gc.disable()  # no collection in the measured part: the same count every run
        run(loop, call, n)
        return
    for metrics_on in (False, True):
        for kind, n in (("grpc", 20000), ("rest", 10000)):
            call = calls(kind, metrics_on)
            run(loop, call, 300)
            per_request = []
            for _ in range(9):
                started = time.process_time()
                run(loop, call, n)
                per_request.append((time.process_time() - started) / n * 1e6)
            print(
                f"{kind} Predict, metrics {'on' if metrics_on else 'off'}: "
                f"min {min(per_request):.2f} us, median {statistics.median(per_request):.2f} us (CPU time)"
            )


if __name__ == "__main__":
    main()
