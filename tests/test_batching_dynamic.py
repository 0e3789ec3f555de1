"""Server-side dynamic batching (`dynamic_batching` in config.json, `--dynamic_batching`).

Unit tests drive `BatchingModel` over a fake `LoadedModel` (timeout and full flushes, overflow,
cancellation, failures, splitting); end-to-end tests run a real `dropin serve` with numpy-backend
models built here, send many concurrent requests of several batch sizes over gRPC and REST, and
compare every answer with numpy run directly on that request's input."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropin.backend import InferOutputs, LoadedModel
from dropin.batching import BatchedOutputs, BatchingError, BatchingModel, BatchRun, timer_delay
from dropin.cli import build_parser, settings_from_args
from dropin.config import ConfigError, DynamicBatching, model_config
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.metrics import ModelMetrics
from dropin.shapes import TensorSpec
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of
from dropin.testing.numpy_models import NumpyModelWriter
from dropin.testing.server import DropinServer, free_port

# -- the wrapper, over a fake model ------------------------------------------------------------


class FakeModel(LoadedModel):
    """y = x * 2 (+ the row count, so a wrong split shows); records every batch it runs."""

    def __init__(
        self, x: tuple = (-1, 3), y: tuple | None = None, layout: str | None = None, delay: float = 0.0
    ) -> None:
        self._inputs = {"x": TensorSpec.of("x", DType.FP32, x, layout)}
        self._outputs = {"y": TensorSpec.of("y", DType.FP32, y or x, layout)}
        self.calls: list[tuple[int, ...]] = []
        self.delay = delay
        self.fail: Exception | None = None
        self.fail_on_negative: Exception | None = None  # raised for any batch holding a negative value
        self.refuse_nan = False  # check_inputs refuses a request holding NaN
        self.bad_output = False
        self.closed = False

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = inputs["x"]
        self.calls.append(x.shape)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if self.fail_on_negative is not None and (x < 0).any():
            raise self.fail_on_negative
        y = x * 2
        return InferOutputs({"y": y[:1] if self.bad_output else y}, 0.001, 0.002)

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        if self.refuse_nan and np.isnan(inputs["x"]).any():
            raise DropinError(Status.INVALID_PRECISION, "input x holds NaN")

    def close(self) -> None:
        self.closed = True


def batching(model: FakeModel, size: int = 8, micros: int = 20_000) -> BatchingModel:
    return BatchingModel(model, DynamicBatching(size, micros), "model fake version 1", "fake")


def rows(n: int, first: float = 0.0, width: int = 3) -> np.ndarray:
    return (np.arange(n * width, dtype=np.float32).reshape(n, width) + first)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def gather(model: BatchingModel, inputs: list[np.ndarray]) -> list:
    """Every request at once; exceptions returned in place of results."""

    async def go() -> list:
        return await asyncio.gather(*(model.infer({"x": x}) for x in inputs), return_exceptions=True)

    return run(go())


def test_a_group_is_flushed_when_its_timeout_fires() -> None:
    fake = FakeModel()
    model = batching(fake, size=8, micros=30_000)

    async def go() -> tuple[list, float]:
        started = time.perf_counter()
        results = await asyncio.gather(*(model.infer({"x": rows(n, 100 * n)}) for n in (1, 2, 1)))
        return results, time.perf_counter() - started

    results, elapsed = run(go())
    assert fake.calls == [(4, 3)]  # one inference for the three requests
    assert elapsed >= 0.029
    for n, out in zip((1, 2, 1), results, strict=True):
        np.testing.assert_array_equal(out["y"], rows(n, 100 * n) * 2)
        assert isinstance(out, BatchedOutputs) and out.batch_run.size == 4 and out.batch_run.requests == 3
        assert out.wait_seconds >= 0.029  # the time in the queue counts as waiting
        assert out.infer_seconds == 0.002


def test_sub_millisecond_timeouts_still_wait_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = uvloop.new_event_loop()
    try:
        assert timer_delay(loop, 0.0005) == 0.001  # rounded up, where uvloop would round it to no wait
        assert timer_delay(asyncio.new_event_loop(), 0.0005) == 0.0005
    finally:
        loop.close()

    async def go(model: BatchingModel) -> list:
        tasks = []
        for i in range(3):
            tasks.append(asyncio.ensure_future(model.infer({"x": rows(1, i)})))
            await asyncio.sleep(0)  # the requests arrive in separate loop iterations
        return await asyncio.gather(*tasks)

    # Three loop iterations take microseconds, well inside the wait; a loaded machine may still
    # preempt this process for longer than 1 ms once in a while, so one clean attempt of five
    # shows the wait. Without it (no wait at all) every attempt runs three batches of one.
    calls = []
    for _ in range(5):
        fake = FakeModel()
        results = uvloop.run(go(batching(fake, size=8, micros=500)))
        np.testing.assert_array_equal(results[2]["y"], rows(1, 2) * 2)
        calls.append(fake.calls)
        if fake.calls == [(3, 3)]:
            break
    assert [(3, 3)] in calls, calls


def test_a_full_group_runs_at_once() -> None:
    fake = FakeModel()
    model = batching(fake, size=4, micros=5_000_000)

    async def go() -> list:
        return await asyncio.wait_for(asyncio.gather(*(model.infer({"x": rows(1, i)}) for i in range(4))), 2)

    results = run(go())
    assert fake.calls == [(4, 3)]
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out["y"], rows(1, i) * 2)


def test_a_request_that_would_overflow_starts_the_next_group() -> None:
    fake = FakeModel()
    model = batching(fake, size=4, micros=20_000)

    async def go() -> list:
        return await asyncio.gather(*(model.infer({"x": rows(n, n)}) for n in (3, 2, 2)))

    results = run(go())
    assert fake.calls == [(3, 3), (4, 3)]
    for n, out in zip((3, 2, 2), results, strict=True):
        np.testing.assert_array_equal(out["y"], rows(n, n) * 2)


def test_a_request_as_large_as_the_batch_runs_alone() -> None:
    fake = FakeModel()
    model = batching(fake, size=4, micros=5_000_000)
    out = run(asyncio.wait_for(model.infer({"x": rows(9)}), 2))
    assert fake.calls == [(9, 3)]
    np.testing.assert_array_equal(out["y"], rows(9) * 2)
    assert out.batch_run.size == 9 and out.batch_run.requests == 1


def test_different_non_batch_shapes_are_never_mixed() -> None:
    fake = FakeModel(x=(-1, -1))
    model = batching(fake, size=8, micros=20_000)

    async def go() -> list:
        return await asyncio.gather(
            model.infer({"x": rows(1, 0, 3)}), model.infer({"x": rows(2, 5, 4)}),
            model.infer({"x": rows(1, 9, 3)}), model.infer({"x": rows(1, 7, 4).astype(np.float32)}),
        )

    results = run(go())
    assert sorted(fake.calls) == [(2, 3), (3, 4)]
    for (n, first, width), out in zip([(1, 0, 3), (2, 5, 4), (1, 9, 3), (1, 7, 4)], results, strict=True):
        np.testing.assert_array_equal(out["y"], rows(n, first, width) * 2)


def test_a_cancelled_request_does_not_break_its_batch() -> None:
    fake = FakeModel()
    model = batching(fake, size=8, micros=30_000)

    async def go() -> list:
        tasks = [asyncio.ensure_future(model.infer({"x": rows(n, n)})) for n in (1, 2, 3)]
        await asyncio.sleep(0.005)
        tasks[1].cancel()  # the client went away while its request waited
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return done

    first, second, third = run(go())
    assert isinstance(second, asyncio.CancelledError)
    assert fake.calls == [(4, 3)]  # the cancelled request's rows are left out
    np.testing.assert_array_equal(first["y"], rows(1, 1) * 2)
    np.testing.assert_array_equal(third["y"], rows(3, 3) * 2)


def test_a_request_cancelled_during_inference_leaves_the_others_their_results() -> None:
    fake = FakeModel(delay=0.2)
    model = batching(fake, size=8, micros=1_000)

    async def go() -> list:
        tasks = [asyncio.ensure_future(model.infer({"x": rows(1, i)})) for i in range(3)]
        await asyncio.sleep(0.05)  # flushed, the inference is running
        tasks[0].cancel()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(go())
    assert isinstance(results[0], asyncio.CancelledError)
    assert fake.calls == [(3, 3)]
    for i in (1, 2):
        np.testing.assert_array_equal(results[i]["y"], rows(1, i) * 2)


def test_a_request_the_model_refuses_fails_alone_before_joining_a_batch() -> None:
    fake = FakeModel()
    fake.refuse_nan = True
    model = batching(fake, size=8, micros=20_000)
    xs = [rows(1, 10 * i) for i in range(8)]
    xs[5] = np.full((1, 3), np.nan, np.float32)
    results = gather(model, xs)
    assert fake.calls == [(7, 3)]  # one batch, without the refused request
    assert isinstance(results[5], DropinError) and str(results[5]) == "Invalid input precision - input x holds NaN"
    for i in (0, 1, 2, 3, 4, 6, 7):
        np.testing.assert_array_equal(results[i]["y"], xs[i] * 2)
        assert results[i].batch_run.requests == 7


@pytest.mark.parametrize(
    "error", [RuntimeError("negative input"), DropinError(Status.INVALID_VALUE_COUNT, "negative input")]
)
def test_a_failed_batch_runs_its_requests_alone_so_only_the_culprit_fails(error: Exception) -> None:
    fake = FakeModel()
    fake.fail_on_negative = error
    model = batching(fake, size=16, micros=20_000)
    xs = [rows(1, 10 * i) for i in range(8)]
    xs[2] = -rows(1, 1)
    results = gather(model, xs)
    assert fake.calls == [(8, 3)] + [(1, 3)] * 8  # the batch, then each request once, on its own
    assert results[2] is error  # what it gets alone: a DropinError reaches the client, anything else is INTERNAL
    for i in (0, 1, 3, 4, 5, 6, 7):
        np.testing.assert_array_equal(results[i]["y"], xs[i] * 2)
        assert results[i].batch_run.size == 1 and results[i].batch_run.requests == 1
        assert results[i].wait_seconds >= 0.019  # the queue counts as waiting


def test_a_failure_the_backend_calls_its_own_is_not_run_again() -> None:
    fake = FakeModel()
    model = batching(fake, size=8, micros=10_000)

    async def go() -> tuple[list, list, list, list]:
        fake.fail = DropinError(Status.INTERNAL_ERROR, "the device is gone")
        own = await asyncio.gather(*(model.infer({"x": rows(1)}) for _ in range(3)), return_exceptions=True)
        calls = list(fake.calls)
        fake.fail = RuntimeError("the device is on fire")  # may be the data's fault: run alone once
        unknown = await asyncio.gather(*(model.infer({"x": rows(1)}) for _ in range(2)), return_exceptions=True)
        fake.fail = None
        ok = await asyncio.gather(*(model.infer({"x": rows(1, i)}) for i in range(2)))
        return own, calls, unknown, ok

    own, calls, unknown, ok = run(go())
    assert calls == [(3, 3)]  # once, as a batch
    for exc in own:  # each request its own copy of the backend's error
        assert (
            isinstance(exc, DropinError) and exc.status is Status.INTERNAL_ERROR and exc.details == "the device is gone"
        )
    assert len({id(exc) for exc in own}) == 3
    assert fake.calls[1:4] == [(2, 3), (1, 3), (1, 3)]  # never more than once alone
    for exc in unknown:  # as raised: the data plane logs it and answers INTERNAL, as unbatched
        assert isinstance(exc, RuntimeError) and str(exc) == "the device is on fire"
    np.testing.assert_array_equal(ok[1]["y"], rows(1, 1) * 2)


def test_outputs_that_do_not_follow_the_batch_fail_clearly() -> None:
    fake = FakeModel()
    fake.bad_output = True
    model = batching(fake, size=8, micros=5_000)
    results = gather(model, [rows(1), rows(1)])
    assert fake.calls == [(2, 3)]  # the model's fault, not the data's: not run again
    for exc in results:
        assert isinstance(exc, DropinError) and exc.status is Status.INTERNAL_ERROR
        assert "output y of a batch of 2 has shape (1, 3), so it cannot be split by request" in str(exc)


def test_the_batch_axis_follows_the_layout() -> None:
    fake = FakeModel(x=(3, -1), layout="CN")
    model = batching(fake, size=8, micros=10_000)
    xs = [np.arange(3 * n, dtype=np.float32).reshape(3, n) + 10 * n for n in (1, 2)]
    results = gather(model, xs)
    assert fake.calls == [(3, 3)]
    for x, out in zip(xs, results, strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)


def test_load_time_checks_name_the_tensor() -> None:
    with pytest.raises(BatchingError, match=r"dynamic batch dimension on every input; input x has shape \(1,10\)"):
        batching(FakeModel(x=(1, 10)))
    with pytest.raises(BatchingError, match=r"cannot split output y by request: its shape \(4,3\)"):
        batching(FakeModel(x=(-1, 3), y=(4, 3)))
    with pytest.raises(BatchingError, match=r"input x has shape \(-1\) and layout C"):
        batching(FakeModel(x=(-1,), layout="C"))
    ranged = batching(FakeModel(x=((1, 6), 3)), size=16)
    assert ranged.max_batch_size == 6  # the model's upper bound
    with pytest.raises(BatchingError, match=r"input x has shape \(\[0~1\],3\)"):
        batching(FakeModel(x=((0, 1), 3)))


def test_the_wrapper_forwards_the_model() -> None:
    fake = FakeModel()
    fake.streams = 3
    model = batching(fake)
    assert model.inputs is fake.inputs and model.outputs is fake.outputs and model.streams == 3
    model.close()
    assert fake.closed


def test_metrics_count_each_batch_once() -> None:
    metrics = ModelMetrics()
    shared = BatchRun(5, 2)
    for _ in range(2):
        metrics.observe_inference(BatchedOutputs({}, 0.0, 0.0, shared), 0.001)
    metrics.observe_inference(BatchedOutputs({}, 0.0, 0.0, BatchRun(1, 1)), 0.001)
    assert metrics.batch_size is not None and metrics.batch_size.sum == 6 and sum(metrics.batch_size.counts) == 2
    plain = ModelMetrics()
    plain.observe_inference({}, 0.001)
    assert plain.batch_size is None  # a model without batching shows no batch family


# -- configuration -------------------------------------------------------------------------------


def test_config_parses_dynamic_batching() -> None:
    config = model_config(
        {"name": "m", "base_path": "/m", "dynamic_batching": {"max_batch_size": 16, "batch_timeout_micros": 500}}
    )
    assert config.dynamic_batching == DynamicBatching(16, 500)
    assert "dynamic_batching" not in config.options
    assert model_config({"name": "m", "base_path": "/m"}).dynamic_batching is None


@pytest.mark.parametrize(
    "value, message",
    [
        ({"max_batch_size": 16}, "dynamic_batching needs batch_timeout_micros"),
        ({"max_batch_size": 16, "batch_timeout_micros": 5, "num_batch_threads": 4}, "unknown key(s) num_batch_threads"),
        ({"max_batch_size": 1, "batch_timeout_micros": 5}, "max_batch_size must be an integer >= 2"),
        ({"max_batch_size": True, "batch_timeout_micros": 5}, "max_batch_size must be an integer >= 2"),
        (
            {"max_batch_size": 8, "batch_timeout_micros": -1},
            "batch_timeout_micros must be an integer from 0 to 10000000",
        ),
        ({"max_batch_size": 8, "batch_timeout_micros": 0.5}, "batch_timeout_micros must be an integer"),
        ([16, 500], "dynamic_batching must be an object"),
        ("{oops", "dynamic_batching is not valid JSON"),
    ],
)
def test_config_refuses_bad_dynamic_batching(value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        model_config({"name": "m", "base_path": "/m", "dynamic_batching": value})
    assert message in str(info.value)
    assert "model 'm' dynamic_batching" in str(info.value)


def test_cli_flag() -> None:
    args = build_parser().parse_args(
        [
            "serve",
            "--model_name",
            "m",
            "--model_path",
            "/m",
            "--dynamic_batching",
            '{"max_batch_size":16,"batch_timeout_micros":500}',
        ]
    )
    assert settings_from_args(args).models[0].dynamic_batching == DynamicBatching(16, 500)
    bad = build_parser().parse_args(
        ["serve", "--model_name", "m", "--model_path", "/m", "--dynamic_batching", '{"max_batch_size":0}']
    )
    with pytest.raises(ConfigError, match="--dynamic_batching"):
        settings_from_args(bad)


def test_an_invalid_config_file_stops_the_server(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": {
        "name": "m", "base_path": "m", "dynamic_batching": {"max_batch_size": 8, "batch_timeout": 5}}}]}))
    result = subprocess.run(
        [sys.executable, "-m", "dropin", "serve", "--config_path", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "model 'm' dynamic_batching: unknown key(s) batch_timeout" in result.stderr


# -- end to end ----------------------------------------------------------------------------------


def dense_model(path: Path) -> None:
    """x [-1,16] -> y = relu(x W + b) [-1,8], and a second input-free output, rowsum [-1]."""
    rng = np.random.default_rng(7)
    m = NumpyModelWriter()
    x = m.input("x", DType.FP32, (-1, 16))
    w = m.weight("w", rng.standard_normal((16, 8)).astype(np.float32))
    b = m.weight("b", rng.standard_normal(8).astype(np.float32))
    m.output(m.node("relu", m.node("dense", x, w, b)), "y", DType.FP32, (-1, 8))
    m.output(m.node("sum", x, axis=1), "rowsum", DType.FP32, (-1,))
    m.save(path)


def sequence_model(path: Path) -> None:
    """x [-1,-1], m [-1,-1] -> y = x * m + 1 (two inputs, a dynamic second dim)."""
    m = NumpyModelWriter()
    x, mask = m.input("x", DType.FP32, (-1, -1)), m.input("m", DType.FP32, (-1, -1))
    m.output(m.node("add", m.node("mul", x, mask), m.const(1.0)), "y", DType.FP32, (-1, -1))
    m.save(path)


def picky_model(path: Path) -> None:
    """x [-1,2] -> x, through a reshape to (3,2): fails at inference unless the batch is 3 rows."""
    m = NumpyModelWriter()
    x = m.input("x", DType.FP32, (-1, 2))
    zero = m.node("mul", m.node("sum", m.node("reshape", x, shape=[3, 2])), m.const(0.0))
    m.output(m.node("add", x, zero), "y", DType.FP32, (-1, 2))
    m.save(path)


def refusing_model(path: Path) -> None:
    """x [-1,2] -> y = x * 2; a request holding 13 is refused by the backend's check of the inputs
    (a client error), before it joins a batch."""
    m = NumpyModelWriter()
    x = m.input("x", DType.FP32, (-1, 2))
    m.output(m.node("mul", x, m.const(2.0)), "y", DType.FP32, (-1, 2))
    m.set(reject=[{"input": "x", "equals": 13, "message": "13 is unlucky"}])
    m.save(path)


def limited_model(path: Path) -> None:
    """x [-1,2] -> y = x * 3 + 1; the inference fails when a value of x is 5000, so it fails for one
    request's data and for any batch holding it."""
    m = NumpyModelWriter()
    x = m.node("fail_if", m.input("x", DType.FP32, (-1, 2)), equals=5000.0, message="x holds 5000")
    m.output(m.node("add", m.node("mul", x, m.const(3.0)), m.const(1.0)), "y", DType.FP32, (-1, 2))
    m.save(path)


