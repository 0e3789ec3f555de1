"""Broken IR and ONNX files, and a failing OpenVINO inference, on a real server: each shows the
right status and a clear message, and the previous version keeps serving: the OpenVINO side of
the core's tests/test_faults.py (which runs on the numpy backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from dropin.testing.server import DropinServer
from dropin_openvino import modelgen
from dropin_openvino.modelgen import F32_CONFIG

X = np.ones((1, 2), np.float32)


def failing_model(version_dir: Path) -> Path:
    """Compiles, but inference fails for inputs whose length is not a multiple of 3."""
    x = ops.parameter([-1], ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.reshape(x, ops.constant(np.array([3, -1], np.int64)), special_zero=False)
    y.output(0).get_tensor().set_names({"y"})
    return modelgen.save(ov.Model([ops.result(y)], [x], "failing"), version_dir)


FAULTS = {
    "corrupt_ir": lambda d: (
        (d / "model.xml").write_text("<net version='11'><layers><layer"), (d / "model.bin").write_bytes(b"\1\2")
    ),
    "missing_bin": lambda d: (modelgen.scale_model(d, shape=(-1, 2)), (d / "model.bin").unlink()),
    "truncated_bin": lambda d: (modelgen.scale_model(d, shape=(-1, 2)), (d / "model.bin").write_bytes(b"\0" * 3)),
    "fifo": lambda d: os.mkfifo(d / "model.onnx"),
    "symlink_loop": lambda d: (os.symlink(d / "loop", d / "loop"), os.symlink(d / "a.onnx", d / "a.onnx")),
    "garbage_onnx": lambda d: (d / "model.onnx").write_bytes(os.urandom(256)),
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> tuple[DropinServer, Path]:
    root = tmp_path_factory.mktemp("faults")
    for name, make in FAULTS.items():
        modelgen.scale_model(root / name / "1", shape=(-1, 2), factor=1.0)  # a good version 1 ...
        broken = root / name / "2"  # ... and a broken version 2
        broken.mkdir()
        make(broken)
    failing_model(root / "failing" / "1")
    f32 = json.loads(F32_CONFIG)
    models = [{"config": {"name": n, "base_path": n, "plugin_config": f32}} for n in [*FAULTS, "failing"]]
    config = {"model_config_list": models}
    (root / "config.json").write_text(json.dumps(config))
    server = DropinServer(["--config_path", str(root / "config.json"), "--file_system_poll_wait_seconds", "0"])
    try:
        server.wait_for("failing", 1)
        for name in FAULTS:
            server.wait_for(name, 1)
        yield server, root
    finally:
        server.stop()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_version_shows_why_and_the_previous_one_serves(faulty, fault: str) -> None:
    server, root = faulty
    seen = server.client.status(fault)
    assert seen[1] == ("AVAILABLE", 0, "OK")
    state, code, message = seen[2]
    assert (state, code) == ("LOADING", 2), seen
    assert str(root / fault / "2") in message or "no backend can load" in message, message
    server.wait_for_log(f"model {fault} version 2: LOADING \\(load failed:", timeout=10)
    assert server.client.predict(fault, {"x": X})["y"][0, 0] == 1.0
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict(fault, {"x": X}, version=2)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_inference_failure_is_internal_and_the_model_keeps_serving(faulty) -> None:
    server, _ = faulty
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict("failing", {"x": np.ones(7, np.float32)})
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details().startswith("Internal inference error - backend openvino: ")
    assert "\n" not in info.value.details() and ".cpp" not in info.value.details()
    good = server.client.predict("failing", {"x": np.arange(6, dtype=np.float32)})
    np.testing.assert_array_equal(good["y"], np.arange(6, dtype=np.float32).reshape(3, 2))
