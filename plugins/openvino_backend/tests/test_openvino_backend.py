"""The OpenVINO backend plugin in-process: `OpenVINOBackend().load(...)` and `model.infer(...)`,
compared with the same model compiled by OpenVINO directly (INFERENCE_PRECISION_HINT f32, so the
results must be bit-for-bit equal)."""

from __future__ import annotations

import asyncio
import threading
from asyncio import run
from pathlib import Path

import numpy as np
import pytest

import dropin_openvino.serving
import dropin_openvino.tensors
from dropin.backend import LoadOptions
from dropin.dtypes import DType
from dropin.shapes import Dim
from dropin_openvino.backend import OpenVINOBackend, find_model_file
from dropin_openvino.modelgen import DIGITS, LABELS, save_fails_on_7
from dropin_openvino.modelgen import DIGITS_F32 as F32
from dropin_openvino.modelgen import assert_same_digits as assert_same
from dropin_openvino.modelgen import digit_images as images
from dropin_openvino.serving import InferenceError, OpenVINOModel
from dropin_openvino.tensors import INLINE_BYTES

# -- model file detection ---------------------------------------------------------------------

ALL_FORMATS = ["model.xml", "model.bin", "model.onnx", "m.pdmodel", "m.pdiparams", "frozen.pb", "m.tflite"]


@pytest.mark.parametrize(
    ("files", "found"),
    [
        pytest.param(ALL_FORMATS, "model.xml", id="IR first"),
        pytest.param(ALL_FORMATS[2:], "model.onnx", id="ONNX before Paddle, TF, TFLite"),
        pytest.param(["model.xml", *ALL_FORMATS[2:]], "model.onnx", id="IR needs its .bin"),
        pytest.param(ALL_FORMATS[3:], "m.pdmodel", id="Paddle before TF, TFLite"),
        pytest.param(["m.pdmodel", "frozen.pb", "m.tflite"], "frozen.pb", id="Paddle needs its .pdiparams"),
        pytest.param(["frozen.pb", "m.tflite"], "frozen.pb", id="TF before TFLite"),
        pytest.param(["saved_model.pb", "m.tflite"], ".", id="saved_model.pb: the directory"),
        pytest.param(["m.tflite", "model.bin", "notes.txt"], "m.tflite", id="TFLite"),
        pytest.param(["b.onnx", "a.onnx"], "a.onnx", id="names are free, the first sorted wins"),
        pytest.param(["weights.bin", "net.xml"], "net.xml", id="IR with another .bin name"),
        pytest.param(["notes.txt", "model.bin", "m.pdiparams"], None, id="no model"),
        pytest.param([], None, id="empty"),
    ],
)
def test_find_model_file_detection_order(tmp_path: Path, files: list[str], found: str | None) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"")
    expected = None if found is None else (tmp_path if found == "." else tmp_path / found)
    assert find_model_file(tmp_path) == expected
    assert OpenVINOBackend.claims(tmp_path) is (found is not None)


def test_find_model_file_ignores_directories_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()  # a directory named like a model file is not one
    assert find_model_file(tmp_path) is None
    assert find_model_file(tmp_path / "missing") is None
    (tmp_path / "file.onnx").write_bytes(b"")
    assert find_model_file(tmp_path / "file.onnx") is None  # a file is not a version directory


def test_find_model_file_on_the_demo_model() -> None:
    assert find_model_file(DIGITS) == DIGITS / "model.xml"
    assert OpenVINOBackend.claims(DIGITS)
    assert not OpenVINOBackend.claims(DIGITS.parent.parent)  # models/: no model file of its own


def test_load_picks_the_ir_over_an_onnx_file_with_free_names(backend: OpenVINOBackend, tmp_path: Path) -> None:
    save_fails_on_7(tmp_path, "network")
    (tmp_path / "network.bin").rename(tmp_path / "weights.bin")  # the .bin need not share the stem
    (tmp_path / "aaa.onnx").write_bytes(b"not an onnx model")  # would fail to read if chosen
    loaded = backend.load(tmp_path, LoadOptions(nireq=1))
    try:
        out = run(loaded.infer({"x": np.arange(6, dtype=np.float32)}))
        np.testing.assert_array_equal(out["y"], np.arange(6, dtype=np.float32).reshape(3, 2))
    finally:
        loaded.close()


def test_load_reads_an_onnx_file_found_by_name(backend: OpenVINOBackend, tmp_path: Path) -> None:
    # No onnx package here to build a real one: a broken .onnx shows it is the file chosen and read.
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match=r"^OpenVINO could not read broken\.onnx: "):
        backend.load(tmp_path, LoadOptions())


