"""A pipeline of two OpenVINO models served to the official clients (ovmsclient, and
tensorflow-serving-api in a process of its own), its outputs compared with OpenVINO run directly:
model A, then model B, on the same input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dropin_openvino.runtime  # noqa: F401  (the first import of openvino, with its telemetry off)

# isort: split
import numpy as np
import pytest
from ovmsclient import make_grpc_client

from dropin_openvino.modelgen import dynamic_model, run_openvino, scale_model

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
X = np.array([[1.0, -2.0, 3.5, 0.25], [4.0, 5.0, -6.0, 7.5]], np.float32)
PIPELINE = {
    "name": "a_then_b", "inputs": ["in"],
    "nodes": [
        {"name": "a", "type": "DL model", "model_name": "a", "version": 1,
         "inputs": [{"x": {"node_name": "request", "data_item": "in"}}], "outputs": [{"data_item": "y", "alias": "y"}]},
        {"name": "b", "type": "DL model", "model_name": "b",
         "inputs": [{"x": {"node_name": "a", "data_item": "y"}}],
         "outputs": [{"data_item": "y", "alias": "plus_one"}, {"data_item": "total", "alias": "total"}]},
    ],
    "outputs": [
        {"out": {"node_name": "b", "data_item": "plus_one"}}, {"total": {"node_name": "b", "data_item": "total"}}
    ],
}

TFS_CLIENT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc, predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    port, x = sys.argv[1], np.array(json.loads(sys.argv[2]), np.float32)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "a_then_b"
    request.inputs["in"].CopyFrom(tf.make_tensor_proto(x))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 30)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "a_then_b"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, 30)
    print(json.dumps({
        "out": tf.make_ndarray(response.outputs["out"]).tolist(),
        "total": tf.make_ndarray(response.outputs["total"]).tolist(),
        "version": response.model_spec.version.value,
        "status": [(v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state)) for v in
                   status.model_version_status],
    }))
    """
)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from dropin.testing.server import DropinServer

    repo = tmp_path_factory.mktemp("models")
    scale_model(repo / "a" / "1", shape=(-1, 4), factor=2.0, offset=0.5)
    dynamic_model(repo / "b" / "1")
    config = repo / "config.json"
    config.write_text(json.dumps({
        "model_config_list": [{"config": {"name": n, "base_path": str(repo / n), "plugin_config": F32}}
                              for n in ("a", "b")],
        "pipeline_config_list": [PIPELINE],
    }))
    server = DropinServer(["--config_path", str(config), "--file_system_poll_wait_seconds", "0"])
    try:
        server.wait_for("a_then_b", 1)
        yield server, repo
    finally:
        server.stop()


def reference(repo: Path) -> dict[str, np.ndarray]:
    return run_openvino(repo / "b" / "1", {"x": run_openvino(repo / "a" / "1", {"x": X})["y"]})


def test_ovmsclient_predict_metadata_and_status(served) -> None:  # type: ignore[no-untyped-def]
    server, repo = served
    client = make_grpc_client(f"127.0.0.1:{server.port}")
    outputs = client.predict({"in": X}, "a_then_b")
    expected = reference(repo)
    np.testing.assert_allclose(outputs["out"], expected["y"], rtol=1e-6)
    np.testing.assert_allclose(outputs["total"], expected["total"], rtol=1e-6)
    assert client.get_model_status("a_then_b") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}}
    metadata = client.get_model_metadata("a_then_b")
    assert metadata["model_version"] == 1
    assert metadata["inputs"] == {"in": {"shape": [-1, 4], "dtype": "DT_FLOAT"}}
    assert metadata["outputs"] == {
        "out": {"shape": [-1, -1], "dtype": "DT_FLOAT"}, "total": {"shape": [-1], "dtype": "DT_FLOAT"}
    }


def test_tensorflow_serving_api_client(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, repo = served
    script = tmp_path / "tfs_client.py"
    script.write_text(TFS_CLIENT)
    out = subprocess.run(
        [sys.executable, str(script), str(server.port), json.dumps(X.tolist())],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    expected = reference(repo)
    np.testing.assert_allclose(np.array(report["out"], np.float32), expected["y"], rtol=1e-6)
    np.testing.assert_allclose(np.array(report["total"], np.float32), expected["total"], rtol=1e-6)
    assert report["version"] == 1
    assert report["status"] == [[1, "AVAILABLE"]]