BATCHING = {"max_batch_size": 8, "batch_timeout_micros": 20_000}
SLOW_BATCHING = {"max_batch_size": 16, "batch_timeout_micros": 200_000}  # concurrent requests meet


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batching")
    dense_model(root / "dense" / "1")
    sequence_model(root / "sequence" / "1")
    picky_model(root / "picky" / "1")
    modelgen.scale_model(root / "static" / "1", shape=(1, 10))
    refusing_model(root / "refusing" / "1")
    limited_model(root / "limited" / "1")
    (root / "config.json").write_text(json.dumps({"model_config_list": [
        {"config": {"name": "dense", "base_path": "dense", "dynamic_batching": BATCHING}},
        {"config": {"name": "sequence", "base_path": "sequence", "dynamic_batching": BATCHING}},
        {"config": {"name": "picky", "base_path": "picky",
                    "dynamic_batching": {"max_batch_size": 6, "batch_timeout_micros": 100_000}}},
        {"config": {"name": "static", "base_path": "static", "dynamic_batching": BATCHING}},
        {"config": {"name": "refusing", "base_path": "refusing", "dynamic_batching": SLOW_BATCHING}},
        {"config": {"name": "limited", "base_path": "limited", "dynamic_batching": SLOW_BATCHING}},
    ]}))
    return root


