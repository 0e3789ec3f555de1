"""The official TF Serving client (tensorflow-serving-api, with TensorFlow) against a real server
serving the bundled models/ (OpenVINO IR), as `python3 dev.py serve` serves them.

The client runs in its own process: TensorFlow's generated protos and dropin's register the same
proto file names, so one Python process cannot import both.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CLIENT = textwrap.dedent(
    """
    import json, sys
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)

    port, samples_path = sys.argv[1], sys.argv[2]
    samples = json.load(open(samples_path))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)
    report = {}

    images = np.array([s["pixels"] for s in samples], dtype=np.float32)[..., None]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    response = predict.Predict(request, 30)
    report["labels"] = tf.make_ndarray(response.outputs["label"]).tolist()
    report["probabilities_shape"] = list(tf.make_ndarray(response.outputs["probabilities"]).shape)
    report["served_version"] = response.model_spec.version.value

    # one image as a Python list: make_tensor_proto puts small tensors in float_val
    one = predict_pb2.PredictRequest()
    one.model_spec.name = "digits"
    one.inputs["image"].CopyFrom(tf.make_tensor_proto(samples[3]["pixels"], dtype=tf.float32, shape=[1, 8, 8, 1]))
    report["typed_label"] = tf.make_ndarray(predict.Predict(one, 30).outputs["label"]).tolist()

    meta_request = get_model_metadata_pb2.GetModelMetadataRequest()
    meta_request.model_spec.name = "digits"
    meta_request.metadata_field.append("signature_def")
    meta = predict.GetModelMetadata(meta_request, 30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    report["unpacked"] = meta.metadata["signature_def"].Unpack(signatures)
    image = signatures.signature_def["serving_default"].inputs["image"]
    report["image_dtype"] = tf.dtypes.as_dtype(image.dtype).name
    report["image_shape"] = [d.size for d in image.tensor_shape.dim]

    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "digits"
    status = models.GetModelStatus(status_request, 30)
    report["status"] = [(v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state), v.status.error_message)
                        for v in status.model_version_status]

    request.model_spec.name = "nope"
    try:
        predict.Predict(request, 30)
    except grpc.RpcError as exc:
        report["error"] = [exc.code().name, exc.details()]
    print(json.dumps(report))
    """
)


def test_tensorflow_serving_api_client(dropin_server, tmp_path: Path) -> None:
    server = dropin_server(
        "--config_path", str(ROOT / "models" / "config.json"), "--file_system_poll_wait_seconds", "0"
    )
    server.wait_for("digits", 1)
    script = tmp_path / "tfs_client.py"
    script.write_text(CLIENT)
    samples = ROOT / "examples" / "digits" / "samples.json"
    out = subprocess.run(
        [sys.executable, str(script), str(server.port), str(samples)],
        capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["labels"] == [s["label"] for s in json.loads(samples.read_text())]
    assert report["probabilities_shape"] == [10, 10]
    assert report["served_version"] == 1
    assert report["typed_label"] == [3]
    assert report["unpacked"] is True
    assert report["image_dtype"] == "float32" and report["image_shape"] == [-1, 8, 8, 1]
    assert report["status"] == [[1, "AVAILABLE", "OK"]]
    assert report["error"] == ["NOT_FOUND", "Model with requested name is not found"]
