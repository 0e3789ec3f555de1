"""The official TF Serving client (tensorflow-serving-api, with TensorFlow) in a process of its own.

TensorFlow's generated protos and dropin's register the same proto file names, so one Python
process cannot import both. `TfsClient()` starts the client process at once (TensorFlow takes
seconds to import: start it before the server), then `run(port, calls)` hands it a list of
calls and returns one result per call:

    {"predict": "model", "inputs": {"x": array}, "output_filter": ["y"]}   -> {"outputs": {"y": array}}
    {"predict": "model", "inputs": {"image": [b"<jpeg>", ...]}}           -> DT_STRING input, shape [N]
    {"metadata": "model"}   -> {"inputs": {name: (dtype name, [dims])}, "outputs": {...}}
    {"status": "model"}     -> {"versions": [[version, state name, error code, error message]]}

A call that fails gives {"error": [grpc code name, details]}.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np

SCRIPT = textwrap.dedent(
    """
    import base64, json, sys
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)

    job = json.loads(sys.stdin.readline())
    channel = grpc.insecure_channel(f"127.0.0.1:{job['port']}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    models = model_service_pb2_grpc.ModelServiceStub(channel)

    def tensor(value):
        if "strings" in value:
            return tf.make_tensor_proto([base64.b64decode(s) for s in value["strings"]], shape=[len(value["strings"])])
        array = np.frombuffer(base64.b64decode(value["data"]), dtype=value["dtype"]).reshape(value["shape"])
        return tf.make_tensor_proto(array)

    def array(proto):
        out = tf.make_ndarray(proto)
        return {"dtype": out.dtype.str, "shape": list(out.shape), "data": base64.b64encode(out.tobytes()).decode()}

    def call(c):
        if "predict" in c:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = c["predict"]
            for name, value in c["inputs"].items():
                request.inputs[name].CopyFrom(tensor(value))
            request.output_filter.extend(c.get("output_filter", []))
            response = predict.Predict(request, 60)
            return {"outputs": {name: array(proto) for name, proto in response.outputs.items()}}
        if "metadata" in c:
            request = get_model_metadata_pb2.GetModelMetadataRequest()
            request.model_spec.name = c["metadata"]
            request.metadata_field.append("signature_def")
            signatures = get_model_metadata_pb2.SignatureDefMap()
            predict.GetModelMetadata(request, 60).metadata["signature_def"].Unpack(signatures)
            signature = signatures.signature_def["serving_default"]
            def infos(items):
                return {n: [tf.dtypes.as_dtype(i.dtype).name, [d.size for d in i.tensor_shape.dim]]
                        for n, i in items.items()}
            return {"inputs": infos(signature.inputs), "outputs": infos(signature.outputs)}
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = c["status"]
        response = models.GetModelStatus(request, 60)
        return {"versions": [[v.version, get_model_status_pb2.ModelVersionStatus.State.Name(v.state),
                              v.status.error_code, v.status.error_message] for v in response.model_version_status]}

    results = []
    for c in job["calls"]:
        try:
            results.append(call(c))
        except grpc.RpcError as exc:
            results.append({"error": [exc.code().name, exc.details()]})
    print(json.dumps(results))
    """
)


def _encode(value: np.ndarray | list[bytes]) -> dict[str, Any]:
    if isinstance(value, list):
        return {"strings": [base64.b64encode(item).decode() for item in value]}
    array = np.ascontiguousarray(value)
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def _decode(value: dict[str, Any]) -> np.ndarray:
    data = np.frombuffer(base64.b64decode(value["data"]), dtype=np.dtype(value["dtype"]))
    return data.reshape(tuple(value["shape"]))


class TfsClient:
    """One run of the official client: start it early, `run` it once, `close` it if never run."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""},
        )

    def run(self, port: int, calls: list[dict[str, Any]], timeout: float = 300) -> list[dict[str, Any]]:
        job = [
            {**c, "inputs": {name: _encode(v) for name, v in c["inputs"].items()}} if "inputs" in c else c
            for c in calls
        ]
        out, err = self.proc.communicate(json.dumps({"port": port, "calls": job}) + "\n", timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError(f"the tensorflow-serving-api client failed: {err[-3000:]}")
        results: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
        for c, result in zip(calls, results, strict=True):
            if "predict" in c and "outputs" in result:
                result["outputs"] = {name: _decode(v) for name, v in result["outputs"].items()}
        return results

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
