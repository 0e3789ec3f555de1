"""Dynamic batching in gRPC handler threads (batching_now.py): the loop's rules, without the loop.
The served behaviour (gRPC and REST answers, errors, metrics) is tested end to end in
test_batching_dynamic.py, whose gRPC requests take this path."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from dropin.backend import InferOutputs, LoadedModel
from dropin.batching import BatchingModel
from dropin.config import DynamicBatching
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.shapes import TensorSpec


class ThreadModel(LoadedModel):
    """y = x * 2, in the calling thread; records every batch it runs and the thread it ran in."""

    infers_now = True

    def __init__(self) -> None:
        self._inputs = {"x": TensorSpec.of("x", DType.FP32, (-1, 3))}
        self._outputs = {"y": TensorSpec.of("y", DType.FP32, (-1, 3))}
        self.calls: list[tuple[tuple[int, ...], str]] = []
        self.fail_on_negative: Exception | None = None
        self.fail: Exception | None = None
        self.bad_output = False
        self._lock = threading.Lock()

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return self.infer_now(inputs)

    def infer_now(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        x = inputs["x"]
        with self._lock:
            self.calls.append((x.shape, threading.current_thread().name))
        if self.fail is not None:
            raise self.fail
        if self.fail_on_negative is not None and (x < 0).any():
            raise self.fail_on_negative
        y = x * 2
        return InferOutputs({"y": y[:1] if self.bad_output else y}, 0.0, 0.001)


def batching(model: ThreadModel, size: int = 8, micros: int = 200_000) -> BatchingModel:
    return BatchingModel(model, DynamicBatching(size, micros), "model fake version 1", "fake")


def rows(n: int, first: float = 0.0) -> np.ndarray:
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3) + first


def at_once(model: BatchingModel, inputs: list[np.ndarray]) -> list[Any]:
    """Every request from a thread of its own, released together; exceptions in place of results."""
    start = threading.Barrier(len(inputs))

    def call(x: np.ndarray) -> Any:
        start.wait()
        try:
            return model.infer_now({"x": x})
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(call, inputs))


def test_the_wrapper_infers_now_when_its_model_does() -> None:
    assert batching(ThreadModel()).infers_now
    plain = ThreadModel()
    plain.infers_now = False
    assert not batching(plain).infers_now


def test_a_full_group_runs_at_once_in_one_of_its_threads() -> None:
    fake = ThreadModel()
    model = batching(fake, size=8, micros=5_000_000)  # only filling the group can run it in time
    xs = [rows(1, 10 * i) for i in range(8)]
    started = time.monotonic()
    results = at_once(model, xs)
    assert time.monotonic() - started < 4
    assert [shape for shape, _ in fake.calls] == [(8, 3)]
    assert fake.calls[0][1].startswith("ThreadPoolExecutor")  # a request's own thread ran it
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)
        assert result.batch_run.size == 8 and result.batch_run.requests == 8


def test_a_group_that_does_not_fill_runs_when_its_timeout_passes() -> None:
    fake = ThreadModel()
    model = batching(fake, size=8, micros=50_000)
    xs = [rows(2, i) for i in range(3)]
    started = time.monotonic()
    results = at_once(model, xs)
    assert time.monotonic() - started >= 0.05
    assert [shape for shape, _ in fake.calls] == [(6, 3)]
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)
        assert result.wait_seconds >= 0.045  # the time in the group counts as waiting


def test_a_request_that_would_overflow_starts_the_next_group() -> None:
    fake = ThreadModel()
    model = batching(fake, size=4, micros=50_000)
    first = model.infer_now  # two requests one after the other: 3 rows, then 3 rows
    with ThreadPoolExecutor(2) as pool:
        a = pool.submit(first, {"x": rows(3)})
        time.sleep(0.01)
        b = pool.submit(first, {"x": rows(3, 100)})
        np.testing.assert_array_equal(a.result()["y"], rows(3) * 2)
        np.testing.assert_array_equal(b.result()["y"], rows(3, 100) * 2)
    assert [shape for shape, _ in fake.calls] == [(3, 3), (3, 3)]


def test_a_request_as_large_as_the_batch_runs_alone() -> None:
    fake = ThreadModel()
    model = batching(fake, size=4, micros=5_000_000)
    np.testing.assert_array_equal(model.infer_now({"x": rows(4)})["y"], rows(4) * 2)
    assert [shape for shape, _ in fake.calls] == [(4, 3)]


def test_a_failed_batch_reruns_each_request_in_its_own_thread_so_only_the_culprit_fails() -> None:
    for error in (RuntimeError("negative input"), DropinError(Status.INVALID_VALUE_COUNT, "negative input")):
        fake = ThreadModel()
        fake.fail_on_negative = error
        model = batching(fake, size=6, micros=5_000_000)
        xs = [rows(1, 10 * i) for i in range(6)]
        xs[2] = -rows(1, 1)
        results = at_once(model, xs)
        shapes = [shape for shape, _ in fake.calls]
        assert shapes == [(6, 3)] + [(1, 3)] * 6  # the batch, then each request once, alone
        assert len({name for _, name in fake.calls[1:]}) == 6  # each in its own thread
        assert type(results[2]) is type(error) and str(results[2]) == str(error)
        for i in (0, 1, 3, 4, 5):
            np.testing.assert_array_equal(results[i]["y"], xs[i] * 2)
            assert results[i].batch_run.requests == 1


def test_a_failure_the_backend_calls_its_own_fails_every_request_once() -> None:
    fake = ThreadModel()
    fake.fail = DropinError(Status.INTERNAL_ERROR, "the device is gone")
    results = at_once(batching(fake, size=3, micros=5_000_000), [rows(1, i) for i in range(3)])
    assert [shape for shape, _ in fake.calls] == [(3, 3)]
    assert len({id(r) for r in results}) == 3  # each request raises its own copy
    for result in results:
        assert isinstance(result, DropinError) and result.status is Status.INTERNAL_ERROR
        assert result.details == "the device is gone"


def test_outputs_that_cannot_be_split_fail_every_request_clearly() -> None:
    fake = ThreadModel()
    fake.bad_output = True
    results = at_once(batching(fake, size=2, micros=5_000_000), [rows(1), rows(1, 5)])
    for result in results:
        assert isinstance(result, DropinError) and result.status is Status.INTERNAL_ERROR
        assert "output y of a batch of 2 has shape (1, 3)" in result.details


def test_many_threads_many_groups_every_request_gets_its_own_rows() -> None:
    fake = ThreadModel()
    model = batching(fake, size=5, micros=2_000)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((int(rng.integers(1, 4)), 3)).astype(np.float32) for _ in range(400)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda x: model.infer_now({"x": x}), xs))
    for x, result in zip(xs, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)
    assert len(fake.calls) < len(xs)  # batched
    assert max(shape[0] for shape, _ in fake.calls) <= 5


def test_a_group_holding_every_handler_thread_runs_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # 4 handler threads, all in one group of a 16-row batch: nobody can join it, so it runs now
    from dropin import batching_now

    monkeypatch.setattr(batching_now, "handler_threads", 4)
    fake = ThreadModel()
    model = batching(fake, size=16, micros=5_000_000)
    started = time.monotonic()
    results = at_once(model, [rows(1, i) for i in range(4)])
    assert time.monotonic() - started < 4
    assert [shape for shape, _ in fake.calls] == [(4, 3)]
    assert all(r.batch_run.requests == 4 for r in results)
