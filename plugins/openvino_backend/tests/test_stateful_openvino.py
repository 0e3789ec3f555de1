"""Stateful OpenVINO models (ReadValue/Assign, and an RNN made stateful by LowLatency2) served
by a real server, their sequences sent by the clients OVMS users have (tensorflow-serving-api as
OVMS's docs write it, ovmsclient) and REST, compared with OpenVINO run in-process over the whole
sequence. nireq 2: the sequences share two pooled infer requests."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dropin.testing.client import predict_request
from dropin.testing.load import in_threads
from dropin.testing.sequences import END, START, sequence_id_of, special, special_json
from dropin.testing.server import DropinServer, free_port
from dropin_openvino.modelgen import (
    recurrent_model,
    rnn_sequence_model,
    run_openvino,
    run_openvino_sequence,
    running_sum_model,
)

TFS_CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    import numpy as np
    from tensorflow import make_tensor_proto, make_ndarray
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    SEQUENCE_START, SEQUENCE_END = 1, 2
    xs = json.loads(sys.argv[1])
    port = sys.stdin.readline().strip()  # TensorFlow imports while the server starts
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    report = {"y": [], "ids": []}
    sequence_id = None
    for i, x in enumerate(xs):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "recurrent"
        request.inputs["x"].CopyFrom(make_tensor_proto(np.array(x, dtype=np.float32)))
        if i == 0:  # starting a sequence without an id: the server provides one
            request.inputs["sequence_control_input"].CopyFrom(make_tensor_proto([SEQUENCE_START], dtype="uint32"))
        else:
            request.inputs["sequence_id"].CopyFrom(make_tensor_proto([sequence_id], dtype="uint64"))
        if i == len(xs) - 1:
            request.inputs["sequence_control_input"].CopyFrom(make_tensor_proto([SEQUENCE_END], dtype="uint32"))
        response = stub.Predict(request, 30.0)
        sequence_id = response.outputs["sequence_id"].uint64_val[0]
        report["ids"].append(sequence_id)
        report["y"].append(make_ndarray(response.outputs["y"]).tolist())
    request.inputs["sequence_control_input"].CopyFrom(make_tensor_proto([0], dtype="uint32"))
    try:
        stub.Predict(request, 30.0)  # the sequence has ended
    except grpc.RpcError as exc:
        report["error"] = [exc.code().name, exc.details()]
    print(json.dumps(report))
    """
)

XS = [np.random.default_rng(7).standard_normal((1, 4)).astype(np.float32) for _ in range(10)]


