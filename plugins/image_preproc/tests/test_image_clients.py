"""The bundled digits demo model answering encoded PNGs from the clients OVMS users have
(ovmsclient and tensorflow-serving-api), compared with OpenVINO run on the decoded images."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from dropin._proto.tensorflow.core.framework import tensor_pb2
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.server import DropinServer
from dropin_image.testing import decoded, encode, predict, reference

ROOT = Path(__file__).resolve().parents[3]
DIGITS = [(ROOT / "examples" / "digits" / f"digit_{n}.png").read_bytes() for n in range(10)]

TFS_CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    paths = sys.argv[1:]
    port = sys.stdin.readline().strip()  # TensorFlow imports while the server starts
    images = [open(p, "rb").read() for p in paths]
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    report = {}
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images, shape=[len(images)]))
    response = stub.Predict(request, 30)
    report["labels"] = tf.make_ndarray(response.outputs["label"]).tolist()
    report["probabilities_shape"] = list(tf.make_ndarray(response.outputs["probabilities"]).shape)
    one = predict_pb2.PredictRequest()
    one.model_spec.name = "digits"
    one.inputs["image"].CopyFrom(tf.make_tensor_proto([images[7]], shape=[1]))
    report["one"] = tf.make_ndarray(stub.Predict(one, 30).outputs["label"]).tolist()
    one.inputs["image"].CopyFrom(tf.make_tensor_proto([b"not an image"], shape=[1]))
    try:
        stub.Predict(one, 30)
    except grpc.RpcError as exc:
        report["error"] = [exc.code().name, exc.details()]
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def tfs_client(tmp_path_factory: pytest.TempPathFactory):
    """The tensorflow-serving-api client, started first: TensorFlow takes seconds to import, so
    it imports while the models are built and the server starts, then waits for the port."""
    script = tmp_path_factory.mktemp("tfs") / "tfs_client.py"
    script.write_text(TFS_CLIENT)
    paths = [str(ROOT / "examples" / "digits" / f"digit_{n}.png") for n in range(10)]
    proc = subprocess.Popen(
        [sys.executable, str(script), *paths], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tfs_client: subprocess.Popen):
    srv = DropinServer(["--model_name", "digits", "--model_path", str(ROOT / "models" / "digits"),
                        "--file_system_poll_wait_seconds", "0"])
    try:
        srv.wait_for("digits", 1)
        assert tfs_client.stdin is not None
        tfs_client.stdin.write(f"{srv.port}\n")
        tfs_client.stdin.flush()
        yield srv
    finally:
        srv.stop()


# -- the demo model with the clients OVMS users have ------------------------------------------------


def test_digits_with_ovmsclient(server: DropinServer) -> None:
    from ovmsclient import make_grpc_client, make_tensor_proto

    client = make_grpc_client(f"127.0.0.1:{server.port}")
    outputs = client.predict({"image": DIGITS}, "digits")
    assert outputs["label"].tolist() == list(range(10))
    assert client.predict({"image": DIGITS[4]}, "digits")["label"].tolist() == [4]
    # ovmsclient's own make_tensor_proto(bytes) makes the same DT_STRING [1] tensor
    proto = tensor_pb2.TensorProto.FromString(make_tensor_proto(DIGITS[9]).SerializeToString())
    response = server.predict.Predict(predict_request("digits", {"image": proto}), timeout=20)
    assert outputs_of(response)["label"].tolist() == [9]


def test_digits_match_openvino_on_the_decoded_pngs(server: DropinServer) -> None:
    import openvino as ov

    served = predict(server, "digits", DIGITS)["probabilities"]
    compiled = ov.Core().compile_model(str(ROOT / "models" / "digits" / "1" / "model.xml"), "CPU")
    expected = compiled(reference(DIGITS, 8, 8))[compiled.output("probabilities")]
    np.testing.assert_allclose(served, expected, rtol=1e-2, atol=1e-3)
    # the same digits, 4x larger: the server resizes them back to 8x8
    big = [encode(".png", cv2.resize(decoded(d), (32, 32), interpolation=cv2.INTER_NEAREST)) for d in DIGITS]
    assert predict(server, "digits", big)["label"].tolist() == list(range(10))


def test_digits_with_tensorflow_serving_api(server: DropinServer, tfs_client: subprocess.Popen) -> None:
    out, err = tfs_client.communicate(timeout=300)
    assert tfs_client.returncode == 0, err[-3000:]
    report = json.loads(out.strip().splitlines()[-1])
    assert report["labels"] == list(range(10))
    assert report["probabilities_shape"] == [10, 10]
    assert report["one"] == [7]
    assert report["error"][0] == "INVALID_ARGUMENT" and report["error"][1].startswith("Image parsing failed")
