"""The test kit's numpy backend in-process: its model format, its ops, its errors. (It also runs
the backend conformance suite, in test_conformance.py, and serves most core tests.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dropin.backend import LoadOptions
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.plugins import PluginHost
from dropin.testing import numpy_models
from dropin.testing.numpy_backend import GRAPH_FILE, ModelFormatError, NumpyBackend
from dropin.testing.numpy_models import NumpyModelWriter


def load(version_dir: Path, **options: object):  # type: ignore[no-untyped-def]
    return NumpyBackend().load(version_dir, LoadOptions(**options))  # type: ignore[arg-type]


def infer(model, inputs):  # type: ignore[no-untyped-def]
    return asyncio.run(model.infer(inputs))


def test_it_is_an_installed_plugin_that_claims_only_its_own_file(tmp_path: Path) -> None:
    host = PluginHost(allowed={"numpy"})
    host.load()
    backends = host.registries().backends
    assert backends.names() == ["numpy"] and backends.get("numpy") is NumpyBackend
    assert host.conformance_models().names() == ["numpy"]
    numpy_models.scale_model(tmp_path / "np")
    assert NumpyBackend.claims(tmp_path / "np")
    for name in ("model.xml", "model.onnx", "model.json", "saved_model.pb"):
        (tmp_path / name).mkdir()
        (tmp_path / name / name).write_bytes(b"")
        assert not NumpyBackend.claims(tmp_path / name), name


def test_models_compute_what_numpy_computes(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    model = load(numpy_models.dense_model(tmp_path / "dense"))
    out = infer(model, {"x": x})
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    np.testing.assert_array_equal(out["logits"], x @ w + b)
    np.testing.assert_array_equal(out["label"], np.argmax(x @ w + b, axis=-1))
    assert out["label"].dtype == np.int64 and out["logits"].dtype == np.float32
    assert {n: (s.dtype, s.shape_text()) for n, s in model.outputs.items()} == {
        "label": (DType.I64, "(-1)"), "logits": (DType.FP32, "(-1,3)")}
    model.close()

    gather = load(numpy_models.gather_model(tmp_path / "gather", rows=50, width=4))
    ids = np.array([3, 0, 49], np.int32)
    table = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    np.testing.assert_array_equal(infer(gather, {"ids": ids})["emb"], table[ids])
    gather.close()


def test_weights_are_mapped_from_the_version_directory(tmp_path: Path) -> None:
    version = numpy_models.gather_model(tmp_path / "1", rows=1000, width=8)
    model = load(version)
    table = model.graph.weights["table"]
    assert isinstance(table, np.memmap) and Path(table.filename) == version / "table.npy"
    model.close()


def test_dims_ranges_layouts_and_strings(tmp_path: Path) -> None:
    m = NumpyModelWriter()
    m.output(m.node("identity", m.input("x", DType.STRING, [(1, 4), -1], layout="NC")), "y", DType.STRING, [(1, 4), -1])
    model = load(m.save(tmp_path / "1"))
    assert model.inputs["x"].shape_text() == "([1~4],-1)" and model.inputs["x"].layout == "NC"
    x = np.array([[b"a", b"\0b"], [b"\xff", b""]], dtype=object)
    y = infer(model, {"x": x})["y"]
    assert y.dtype == object and y.tolist() == x.tolist()
    assert load(tmp_path / "1", layout="CN").inputs["x"].layout == "CN"
    with pytest.raises(ValueError, match="cannot transpose"):
        load(tmp_path / "1", layout="NC:CN")


def test_image_model_keeps_ranges_and_layout(tmp_path: Path) -> None:
    model = load(numpy_models.image_model(tmp_path / "1", (1, (16, 64), -1, 3), layout="NHWC", dtype=DType.U8))
    spec = model.inputs["x"]
    assert (spec.dtype, spec.shape_text(), spec.layout) == (DType.U8, "(1,[16~64],-1,3)", "NHWC")
    x = np.arange(1 * 16 * 2 * 3, dtype=np.uint8).reshape(1, 16, 2, 3)
    np.testing.assert_array_equal(infer(model, {"x": x})["y"], x)
    model.close()


def test_reject_rules_are_client_errors_in_check_inputs_and_infer(tmp_path: Path) -> None:
    m = NumpyModelWriter()
    m.output(m.node("identity", m.input("x", DType.I32, [-1])), "y", DType.I32, [-1])
    m.set(reject=[{"input": "x", "equals": 13, "message": "13 is refused"}])
    model = load(m.save(tmp_path / "1"))
    model.check_inputs({"x": np.array([1, 2], np.int32)})
    for call in (model.check_inputs, lambda inputs: infer(model, inputs)):
        with pytest.raises(DropinError) as info:
            call({"x": np.array([1, 13], np.int32)})
        assert info.value.status is Status.INVALID_VALUE and info.value.message.endswith("input x: 13 is refused")


def test_fail_if_fails_inference_on_the_given_data(tmp_path: Path) -> None:
    m = NumpyModelWriter()
    m.output(m.node("fail_if", m.input("x", DType.FP32, [-1]), equals=7.0, message="seven"), "y", DType.FP32, [-1])
    model = load(m.save(tmp_path / "1"))
    np.testing.assert_array_equal(infer(model, {"x": np.ones(3, np.float32)})["y"], np.ones(3, np.float32))
    with pytest.raises(RuntimeError, match="seven"):
        infer(model, {"x": np.array([7.0], np.float32)})


def test_delay_and_gate_slow_inference_without_blocking_the_loop(tmp_path: Path) -> None:
    gate = tmp_path / "open"
    m = NumpyModelWriter()
    m.output(m.node("identity", m.input("x", DType.FP32, [-1])), "y", DType.FP32, [-1])
    model = load(m.set(gate=str(gate), delay_seconds=0.05).save(tmp_path / "1"), nireq=2)
    assert model.streams == 2

    async def run() -> tuple[float, int]:
        started = time.monotonic()
        task = asyncio.ensure_future(model.infer({"x": np.ones(2, np.float32)}))
        ticks = 0
        while time.monotonic() - started < 0.2:  # the loop keeps running while the gate is shut
            await asyncio.sleep(0.01)
            ticks += 1
        assert not task.done()
        gate.write_text("")
        await task
        return time.monotonic() - started, ticks

    seconds, ticks = asyncio.run(run())
    assert seconds >= 0.25 and ticks >= 10
    model.close()


def test_load_gate_holds_the_load(tmp_path: Path) -> None:
    m = NumpyModelWriter()
    m.output(m.node("identity", m.input("x", DType.FP32, [-1])), "y", DType.FP32, [-1])
    version = m.set(load_gate=str(tmp_path / "release")).save(tmp_path / "1")
    started = time.monotonic()
    threading.Timer(0.2, (tmp_path / "release").write_text, [""]).start()
    load(version).close()
    assert time.monotonic() - started >= 0.2


@pytest.mark.parametrize(
    "graph, files, message",
    [
        ("{", {}, f"{GRAPH_FILE} is not valid JSON"),
        ("[]", {}, "must hold a JSON object"),
        ('{"inputs": {}, "outputs": {}}', {}, "at least one input and one output"),
        ('{"inputs": {"x": {"dtype": "FP8", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}}}', {},
         "input 'x': expected"),
        ('{"inputs": {"x": {"dtype": "FP32", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}}}', {},
         "output(s) y are computed by no node"),
        ('{"inputs": {"x": {"dtype": "FP32", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}},'
         ' "nodes": [{"op": "conv", "args": ["x"], "out": "y"}]}', {}, "node 0: unknown op 'conv'"),
        ('{"inputs": {"x": {"dtype": "FP32", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}},'
         ' "nodes": [{"op": "add", "args": ["x", "z"], "out": "y"}]}', {}, "node 0 (add): 'z' is not an input"),
        ('{"inputs": {"x": {"dtype": "FP32", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}},'
         ' "weights": {"w": "w.npy"}, "nodes": [{"op": "add", "args": ["x", "w"], "out": "y"}]}', {},
         "weight 'w': w.npy not found"),
        ('{"inputs": {"x": {"dtype": "FP32", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}},'
         ' "weights": {"w": "w.npy"}, "nodes": [{"op": "add", "args": ["x", "w"], "out": "y"}]}',
         {"w.npy": b"\x93NUMPY"},
         "weight 'w': w.npy is not a readable .npy file"),
        ('{"inputs": {"x": {"dtype": "FP32", "shape": [1]}}, "outputs": {"y": {"dtype": "FP32", "shape": [1]}},'
         ' "weights": {"w": "w.npy"}, "nodes": [{"op": "add", "args": ["x", "w"], "out": "y"}]}', {"w.npy": b"\0\0\0"},
         "weight 'w': w.npy is not an .npy file (no .npy header)"),
    ],
)
def test_a_broken_model_fails_to_load_with_the_reason(
    tmp_path: Path, graph: str, files: dict[str, bytes], message: str
) -> None:
    (tmp_path / GRAPH_FILE).write_text(graph)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(ModelFormatError) as info:
        load(tmp_path)
    assert message in str(info.value), str(info.value)


def test_options_it_cannot_honour_are_refused(tmp_path: Path) -> None:
    version = numpy_models.scale_model(tmp_path / "1", shape=(-1, 2))
    with pytest.raises(ValueError, match="target_device 'GPU' is not served by the numpy backend"):
        load(version, target_device="GPU")
    with pytest.raises(ValueError, match="cannot reshape models"):
        load(version, shape="(1,2)")
    with pytest.raises(ValueError, match="plugin_config NUM_STREAMS=1: unknown key"):
        load(version, plugin_config={"NUM_STREAMS": 1})
    assert load(version, plugin_config={"delay_seconds": 0.01}).delay == 0.01
    assert json.loads((version / GRAPH_FILE).read_text())["inputs"]["x"] == {"dtype": "FP32", "shape": [-1, 2]}