def test_load_of_a_directory_without_a_model(backend: OpenVINOBackend, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"no model file found in .*: expected \.xml\+\.bin, \.onnx"):
        backend.load(tmp_path, LoadOptions())


def mapped_files() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}


@pytest.mark.parametrize("mmap", [None, False], ids=["default", "ENABLE_MMAP false"])
def test_enable_mmap_in_plugin_config_decides_whether_the_weights_are_mapped(
    backend: OpenVINOBackend, tmp_path: Path, mmap: bool | None
) -> None:
    # OpenVINO maps weights when it reads a model, not when it compiles it: the option must reach
    # read_model (the server loads from a private copy either way: see dropin/private_copy.py)
    from dropin_openvino import modelgen

    modelgen.gather_model(tmp_path, rows=4096, width=64, seed=3)
    config = {**F32, **({} if mmap is None else {"ENABLE_MMAP": mmap})}
    loaded = backend.load(tmp_path, LoadOptions(plugin_config=config, nireq=1))
    try:
        assert (str(tmp_path / "model.bin") in mapped_files()) == (mmap is None)
        ids = np.array([0, 7, 4095], np.int32)
        np.testing.assert_array_equal(
            run(loaded.infer({"ids": ids}))["emb"], modelgen.run_openvino(tmp_path, {"ids": ids})["emb"]
        )
    finally:
        loaded.close()


# -- serving the demo model -------------------------------------------------------------------


def test_demo_model_metadata(model: OpenVINOModel) -> None:
    image = model.inputs["image"]
    assert image.shape == (Dim.dynamic(), Dim.static(8), Dim.static(8), Dim.static(1))
    assert image.layout == "NHWC"
    assert image.dtype is DType.FP32
    assert model.outputs["probabilities"].dtype is DType.FP32 and model.outputs["label"].dtype is DType.I64
    assert model.outputs["probabilities"].shape_text() == "(-1,10)"
    assert model.outputs["label"].shape_text() == "(-1)"
    assert model.nireq >= 1


def test_batch_of_5_equals_openvino(model: OpenVINOModel, expected) -> None:  # type: ignore[no-untyped-def]
    batch = images(5)
    got = run(model.infer({"image": batch}))
    assert_same(got, expected(batch))
    assert got["label"].tolist() == LABELS[:5]
    assert got["probabilities"].dtype == np.float32 and got["label"].dtype == np.int64


@pytest.mark.parametrize("n", [1, 7])
def test_dynamic_batch(model: OpenVINOModel, expected, n: int) -> None:  # type: ignore[no-untyped-def]
    batch = images(n, start=3)
    got = run(model.infer({"image": batch}))
    assert got["probabilities"].shape == (n, 10) and got["label"].shape == (n,)
    assert_same(got, expected(batch))


def test_read_only_inputs_are_accepted(model: OpenVINOModel, expected) -> None:  # type: ignore[no-untyped-def]
    # The core passes np.frombuffer views of the request bytes: read-only arrays.
    batch = images(3)
    view = np.frombuffer(batch.tobytes(), dtype=np.float32).reshape(batch.shape)
    assert not view.flags.writeable
    assert_same(run(model.infer({"image": view})), expected(batch))


def test_copied_shared_and_reshaped_inputs_in_any_order_are_exact(model: OpenVINOModel, expected) -> None:  # type: ignore[no-untyped-def]
    # Each infer request owns input tensors that small and read-only inputs are copied into, and
    # shares large writable arrays instead: every switch between the two, and every change of
    # batch, must compute on this request's data.
    big = 1 + dropin_openvino.tensors.SHARE_BYTES // (64 * 4)  # writable and over the limit: shared
    inputs = []
    for i, n in enumerate([1, 3, big, 3, 1, big + 2, 2, 2]):
        batch = images(n, start=i)
        if i % 2:
            batch = np.frombuffer(batch.tobytes(), dtype=np.float32).reshape(batch.shape)  # read-only: copied
        inputs.append(batch)
    inputs.append(np.asfortranarray(images(4, start=9)))  # not contiguous: copied
    for batch in inputs * 2:
        assert_same(run(model.infer({"image": batch})), expected(np.ascontiguousarray(batch)))


def test_50_concurrent_infers_are_all_exact(model: OpenVINOModel, expected) -> None:  # type: ignore[no-untyped-def]
    batches = [images(1 + i % 7, start=i) for i in range(50)]

    async def all_at_once():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(model.infer({"image": b}) for b in batches))

    results = run(all_at_once())
    assert len(results) == 50
    for got, batch in zip(results, batches, strict=True):
        assert_same(got, expected(batch))


