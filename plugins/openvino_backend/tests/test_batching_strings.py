"""Dynamic batching of STRING inputs on the OpenVINO backend, which passes strings to OpenVINO as
fixed-width bytes: a string it refuses (ending in a NUL byte) fails only its own request, and
requests whose strings would only be too large once padded together are answered alone."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from dropin.testing.client import outputs_of
from dropin.testing.server import DropinServer
from dropin_openvino import modelgen

SLOW_BATCHING = {"max_batch_size": 64, "batch_timeout_micros": 200_000}  # concurrent requests meet


def string_model(path: Path) -> None:
    """x STRING [-1] -> y = x (a no-op reshape)."""
    x = ops.parameter(ov.PartialShape([-1]), ov.Type.string, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.reshape(x, ops.shape_of(x), special_zero=False)
    y.output(0).get_tensor().set_names({"y"})
    modelgen.save(ov.Model([ops.result(y, name="y")], [x], "strings"), path)


def reference(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """OpenVINO run directly on a request's input."""
    compiled = ov.Core().compile_model(str(path / "model.xml"), "CPU")
    result = compiled.infer_new_request(inputs)
    return {out.get_any_name(): np.array(result[out]) for out in compiled.outputs}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("batching")
    string_model(root / "strings" / "1")
    (root / "config.json").write_text(json.dumps({"model_config_list": [
        {"config": {"name": "strings", "base_path": "strings", "dynamic_batching": SLOW_BATCHING}},
    ]}))
    return root


@pytest.fixture(scope="module")
def server(models: Path) -> DropinServer:
    srv = DropinServer(["--config_path", str(models / "config.json"), "--file_system_poll_wait_seconds", "0",
                        "--log_level", "DEBUG"])
    try:
        srv.wait_for("strings", 1)
        yield srv
    finally:
        srv.stop()


def test_a_string_the_backend_refuses_fails_only_its_own_request(server: DropinServer, models: Path) -> None:
    inputs = [np.array([f"text {i}".encode(), b"in\x00side"][: 1 + i % 2], dtype=object) for i in range(8)]
    inputs[3] = np.array([b"fine", b"ends in NUL\x00"], dtype=object)
    futures = [server.client.predict_future("strings", {"x": x}) for x in inputs]
    for i, (x, future) in enumerate(zip(inputs, futures, strict=True)):
        if i == 3:
            with pytest.raises(grpc.RpcError) as info:
                future.result()
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == ("String input is not supported for this model input - input x: "
                                            "the OpenVINO backend cannot pass strings that end in a NUL byte")
            continue
        expected = reference(models / "strings" / "1", {"x": x.astype(np.bytes_)})["y"]
        assert outputs_of(future.result())["y"].tolist() == [s.encode() for s in expected.tolist()] == x.tolist()
    server.wait_for_log(r"model strings version 1: ran a batch of \d+ from [2-7] requests")
    assert "model strings version 1: a batch of" not in server.log  # the bad request never joined one


def test_strings_that_only_batched_together_are_too_large_are_answered_alone(server: DropinServer) -> None:
    # one long string alone, and many short ones alone, are fine; batched, every short string
    # would be padded to the long one (41 MiB from 1 MiB sent): that batch is refused, so each
    # request runs on its own
    inputs = [np.array([b"x" * (1 << 20)], dtype=object), np.array([b"short %d" % i for i in range(40)], dtype=object)]
    futures = [server.client.predict_future("strings", {"x": x}) for x in inputs]
    for x, future in zip(inputs, futures, strict=True):
        assert outputs_of(future.result())["y"].tolist() == x.tolist()
    server.wait_for_log(r"model strings version 1: a batch of 41 rows from 2 requests failed \(DropinError: "
                        r"Request is too large - input x: 41 strings padded to the longest \(1048576 bytes\).*\); "
                        r"running each request on its own")