@pytest.fixture(scope="module")
def server(models: Path) -> DropinServer:
    srv = DropinServer([
        "--config_path", str(models / "config.json"), "--file_system_poll_wait_seconds", "0",
        "--rest_port", str(free_port()), "--metrics_enable", "--log_level", "DEBUG",
    ])
    try:
        for name in ("dense", "sequence", "picky", "refusing", "limited"):
            srv.wait_for(name, 1)
        yield srv
    finally:
        srv.stop()


def reference(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """numpy run directly on a request's input."""
    return modelgen.run_numpy(path, inputs)


def scrape_batches(server: DropinServer, name: str) -> dict[str, float]:
    """The dropin_batch_size histogram of version 1 of `name`: bucket le -> cumulative count."""
    assert server.rest is not None
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{server.rest_port}/metrics", timeout=10).read().decode()
    buckets = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "dropin_batch_size_bucket" and sample.labels.get("name") == name:
                buckets[sample.labels["le"]] = sample.value
    return buckets


def test_concurrent_requests_are_batched_and_answered_right(server: DropinServer, models: Path) -> None:
    rng = np.random.default_rng(1)
    before = scrape_batches(server, "dense")
    grpc_inputs = [rng.standard_normal((int(rng.integers(1, 4)), 16)).astype(np.float32) for _ in range(48)]
    grpc_inputs.append(rng.standard_normal((20, 16)).astype(np.float32))  # larger than max_batch_size: alone
    rest_inputs = [rng.standard_normal((int(rng.integers(1, 3)), 16)).astype(np.float32) for _ in range(8)]
    assert server.rest is not None
    with ThreadPoolExecutor(8) as pool:
        rest = [pool.submit(server.rest.predict, "dense", {"x": x}) for x in rest_inputs]
        futures = [server.client.predict_future("dense", {"x": x}) for x in grpc_inputs]
        answers = [outputs_of(f.result()) for f in futures]
        rest_answers = [f.result() for f in rest]
    for x, got in zip(grpc_inputs, answers, strict=True):
        expected = reference(models / "dense" / "1", {"x": x})
        np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["rowsum"], expected["rowsum"], rtol=1e-5, atol=1e-5)
    for x, got in zip(rest_inputs, rest_answers, strict=True):
        expected = reference(models / "dense" / "1", {"x": x})
        np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-5, atol=1e-5)
    after = scrape_batches(server, "dense")
    batches = after["+Inf"] - before.get("+Inf", 0)
    single_row = after["1.0"] - before.get("1.0", 0)
    assert 0 < batches < len(grpc_inputs) + len(rest_inputs)  # fewer inferences than requests
    assert batches - single_row > 0  # some inferences ran several rows
    assert after["16.0"] - before.get("16.0", 0) < batches  # the 20-row request ran, alone
    server.wait_for_log(r"model dense version 1: ran a batch of \d+ from [2-9] requests")