@pytest.fixture(scope="module")
def tfs_client(tmp_path_factory: pytest.TempPathFactory):
    script = tmp_path_factory.mktemp("tfs") / "tfs_stateful_client.py"
    script.write_text(TFS_CLIENT)
    proc = subprocess.Popen(
        [sys.executable, str(script), json.dumps([x.tolist() for x in XS])], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stateful_ov")
    running_sum_model(root / "sum" / "1")
    recurrent_model(root / "recurrent" / "1")
    rnn_sequence_model(root / "rnn" / "1", steps=1)
    config = {"model_config_list": [
        {"config": {"name": name, "base_path": name, "stateful": True, "nireq": 2,
                    "plugin_config": {"INFERENCE_PRECISION_HINT": "f32"}, **extra}}
        for name, extra in (("sum", {}), ("recurrent", {}), ("rnn", {"low_latency_transformation": True}))
    ]}
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def server(models: Path, tfs_client: subprocess.Popen):
    srv = DropinServer(["--config_path", str(models / "config.json"), "--rest_port", str(free_port())])
    try:
        for name in ("sum", "recurrent", "rnn"):
            srv.wait_for(name, 1)
        assert tfs_client.stdin is not None
        tfs_client.stdin.write(f"{srv.port}\n")
        tfs_client.stdin.flush()
        yield srv
    finally:
        srv.stop()


def expected(models: Path, name: str, xs: list[np.ndarray]) -> list[np.ndarray]:
    return [r["y"] for r in run_openvino_sequence(models / name / "1", [{"x": x} for x in xs])]


def test_tensorflow_serving_api_sequence_matches_openvino(
    server: DropinServer, models: Path, tfs_client: subprocess.Popen
) -> None:
    out, err = tfs_client.communicate(timeout=300)
    assert tfs_client.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert len(set(report["ids"])) == 1 and report["ids"][0] != 0
    np.testing.assert_allclose(np.array(report["y"], np.float32), expected(models, "recurrent", XS), rtol=1e-5,
                               atol=1e-6)
    assert report["error"][0] == "NOT_FOUND"
    assert report["error"][1].startswith("Sequence with provided ID does not exist")


def test_ovmsclient_and_rest_sequences_match_openvino(server: DropinServer, models: Path) -> None:
    from ovmsclient import make_grpc_client

    client = make_grpc_client(f"127.0.0.1:{server.port}")
    want = expected(models, "recurrent", XS)
    for i, x in enumerate(XS):
        inputs = {"x": x, "sequence_id": np.array([500], np.uint64)}
        if i in (0, 9):
            inputs["sequence_control_input"] = np.array([START if i == 0 else END], np.uint32)
        out = client.predict(inputs, "recurrent")
        assert out["sequence_id"].tolist() == [500]
        np.testing.assert_allclose(out["y"], want[i], rtol=1e-5, atol=1e-6)
    assert server.rest is not None
    for i, x in enumerate(XS):
        control = START if i == 0 else END if i == 9 else None
        out = server.rest.predict("recurrent", {"x": x, **special_json(501, control)})
        np.testing.assert_allclose(out["y"], want[i], rtol=1e-5, atol=1e-6)


def test_eight_interleaved_sequences_on_two_infer_requests(server: DropinServer, models: Path) -> None:
    inputs = {k: [np.random.default_rng(k).standard_normal((1, 4)).astype(np.float32) for _ in range(10)]
              for k in range(8)}

    def one(k: int) -> list[np.ndarray]:
        ys = []
        for i, x in enumerate(inputs[k]):
            control = START if i == 0 else END if i == 9 else None
            response = server.predict.Predict(
                predict_request("recurrent", {"x": x, **special(900 + k, control, typed=k % 2 == 0)}), timeout=30
            )
            assert sequence_id_of(response) == 900 + k
            ys.append(np.frombuffer(response.outputs["y"].tensor_content, np.float32).reshape(1, 3))
        return ys

    results = in_threads(one, 8)
    for k in range(8):
        np.testing.assert_allclose(results[k], expected(models, "recurrent", inputs[k]), rtol=1e-5, atol=1e-6)


def test_running_sum(server: DropinServer, models: Path) -> None:
    xs = [np.full((1, 2), i, np.float32) for i in range(10)]
    ys = []
    for i, x in enumerate(xs):
        control = START if i == 0 else END if i == 9 else None
        ys.append(server.client.predict("sum", {"x": x, **special(3, control)})["y"])
    np.testing.assert_array_equal(ys, expected(models, "sum", xs))
    assert ys[-1].tolist() == [[45.0, 45.0]]


def test_low_latency_transformation_makes_an_rnn_stateful(server: DropinServer, tmp_path: Path) -> None:
    """The RNN served one step per request equals the same RNN run over the whole sequence."""
    xs = [np.random.default_rng(3).standard_normal((1, 1, 2)).astype(np.float32) for _ in range(10)]
    hs = []
    for i, x in enumerate(xs):
        control = START if i == 0 else END if i == 9 else None
        hs.append(server.client.predict("rnn", {"x": x, **special(11, control)})["h"])
    whole = rnn_sequence_model(tmp_path / "whole" / "1", steps=10)
    np.testing.assert_allclose(hs[-1], run_openvino(whole, {"x": np.concatenate(xs, axis=1)})["h"], rtol=1e-5,
                               atol=1e-6)
    three = rnn_sequence_model(tmp_path / "three" / "1", steps=3)
    np.testing.assert_allclose(hs[2], run_openvino(three, {"x": np.concatenate(xs[:3], axis=1)})["h"], rtol=1e-5,
                               atol=1e-6)