def test_unknown_input_name(model: OpenVINOModel) -> None:
    with pytest.raises(KeyError, match=r"the model has no input 'nope' \(inputs: image\)"):
        run(model.infer({"nope": images(1)}))


def test_inference_runs_off_the_event_loop_thread(model: OpenVINOModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_inline_ewma", 1.0)  # a slow model (the tiny digits model may run inline)
    seen: list[str] = []
    original = model._slot_for

    def spy(feed):  # type: ignore[no-untyped-def]
        seen.append(threading.current_thread().name)
        return original(feed)

    monkeypatch.setattr(model, "_slot_for", spy)

    async def main() -> str:
        await asyncio.gather(*(model.infer({"image": images(2, start=i)}) for i in range(10)))
        return threading.current_thread().name

    loop_thread = run(main())
    assert len(seen) == 10
    assert loop_thread not in seen
    assert all(name.startswith("dropin-openvino") for name in seen), seen


def test_the_event_loop_runs_while_a_request_is_inside_openvino(
    model: OpenVINOModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The request blocks until the loop releases it: that only works if the loop is free meanwhile.
    monkeypatch.setattr(model, "_inline_ewma", 1.0)  # a slow model
    entered, release = threading.Event(), threading.Event()
    released_in_time: list[bool] = []
    original = model._slot_for

    def blocking_spy(feed):  # type: ignore[no-untyped-def]
        entered.set()
        released_in_time.append(release.wait(10))
        return original(feed)

    monkeypatch.setattr(model, "_slot_for", blocking_spy)

    async def main() -> None:
        task = asyncio.ensure_future(model.infer({"image": images(1)}))
        assert await asyncio.to_thread(entered.wait, 10)
        release.set()
        await task

    run(main())
    assert released_in_time == [True]


def test_fast_inferences_run_inline_on_the_event_loop(
    backend: OpenVINOBackend, expected, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # the mechanism, not the tuning: on a busy machine a digits batch of 7 may average over 100 us
    monkeypatch.setattr(dropin_openvino.serving, "INLINE_SECONDS", 0.05)
    fresh = backend.load(DIGITS, LoadOptions(plugin_config=F32))
    threads: list[str] = []
    original = fresh._slot_for

    def spy(feed):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return original(feed)

    fresh._slot_for = spy  # type: ignore[method-assign]

    async def main() -> None:
        for i in range(200):  # every model starts in the threads, measured
            assert_same(await fresh.infer({"image": images(1, start=i)}), expected(images(1, start=i)))
        in_threads = len(threads)
        assert 0 < in_threads < 200, "a digits inference takes well under 50 ms: it must move onto the loop"
        for i in range(20):  # inline now: exact, and no thread
            got = await fresh.infer({"image": images(1 + i % 7, start=i)})
            assert_same(got, expected(images(1 + i % 7, start=i)))
        assert len(threads) == in_threads
        fresh._inline_ewma = 0.0
        in_threads = len(threads)
        big = np.zeros((INLINE_BYTES // (8 * 8 * 4) + 1, 8, 8, 1), np.float32)  # large inputs: a thread
        await fresh.infer({"image": big})
        assert len(threads) == in_threads + 1
        # concurrent requests beyond the free infer requests queue in the threads, all exact
        batches = [images(1 + i % 7, start=i) for i in range(30)]
        results = await asyncio.gather(*(fresh.infer({"image": b}) for b in batches))
        for got, batch in zip(results, batches, strict=True):
            assert_same(got, expected(batch))

    try:
        run(main())
    finally:
        fresh.close()


def test_a_request_of_the_shape_before_goes_straight_into_the_free_infer_request(
    backend: OpenVINOBackend, expected, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    # `InferSlot.fill`: the common request copied into the slot's own tensors without
    # `set_inputs`; any other request (another shape, a missing or unknown input) takes the
    # general path, on the loop and in a handler thread (`infer_now`), and every answer is exact
    fresh = backend.load(DIGITS, LoadOptions(plugin_config=F32, nireq=1))
    fresh._inline_ewma = 0.0  # as if measured fast
    general: list[tuple[int, ...]] = []
    original = dropin_openvino.tensors.InferSlot.set_inputs

    def spy(slot, feed, types):  # type: ignore[no-untyped-def]
        general.extend(a.shape for a in feed.values())
        original(slot, feed, types)

    monkeypatch.setattr(dropin_openvino.tensors.InferSlot, "set_inputs", spy)

    async def main() -> None:
        for batch, start, path in [(3, 0, [(3, 8, 8, 1)]), (3, 5, []), (2, 9, [(2, 8, 8, 1)]), (2, 1, [])]:
            before = len(general)
            assert_same(await fresh.infer({"image": images(batch, start=start)}), expected(images(batch, start=start)))
            assert general[before:] == path
        with pytest.raises(KeyError, match=r"missing input\(s\) image"):
            await fresh.infer({})
        with pytest.raises(KeyError, match=r"the model has no input 'nope'"):
            await fresh.infer({"nope": images(2)})
        assert_same(await fresh.infer({"image": images(2, start=4)}), expected(images(2, start=4)))

    try:
        run(main())
        before = len(general)
        assert_same(fresh.infer_now({"image": images(2, start=6)}), expected(images(2, start=6)))
        assert_same(fresh.infer_now({"image": images(5, start=2)}), expected(images(5, start=2)))
        assert general[before:] == [(5, 8, 8, 1)]
        assert fresh._requests.qsize() == 1  # the one infer request is back in the pool
    finally:
        fresh.close()


def test_an_inline_inference_that_fails_raises_and_the_next_works(backend: OpenVINOBackend, tmp_path: Path) -> None:
    failing = backend.load(save_fails_on_7(tmp_path), LoadOptions(nireq=1))
    failing._inline_ewma = 0.0  # as if measured fast

    async def main() -> None:
        with pytest.raises(InferenceError, match="^OpenVINO inference failed: "):
            await failing.infer({"x": np.ones(7, np.float32)})
        ok = await failing.infer({"x": np.arange(6, dtype=np.float32)})
        np.testing.assert_array_equal(ok["y"], np.arange(6, dtype=np.float32).reshape(3, 2))
        assert failing._inline_ewma < 1e-3  # still inline
        assert failing._requests.qsize() == 1  # the request went back to the pool both times

    try:
        run(main())
    finally:
        failing.close()


# -- inference errors -------------------------------------------------------------------------


def test_failing_inference_raises_and_the_next_request_works(backend: OpenVINOBackend, tmp_path: Path) -> None:
    failing = backend.load(save_fails_on_7(tmp_path), LoadOptions(nireq=1))

    async def main() -> None:
        with pytest.raises(InferenceError) as info:
            await asyncio.wait_for(failing.infer({"x": np.ones(7, np.float32)}), 10)  # raises, never hangs
        message = str(info.value)
        assert message.startswith("OpenVINO inference failed: ")
        assert "reshape" in message.lower() and "(7)" in message
        assert ".cpp" not in message and "\n" not in message  # OpenVINO's source locations are cut

        ok = await asyncio.wait_for(failing.infer({"x": np.arange(6, dtype=np.float32)}), 10)
        np.testing.assert_array_equal(ok["y"], np.arange(6, dtype=np.float32).reshape(3, 2))

        outcomes = await asyncio.gather(
            *(failing.infer({"x": np.ones(7 if i % 3 == 0 else 9, np.float32)}) for i in range(30)),
            return_exceptions=True,
        )
        for i, outcome in enumerate(outcomes):
            if i % 3 == 0:
                assert isinstance(outcome, InferenceError)
            else:
                assert isinstance(outcome, dict) and outcome["y"].shape == (3, 3)

    try:
        run(main())
    finally:
        failing.close()


# -- close ------------------------------------------------------------------------------------


def test_close_waits_for_requests_in_flight_and_later_infers_raise(
    backend: OpenVINOBackend, expected, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    busy = backend.load(DIGITS, LoadOptions(plugin_config=F32, nireq=2))
    finished: list[int] = []
    original = busy._run

    def counting(slot, feed):  # type: ignore[no-untyped-def]
        result = original(slot, feed)
        finished.append(1)
        return result

    monkeypatch.setattr(busy, "_run", counting)
    batches = [images(7, start=i) for i in range(20)]

    async def main() -> None:
        pending = [asyncio.ensure_future(busy.infer({"image": b})) for b in batches]
        await asyncio.sleep(0)  # every request is handed to the pool (2 threads: most are queued)
        await asyncio.to_thread(busy.close)  # the core calls close() in a worker thread
        assert len(finished) == 20  # close() returned only after every request in flight ran
        for got, batch in zip(await asyncio.gather(*pending), batches, strict=True):
            assert_same(got, expected(batch))
        with pytest.raises(RuntimeError, match=r"^model .*digits.* is closed$"):
            await busy.infer({"image": images(1)})

    run(main())
    busy.close()  # a second close() is harmless