def test_requests_of_different_shapes_are_never_mixed(server: DropinServer, models: Path) -> None:
    rng = np.random.default_rng(2)
    inputs = []
    for i in range(36):
        n, width = int(rng.integers(1, 4)), (3, 5, 7)[i % 3]
        inputs.append({"x": rng.standard_normal((n, width)).astype(np.float32),
                       "m": rng.standard_normal((n, width)).astype(np.float32)})
    futures = [server.client.predict_future("sequence", feed) for feed in inputs]
    for feed, future in zip(inputs, futures, strict=True):
        got = outputs_of(future.result())["y"]
        np.testing.assert_allclose(got, reference(models / "sequence" / "1", feed)["y"], rtol=1e-6)
    assert scrape_batches(server, "sequence")["+Inf"] < len(inputs)


def test_requests_that_fail_only_together_are_answered_alone(server: DropinServer) -> None:
    # each request alone runs (3 rows), but together they fill a batch of 6, which fails
    xs = [np.arange(6, dtype=np.float32).reshape(3, 2) + 10 * i for i in range(2)]
    futures = [server.client.predict_future("picky", {"x": x}) for x in xs]
    for x, future in zip(xs, futures, strict=True):
        np.testing.assert_array_equal(outputs_of(future.result())["y"], x)
    server.wait_for_log(r"model picky version 1: a batch of 6 rows from 2 requests failed \(ValueError: "
                        r"cannot reshape .*\); running each request on its own")
    assert server.client.predict("dense", {"x": np.ones((1, 16), np.float32)})["y"].shape == (1, 8)


