"""The backend in-process, as the core drives it: `claims`, `load` (in a worker thread),
`infer` (on the event loop) and `close` (in a worker thread, once the version is drained)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropin.backend import Backend
from dropin.dtypes import DType
from dropin.shapes import Dim

from .support import Models, run, sample

X = np.arange(10, dtype=np.float32).reshape(5, 2) - 3.5


def expected_scale(x: np.ndarray, factor: float) -> np.ndarray:
    scaled: np.ndarray = x * np.float32(factor)
    return scaled


# -- claiming and loading ---------------------------------------------------------------------


def test_claims_its_models_and_not_an_empty_directory(
    backend_class: type[Backend], conformance_models: Models, tmp_path: Path
) -> None:
    assert backend_class.claims(conformance_models.scale()) is True
    assert not backend_class.claims(tmp_path)
    assert isinstance(getattr(backend_class, "priority", 0), int)


def test_loading_a_directory_without_a_model_raises_with_a_message(
    backend: Backend, load_options: Any, tmp_path: Path
) -> None:
    (tmp_path / "README.txt").write_text("not a model")
    with pytest.raises(Exception) as info:
        backend.load(tmp_path, load_options)
    assert str(info.value).strip(), "the error message is shown in GetModelStatus: say what is wrong"


def test_loading_corrupt_files_raises_with_a_message(
    backend: Backend, load_options: Any, conformance_models: Models, tmp_path: Path
) -> None:
    corrupt = tmp_path / "1"
    shutil.copytree(conformance_models.scale(), corrupt)
    for path in sorted(corrupt.rglob("*")):
        if path.is_file():
            path.write_bytes(b"\x00\x01 not a model \xff" * 3)
    with pytest.raises(Exception) as info:
        backend.load(corrupt, load_options).close()
    assert str(info.value).strip()


def test_load_and_close_repeatedly(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        model = load(conformance_models.scale())
        np.testing.assert_array_equal(run(model.infer({"x": X}))["y"], expected_scale(X, 2.0))
        model.close()


# -- metadata and dynamic shapes --------------------------------------------------------------


def test_metadata_reports_names_dtypes_and_dynamic_dims(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.scale(shape=(-1, 2)))
    assert set(model.inputs) == {"x"} and set(model.outputs) == {"y"}
    x, y = model.inputs["x"], model.outputs["y"]
    assert x.name == "x" and y.name == "y"
    assert x.dtype is DType.FP32 and y.dtype is DType.FP32
    assert x.shape == (Dim.dynamic(), Dim.static(2)) and x.shape_text() == "(-1,2)"
    assert y.rank == 2 and y.shape[1] == Dim.static(2) and y.shape[0].metadata_size == -1

    model = load(conformance_models.scale(factor=3.0, shape=(-1, -1)))
    assert model.inputs["x"].shape == (Dim.dynamic(), Dim.dynamic())
    assert [d.metadata_size for d in model.outputs["y"].shape] == [-1, -1]


@pytest.mark.parametrize("rows", [1, 2, 7, 64])
def test_dynamic_batch(load, conformance_models: Models, rows: int) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.scale())
    x = np.random.default_rng(rows).standard_normal((rows, 2)).astype(np.float32)
    out = run(model.infer({"x": x}))
    assert set(out) == {"y"}
    assert out["y"].dtype == np.float32 and out["y"].shape == (rows, 2)
    np.testing.assert_array_equal(out["y"], expected_scale(x, 2.0))


def test_every_dim_dynamic(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.scale(factor=3.0, shape=(-1, -1)))
    for shape in [(1, 1), (3, 7), (8, 100), (2, 1)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(run(model.infer({"x": x}))["y"], expected_scale(x, 3.0))


def test_read_only_inputs_are_accepted(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    # the core hands over np.frombuffer views of the request's bytes: read-only arrays
    model = load(conformance_models.scale())
    view = np.frombuffer(X.tobytes(), dtype=np.float32).reshape(X.shape)
    assert not view.flags.writeable
    np.testing.assert_array_equal(run(model.infer({"x": view}))["y"], expected_scale(X, 2.0))
    np.testing.assert_array_equal(view, X)  # and never written into


# -- every dtype ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DType), ids=[d.value for d in DType])
def test_identity_of_every_declared_dtype(load, conformance_models: Models, dtype: DType) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.identity(dtype))
    assert model.inputs["x"].dtype is dtype and model.outputs["y"].dtype is dtype
    assert model.inputs["x"].shape_text() == "(-1,3)"
    for rows in (1, 4):
        x = sample(dtype, rows, seed=rows)
        y = run(model.infer({"x": x}))["y"]
        assert y.shape == (rows, 3)
        if dtype is DType.STRING:
            assert y.dtype == object and all(isinstance(v, bytes) for v in y.flat), y
            assert y.tolist() == x.tolist()
        else:
            assert y.dtype == dtype.numpy, f"{y.dtype} returned for {dtype.value}"
            np.testing.assert_array_equal(y, x)
            if dtype.numpy.kind == "f":  # the sign of -0.0 survives too
                np.testing.assert_array_equal(np.signbit(y), np.signbit(x))


# -- errors -----------------------------------------------------------------------------------


def test_failing_inference_raises_and_the_next_request_works(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.failing())
    assert model.inputs["x"].dtype is DType.FP32

    async def main() -> None:
        with pytest.raises(Exception) as info:
            await model.infer({"x": np.ones(7, np.float32)})  # raises, never hangs (run() times out)
        assert str(info.value).strip(), "the message reaches the client: say what failed"
        await model.infer({"x": np.ones(6, np.float32)})
        outcomes = await asyncio.gather(
            *(model.infer({"x": np.ones(7 if i % 3 == 0 else 9, np.float32)}) for i in range(30)),
            return_exceptions=True,
        )
        for i, outcome in enumerate(outcomes):
            assert isinstance(outcome, Exception) == (i % 3 == 0), (i, outcome)
        await model.infer({"x": np.ones(3, np.float32)})  # still serving after all of that

    run(main())


@pytest.mark.parametrize(
    "inputs",
    [{"nope": X}, {}, {"x": X, "extra": X}],
    ids=["unknown input name", "no inputs", "an extra input"],
)
def test_inputs_the_core_would_never_send_raise_or_are_ignored(load, conformance_models: Models, inputs) -> None:  # type: ignore[no-untyped-def]
    # The core validates requests first; a backend must still fail cleanly (an exception, no
    # crash, no hang) when infer gets something else, e.g. from a faulty preprocessor.
    model = load(conformance_models.scale())

    async def main() -> None:
        try:
            out = await model.infer(inputs)
        except Exception:
            pass
        else:
            assert "x" in inputs, f"infer without input x returned {out}"
        np.testing.assert_array_equal((await model.infer({"x": X}))["y"], expected_scale(X, 2.0))

    run(main())


# -- concurrency and the event loop -----------------------------------------------------------


def test_many_requests_in_flight_are_all_exact(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.scale())
    batches = [np.random.default_rng(i).standard_normal((1 + i % 9, 2)).astype(np.float32) for i in range(64)]

    async def main() -> list:  # type: ignore[type-arg]
        return await asyncio.gather(*(model.infer({"x": b}) for b in batches))

    for out, batch in zip(run(main()), batches, strict=True):
        np.testing.assert_array_equal(out["y"], expected_scale(batch, 2.0))


def test_infer_never_blocks_the_event_loop(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    # While requests run, the loop keeps turning: inference runs in threads (or the runtime's
    # own async API), never in the coroutine itself.
    model = load(conformance_models.scale())
    big = np.random.default_rng(0).standard_normal((1 << 20, 2)).astype(np.float32)

    async def main() -> int:
        ticks = 0
        task = asyncio.ensure_future(asyncio.gather(*(model.infer({"x": big}) for _ in range(4))))
        while not task.done():
            await asyncio.sleep(0)
            ticks += 1
        for out in await task:
            np.testing.assert_array_equal(out["y"], expected_scale(big, 2.0))
        return ticks

    ticks = run(main())
    assert ticks >= 20, f"the event loop turned only {ticks} times during 4 large requests: infer blocks it"


def test_close_waits_for_requests_in_flight(load, conformance_models: Models) -> None:  # type: ignore[no-untyped-def]
    model = load(conformance_models.scale())
    batches = [np.random.default_rng(i).standard_normal((4096, 2)).astype(np.float32) for i in range(24)]

    async def main() -> None:
        pending = [asyncio.ensure_future(model.infer({"x": b})) for b in batches]
        await asyncio.sleep(0)  # every request has been handed to the backend
        await asyncio.to_thread(model.close)  # the core closes in a worker thread
        for _ in range(10):  # let finished requests' coroutines return
            await asyncio.sleep(0)
        assert all(p.done() for p in pending), "close() returned while requests were still running"
        for got, batch in zip(await asyncio.gather(*pending), batches, strict=True):
            np.testing.assert_array_equal(got["y"], expected_scale(batch, 2.0))
        with pytest.raises(Exception):  # noqa: B017 (the contract names no exception type for this)
            await model.infer({"x": X})  # a closed model refuses, cleanly

    run(main())
    model.close()  # a second close is harmless
