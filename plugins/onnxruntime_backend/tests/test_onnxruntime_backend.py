"""The ONNX Runtime backend plugin: in-process (files, metadata, options, strings, errors) and in
the real server, where the same .onnx model served by ONNX Runtime and by OpenVINO must answer alike."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dropin.backend import LoadOptions
from dropin.config import ModelConfig
from dropin.dtypes import DType
from dropin.errors import DropinError
from dropin.loader import Loader
from dropin.plugins import PluginHost
from dropin.shapes import Dim
from dropin.testing import ModelRepository
from dropin_onnxruntime.backend import InferenceError, OnnxRuntimeBackend, find_model_file, make_session_options
from dropin_onnxruntime.testing import OnnxConformanceModels

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 30))


def mlp_model(version_dir: Path, seed: int = 0) -> Path:
    """image: FP32 [batch, 8] -> probabilities FP32 [batch, 4] (dense, relu, dense, softmax) and
    label I64 [batch] (argmax): a small real network with random weights."""
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["image", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        helper.make_node("ArgMax", ["logits"], ["label"], axis=-1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
        initializer=[w1, b1, w2],
    )
    version_dir.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(version_dir / "model.onnx"))
    return version_dir


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


# -- files and claims -------------------------------------------------------------------------


def test_claims_onnx_files_only(tmp_path: Path) -> None:
    assert find_model_file(tmp_path) is None and not OnnxRuntimeBackend.claims(tmp_path)
    (tmp_path / "model.xml").write_text("")
    (tmp_path / "dir.onnx").mkdir()  # a directory named like a model is not one
    assert not OnnxRuntimeBackend.claims(tmp_path)
    (tmp_path / "b.onnx").write_bytes(b"")
    (tmp_path / "a.onnx").write_bytes(b"")
    assert find_model_file(tmp_path) == tmp_path / "a.onnx"
    assert find_model_file(tmp_path / "missing") is None


def registries(blocked: set[str]):  # type: ignore[no-untyped-def]
    host = PluginHost(blocked=blocked)
    host.load()
    return host.registries()


def test_openvino_claims_onnx_first_and_onnxruntime_when_openvino_is_blocked(tmp_path: Path) -> None:
    mlp_model(tmp_path / "1")
    config = ModelConfig("m", str(tmp_path))
    both = Loader(registries(set()))
    assert both.choose_backend(config, tmp_path / "1") == "openvino"
    assert both.choose_backend(ModelConfig("m", str(tmp_path), backend="onnxruntime"), tmp_path / "1") == "onnxruntime"
    alone = Loader(registries({"openvino"}))
    assert alone.choose_backend(config, tmp_path / "1") == "onnxruntime"


def test_load_errors_say_what_is_wrong(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"^no \.onnx file found in "):
        backend.load(tmp_path, LoadOptions())
    (tmp_path / "broken.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match=r"^ONNX Runtime could not load broken\.onnx: ") as info:
        backend.load(tmp_path, LoadOptions())
    assert "[ONNXRuntimeError]" not in str(info.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            LoadOptions(target_device="GPU"),
            r"^target_device 'GPU' is not served by the onnxruntime backend \(devices: CPU\)$",
        ),
        (LoadOptions(shape="(1,8)"), r"^shape '\(1,8\)': the onnxruntime backend cannot reshape models"),
        (LoadOptions(batch_size=4), r"^batch_size 4: the onnxruntime backend cannot reshape models"),
        (LoadOptions(layout="NC:CN"), r"^layout 'NC:CN': the onnxruntime backend cannot transpose inputs"),
        (
            LoadOptions(layout={"nope": "NC"}),
            r"^layout is given for 'nope', which is not an input of the model \(inputs: image\)$",
        ),
        (LoadOptions(layout="NCHW"), r"^layout 'NCHW' does not fit input 'image' of rank 2$"),
        (
            LoadOptions(plugin_config={"threads": 2}),
            r"^plugin_config threads=2: unknown key \(known: intra_op_num_threads, ",
        ),
        (
            LoadOptions(plugin_config={"intra_op_num_threads": "2"}),
            r"^plugin_config intra_op_num_threads='2': expected an integer >= 0$",
        ),
        (
            LoadOptions(plugin_config={"graph_optimization_level": "max"}),
            r"^plugin_config graph_optimization_level='max': expected one of disable_all, basic, extended, all$",
        ),
        (
            LoadOptions(plugin_config={"execution_mode": "fast"}),
            r"^plugin_config execution_mode='fast': expected sequential or parallel$",
        ),
        (
            LoadOptions(plugin_config={"enable_cpu_mem_arena": 1}),
            r"^plugin_config enable_cpu_mem_arena=1: expected true or false$",
        ),
    ],
)
def test_invalid_options(backend: OnnxRuntimeBackend, tmp_path: Path, options: LoadOptions, message: str) -> None:
    mlp_model(tmp_path)
    with pytest.raises(ValueError, match=message):
        backend.load(tmp_path, options).close()


def test_options_that_work(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    mlp_model(tmp_path)
    model = backend.load(tmp_path, LoadOptions(
        nireq=3, layout="NC", shape="auto",
        plugin_config={"intra_op_num_threads": 1, "graph_optimization_level": "basic", "execution_mode": "sequential",
                       "enable_cpu_mem_arena": False, "session.intra_op.allow_spinning": "0"},
    ))
    try:
        assert model.nireq == 3 and model.inputs["image"].layout == "NC" and model.inputs["image"].batch_index == 0
        assert run(model.infer({"image": np.ones((2, 8), np.float32)}))["label"].shape == (2,)
    finally:
        model.close()


def test_default_threads_share_the_cores() -> None:
    options = make_session_options({}, nireq=64)
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert make_session_options({"intra_op_num_threads": 2}, nireq=64).intra_op_num_threads == 2


# -- serving in-process -----------------------------------------------------------------------


def test_metadata_from_the_session(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    model = backend.load(mlp_model(tmp_path), LoadOptions())
    try:
        image = model.inputs["image"]
        assert image.dtype is DType.FP32 and image.shape == (Dim.dynamic(), Dim.static(8)) and image.layout is None
        assert model.outputs["probabilities"].shape_text() == "(-1,4)"
        assert model.outputs["label"].dtype is DType.I64 and model.outputs["label"].shape_text() == "(-1)"
    finally:
        model.close()


def test_strings_are_utf8_text_both_ways(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    OnnxConformanceModels().identity(tmp_path, DType.STRING, [-1])
    model = backend.load(tmp_path, LoadOptions())
    try:
        x = np.array(["caf\u00e9".encode(), b"", b"nul\x00inside"], dtype=object)
        y = run(model.infer({"x": x}))["y"]
        assert y.dtype == object and y.tolist() == x.tolist()
        with pytest.raises(
            DropinError, match=r"^String input is not supported for this model input - input x: item 1 is not UTF-8"
        ):
            run(model.infer({"x": np.array([b"ok", b"\xff"], dtype=object)}))
    finally:
        model.close()


def test_failing_inference_message_is_clean(backend: OnnxRuntimeBackend, tmp_path: Path) -> None:
    OnnxConformanceModels().failing(tmp_path)
    model = backend.load(tmp_path, LoadOptions(nireq=1))
    try:
        with pytest.raises(InferenceError) as info:
            run(model.infer({"x": np.ones(7, np.float32)}))
        message = str(info.value)
        assert message.startswith(
            "ONNX Runtime inference failed: Non-zero status code returned while running Reshape node"
        )
        assert "Input shape:{7}, requested shape:{3,-1}" in message
        assert "onnxruntime_src" not in message and ".h:" not in message and "[ONNXRuntimeError]" not in message
    finally:
        model.close()


# -- the real server: the same .onnx with ONNX Runtime and with OpenVINO ----------------------


def test_the_same_onnx_model_served_by_onnxruntime_and_openvino(dropin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    repo = ModelRepository(tmp_path / "models")
    repo.add("mlp", 1, mlp_model)
    repo.add("strings", 1, lambda d: OnnxConformanceModels().identity(d, DType.STRING, [-1, 3]))
    repo.write_config([
        {"name": "ort", "base_path": "mlp", "backend": "onnxruntime"},
        {"name": "ov", "base_path": "mlp", "backend": "openvino", "plugin_config": F32},
        {"name": "auto", "base_path": "mlp", "plugin_config": F32},
        {"name": "strings_ort", "base_path": "strings", "backend": "onnxruntime"},
        {"name": "strings_ov", "base_path": "strings", "backend": "openvino"},
    ])
    server = dropin_server("--config_path", str(repo.path / "config.json"))
    for name in ("ort", "ov", "auto", "strings_ort", "strings_ov"):
        server.wait_for(name, 1)
    server.wait_for_log(re.escape("model ort version 1: AVAILABLE (backend onnxruntime)"))
    server.wait_for_log(re.escape("model ov version 1: AVAILABLE (backend openvino)"))
    server.wait_for_log(re.escape("model auto version 1: AVAILABLE (backend openvino)"))  # OpenVINO claims .onnx first
    client = server.client
    assert client.metadata("ort") == client.metadata("ov") == {
        "inputs": {"image": (DType.FP32, (-1, 8))},
        "outputs": {"probabilities": (DType.FP32, (-1, 4)), "label": (DType.I64, (-1,))},
    }
    for batch in (1, 5, 33):
        image = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
        by_ort, by_ov = client.predict("ort", {"image": image}), client.predict("ov", {"image": image})
        np.testing.assert_array_equal(by_ort["label"], by_ov["label"])
        np.testing.assert_allclose(by_ort["probabilities"], by_ov["probabilities"], rtol=1e-5, atol=1e-7)
        assert by_ort["probabilities"].dtype == np.float32 and by_ort["label"].dtype == np.int64

    words = np.array([[b"a", "caf\u00e9".encode(), b""]], dtype=object)
    assert client.predict("strings_ort", {"x": words})["y"].tolist() == words.tolist()
    assert client.predict("strings_ov", {"x": words})["y"].tolist() == words.tolist()
    with pytest.raises(grpc.RpcError) as info:
        client.predict("strings_ort", {"x": np.array([[b"\xff", b"a", b"b"]], dtype=object)})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    # Retiring the versions releases the sessions and compiled models. OpenVINO used to abort the
    # process here ("free(): invalid pointer") for the ONNX string Identity it had run.
    repo.remove("strings", 1)
    server.wait_for("strings_ov", 1, "END")
    server.wait_for("strings_ort", 1, "END")
    np.testing.assert_array_equal(client.predict("ort", {"image": np.ones((1, 8), np.float32)})["label"].shape, (1,))
    assert server.proc.poll() is None, server.log