def test_a_request_the_backend_refuses_fails_only_its_own_request(server: DropinServer, models: Path) -> None:
    inputs = [np.full((1 + i % 2, 2), i, np.float32) for i in range(8)]
    inputs[3] = np.array([[1, 13]], np.float32)
    futures = [server.client.predict_future("refusing", {"x": x}) for x in inputs]
    for i, (x, future) in enumerate(zip(inputs, futures, strict=True)):
        if i == 3:
            with pytest.raises(grpc.RpcError) as info:
                future.result()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == "Invalid value for the input type - input x: 13 is unlucky"
            continue
        expected = reference(models / "refusing" / "1", {"x": x})["y"]
        np.testing.assert_array_equal(outputs_of(future.result())["y"], expected)
    server.wait_for_log(r"model refusing version 1: ran a batch of \d+ from [2-7] requests")
    assert "model refusing version 1: a batch of" not in server.log  # the bad request never joined one


def test_a_request_the_backend_fails_on_fails_alone(server: DropinServer, models: Path) -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.uniform(-10, 10, (1 + i % 3, 2)).astype(np.float32) for i in range(8)]
    inputs[5][0, 1] = 5000.0  # the model fails on this request's data, alone or batched
    futures = [server.client.predict_future("limited", {"x": x}) for x in inputs]
    errors = []
    for i, (x, future) in enumerate(zip(inputs, futures, strict=True)):
        if i == 5:
            with pytest.raises(grpc.RpcError) as info:
                future.result()
            errors.append(info.value)
            continue
        expected = reference(models / "limited" / "1", {"x": x})["y"]
        np.testing.assert_allclose(outputs_of(future.result())["y"], expected, rtol=1e-6)
    server.wait_for_log(r"model limited version 1: a batch of \d+ rows from [2-8] requests failed "
                        r"\(RuntimeError: x holds 5000\); running each request on its own")
    with pytest.raises(grpc.RpcError) as alone:  # what the request gets without batching
        server.client.predict("limited", {"x": inputs[5]})
    assert errors[0].code() == alone.value.code() == grpc.StatusCode.INTERNAL
    assert errors[0].details() == alone.value.details()
    assert alone.value.details() == "Internal inference error - backend numpy: RuntimeError: x holds 5000"


