"""batch_size "auto" and shape "auto" with the real server: a request of another batch size or
shape reloads the version with it (OpenVINO reshapes at load) and is answered with what OpenVINO
itself computes on that input; concurrent requests during such reloads all succeed; a shape the
model cannot take is FAILED_PRECONDITION and the server keeps serving."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from dropin.testing.client import outputs_of
from dropin.testing.server import free_port
from dropin_openvino.modelgen import F32_CONFIG as F32

RESHAPE_ERROR = "Model could not be reshaped with requested shape"


def save_conv(directory: Path) -> Path:
    """A 3x3 convolution (no padding) on a static (1,3,8,8) input, then a ReLU: it reshapes to any
    batch and to any height and width of at least 3."""
    directory.mkdir(parents=True)
    x = ops.parameter([1, 3, 8, 8], ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    weights = np.random.default_rng(7).standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = ops.relu(ops.convolution(x, ops.constant(weights), [1, 1], [0, 0], [0, 0], [1, 1]))
    y.output(0).get_tensor().set_names({"y"})
    ov.save_model(ov.Model([y], [x], "conv"), directory / "model.xml")
    return directory.parent


def direct(base: Path, x: np.ndarray) -> np.ndarray:
    """The model reshaped to x's shape and run by OpenVINO directly."""
    model = ov.Core().read_model(base / "1" / "model.xml")
    model.reshape({"x": ov.PartialShape(list(x.shape))})
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(x)[compiled.output("y")])


def images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


@pytest.fixture
def conv(tmp_path: Path) -> Path:
    return save_conv(tmp_path / "conv" / "1")


def serve(dropin_server, base: Path, *options: str):  # type: ignore[no-untyped-def]
    server = dropin_server("--model_name", "conv", "--model_path", str(base), "--plugin_config", F32,
                           "--file_system_poll_wait_seconds", "0", *options)
    server.wait_for("conv", 1)
    return server


def input_shape(server) -> list[int]:  # type: ignore[no-untyped-def]
    return list(server.client.metadata("conv")["inputs"]["x"][1])


def test_shape_auto_reshapes_to_the_request(dropin_server, conv: Path) -> None:
    server = serve(dropin_server, conv, "--shape", "auto")
    assert input_shape(server) == [1, 3, 8, 8]
    for shape in [(2, 3, 10, 12), (1, 3, 8, 8), (3, 3, 5, 4)]:
        x = images(shape)
        got = server.client.predict("conv", {"x": x})["y"]
        np.testing.assert_array_equal(got, direct(conv, x))
        assert input_shape(server) == list(shape)  # metadata shows the shape loaded now
    assert server.client.status("conv")[1][0] == "AVAILABLE"


def test_batch_size_auto_reloads_with_the_request_batch(dropin_server, conv: Path) -> None:
    server = serve(dropin_server, conv, "--batch_size", "auto")
    x = images((5, 3, 8, 8), seed=1)
    np.testing.assert_array_equal(server.client.predict("conv", {"x": x})["y"], direct(conv, x))
    assert input_shape(server) == [5, 3, 8, 8]
    with pytest.raises(grpc.RpcError) as failed:  # only the batch is auto: other dims are validated
        server.client.predict("conv", {"x": images((5, 3, 9, 8))})
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failed.value.details() == "Invalid input shape - Expected: (5,3,8,8); Actual: (5,3,9,8); input name: x"


def test_batch_size_auto_in_config_json_over_rest(dropin_server, conv: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    entry = {"name": "conv", "base_path": str(conv), "batch_size": "auto", "plugin_config": json.loads(F32)}
    config.write_text(json.dumps({"model_config_list": [{"config": entry}]}))
    server = dropin_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0",
                           "--rest_port", str(free_port()))
    server.wait_for("conv", 1)
    x = images((2, 3, 8, 8), seed=2)
    assert server.rest is not None
    got = server.rest.predict("conv", {"x": x.tolist()})
    np.testing.assert_allclose(got["y"], direct(conv, x), rtol=1e-6)


def test_concurrent_requests_during_reshapes_all_succeed(dropin_server, conv: Path) -> None:
    server = serve(dropin_server, conv, "--shape", "auto")
    same = images((4, 3, 8, 8), seed=3)
    futures = [server.client.predict_future("conv", {"x": same}) for _ in range(8)]
    want = direct(conv, same)
    for future in futures:
        np.testing.assert_array_equal(outputs_of(future.result())["y"], want)
    assert len(re.findall(r"reshaped to", server.log)) == 1  # eight requests, one reload

    shapes = [(1, 3, 8, 8), (2, 3, 8, 8), (1, 3, 12, 12), (2, 3, 6, 9)]
    inputs = [images(shapes[i % len(shapes)], seed=10 + i) for i in range(16)]
    futures = [server.client.predict_future("conv", {"x": x}) for x in inputs]
    for x, future in zip(inputs, futures, strict=True):
        np.testing.assert_array_equal(outputs_of(future.result())["y"], direct(conv, x))
    assert server.client.status("conv")[1][0] == "AVAILABLE"


def test_a_shape_the_model_cannot_take_is_failed_precondition(dropin_server, conv: Path) -> None:
    server = serve(dropin_server, conv, "--shape", "auto")
    with pytest.raises(grpc.RpcError) as failed:
        server.client.predict("conv", {"x": images((1, 3, 2, 2))})  # smaller than the 3x3 kernel
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = failed.value.details()
    assert details.startswith(RESHAPE_ERROR + " - x (1,3,2,2): backend openvino: the model cannot be reshaped"), details
    assert str(conv) not in details  # no server paths
    assert "Traceback" not in server.log
    x = images((1, 3, 8, 8), seed=4)
    np.testing.assert_array_equal(server.client.predict("conv", {"x": x})["y"], direct(conv, x))
    assert server.client.status("conv")[1][0] == "AVAILABLE"
    assert input_shape(server) == [1, 3, 8, 8]


def save_two_inputs(directory: Path) -> Path:
    """y = a * 2 + b on static (1,4) inputs a and b."""
    directory.mkdir(parents=True)
    params = []
    for name in ("a", "b"):
        p = ops.parameter([1, 4], ov.Type.f32, name=name)
        p.output(0).get_tensor().set_names({name})
        params.append(p)
    y = ops.add(ops.multiply(params[0], ops.constant(np.float32(2))), params[1])
    y.output(0).get_tensor().set_names({"y"})
    ov.save_model(ov.Model([y], params, "two"), directory / "model.xml")
    return directory.parent


@pytest.mark.parametrize("key", [{"shape": {"a": "auto", "b": "auto"}}, {"shape": "auto"}, {"batch_size": "auto"}])
def test_auto_on_a_model_with_two_inputs(dropin_server, tmp_path: Path, key: dict) -> None:
    base = save_two_inputs(tmp_path / "two" / "1")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_config_list": [{"config": {"name": "two", "base_path": str(base), **key}}]}))
    server = dropin_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0")
    server.wait_for("two", 1)
    shape = (3, 4) if "batch_size" in key else (3, 6)
    a, b = images(shape, seed=5), images(shape, seed=6)
    np.testing.assert_array_equal(server.client.predict("two", {"a": a, "b": b})["y"], a * 2 + b)
    metadata = server.client.metadata("two")["inputs"]
    assert metadata["a"][1] == metadata["b"][1] == shape