def test_a_model_without_a_dynamic_batch_dim_fails_its_load(server: DropinServer) -> None:
    server.wait_for("static", 1, "LOADING")
    deadline = time.monotonic() + 30
    while True:
        state, code, message = server.client.status("static")[1]
        if code != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert state == "LOADING" and code != 0
    assert message == "dynamic_batching needs a dynamic batch dimension on every input; input x has shape (1,10)"


def test_changing_dynamic_batching_in_config_json_reloads(
    start_server: Callable[..., DropinServer], tmp_path: Path
) -> None:
    repo = tmp_path / "models"
    dense_model(repo / "dense" / "1")
    config = repo / "config.json"

    def write(batching: dict | None) -> None:
        entry: dict[str, Any] = {"name": "dense", "base_path": "dense"}
        if batching is not None:
            entry["dynamic_batching"] = batching
        staged = tmp_path / "config.staged"
        staged.write_text(json.dumps({"model_config_list": [{"config": entry}]}))
        staged.replace(config)

    write(None)
    srv = start_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0.2")
    srv.wait_for("dense", 1)
    x = np.ones((2, 16), np.float32)
    plain = srv.client.predict("dense", {"x": x})["y"]
    write({"max_batch_size": 4, "batch_timeout_micros": 1000})
    srv.wait_for_log(r"model dense version 1: dynamic batching \(max_batch_size 4, batch_timeout_micros 1000\)")
    srv.wait_for_log(r"model dense version 1: reloaded")
    np.testing.assert_array_equal(srv.client.predict("dense", {"x": x})["y"], plain)
    write({"max_batch_size": 8, "batch_timeout_micros": 1000})
    srv.wait_for_log(r"model dense version 1: dynamic batching \(max_batch_size 8, batch_timeout_micros 1000\)")
    assert srv.log.count("configuration changed, reloading its versions") == 2
