"""Small TF Serving clients for tests: numpy arrays in, numpy arrays out.

`GrpcClient` speaks the gRPC API (PredictionService, ModelService); `RestClient` the REST API
(`--rest_port`). Both raise on errors: `grpc.RpcError` (with `.code()` and `.details()`) and
`RestError` (with `.status` and `.message`).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import grpc
import numpy as np

from .._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from ..dtypes import DType
from ..tensor_proto import TYPED_FIELD, TensorProto, from_numpy, to_numpy

GIB = 1 << 30
STATES = {0: "UNKNOWN", 10: "START", 20: "LOADING", 30: "AVAILABLE", 40: "UNLOADING", 50: "END"}
STATE_NUMBERS = {name: number for number, name in STATES.items()}


def predict_request(
    name: str, inputs: Mapping[str, Any], version: int = 0, output_filter: Sequence[str] = ()
) -> predict_pb2.PredictRequest:
    """A PredictRequest; `inputs` are numpy arrays (sent as tensor_content) or TensorProtos."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    if version:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(from_numpy(value) if isinstance(value, np.ndarray) else value)
    request.output_filter.extend(output_filter)
    return request


def outputs_of(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
    """A PredictResponse's outputs as numpy arrays (STRING: object arrays of bytes)."""
    result = {}
    for name, proto in response.outputs.items():
        dtype = DType.from_tf(proto.dtype)
        if dtype is None:
            raise ValueError(f"output {name} has dtype {proto.dtype}, which dropin does not serve")
        shape = tuple(d.size for d in proto.tensor_shape.dim)
        result[name] = to_numpy(proto, dtype, shape, name)
    return result


def to_typed_proto(array: np.ndarray, dtype: DType) -> TensorProto:
    """A TensorProto with the data in the typed `*_val` field, as TF clients send small tensors."""
    proto = TensorProto()
    proto.dtype = dtype.tf_enum  # type: ignore[assignment]  # the stubs want DataType, a subclass of int
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    flat = np.asarray(array).reshape(-1)
    if dtype is DType.FP16:
        proto.half_val.extend(flat.astype("<f2").view("<u2").astype(int).tolist())
    elif dtype is DType.STRING:
        proto.string_val.extend(flat.tolist())
    else:
        getattr(proto, TYPED_FIELD[dtype]).extend(flat.tolist())
    return proto


Signature = dict[str, dict[str, tuple[DType, tuple[int, ...]]]]


class GrpcClient:
    """The TF Serving gRPC API at `address` ("host:port")."""

    def __init__(self, address: str, max_message_bytes: int = GIB) -> None:
        self.address = address
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        # the generated stubs are untyped
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)  # type: ignore[no-untyped-call]
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)  # type: ignore[no-untyped-call]

    def predict(
        self,
        name: str,
        inputs: Mapping[str, Any],
        version: int = 0,
        output_filter: Sequence[str] = (),
        timeout: float = 30,
    ) -> dict[str, np.ndarray]:
        """Predict: the outputs as numpy arrays."""
        return outputs_of(
            self.predict_stub.Predict(predict_request(name, inputs, version, output_filter), timeout=timeout)
        )

    def predict_future(self, name: str, inputs: Mapping[str, Any], version: int = 0, timeout: float = 60) -> Any:
        """Predict without waiting: a grpc future; `outputs_of(future.result())` gives the outputs."""
        return self.predict_stub.Predict.future(predict_request(name, inputs, version), timeout=timeout)

    def metadata(self, name: str, version: int = 0, timeout: float = 30) -> Signature:
        """GetModelMetadata: {"inputs": {name: (DType, shape)}, "outputs": {...}}, -1 for dynamic dims."""
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = name
        if version:
            request.model_spec.version.value = version
        request.metadata_field.append("signature_def")
        response = self.predict_stub.GetModelMetadata(request, timeout=timeout)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        return {
            kind: {
                key: (DType.from_tf(info.dtype), tuple(d.size for d in info.tensor_shape.dim))  # type: ignore[misc]
                for key, info in getattr(signature, kind).items()
            }
            for kind in ("inputs", "outputs")
        }

    def status_response(
        self, name: str, version: int = 0, timeout: float = 10
    ) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        if version:
            request.model_spec.version.value = version
        response: get_model_status_pb2.GetModelStatusResponse = self.model_stub.GetModelStatus(request, timeout=timeout)
        return response

    def status(self, name: str, version: int = 0) -> dict[int, tuple[str, int, str]]:
        """GetModelStatus: version -> (state name, error code, error message)."""
        return {
            v.version: (STATES.get(v.state, str(v.state)), v.status.error_code, v.status.error_message)
            for v in self.status_response(name, version).model_version_status
        }

    def wait_for(
        self,
        name: str,
        version: int,
        state: int | str = "AVAILABLE",
        timeout: float = 60,
        alive: Callable[[], None] | None = None,
    ) -> None:
        """Wait until `version` of `name` is in `state` ("AVAILABLE", "END", ... or its number)."""
        wanted = STATE_NUMBERS[state] if isinstance(state, str) else state
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if alive is not None:
                alive()
            try:
                last = self.status_response(name)
                if any(v.version == version and v.state == wanted for v in last.model_version_status):
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.05)
        raise TimeoutError(f"{name} v{version} never reached state {STATES.get(wanted, wanted)}; last status {last}")

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RestError(Exception):
    """A REST call answered with an HTTP error: `status` and the server's `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class RestClient:
    """The TF Serving REST API at `base_url` ("http://host:port")."""

    def __init__(self, base_url: str, timeout: float = 30) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One call: (HTTP status, decoded JSON body or None). Never raises on HTTP errors."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode("utf-8", "replace")

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.request(method, path, body)
        if status >= 400:
            message = answer.get("error", answer) if isinstance(answer, dict) else answer
            raise RestError(status, str(message))
        return answer

    @staticmethod
    def _model_path(name: str, version: int) -> str:
        return f"/v1/models/{name}" + (f"/versions/{version}" if version else "")

    def predict(self, name: str, inputs: Mapping[str, Any], version: int = 0) -> dict[str, np.ndarray]:
        """Predict in the column format (`{"inputs": {...}}`); outputs as numpy arrays (their dtype
        is what JSON gives: float64, int64, bool or str)."""
        body = {"inputs": {key: np.asarray(value).tolist() for key, value in inputs.items()}}
        answer = self._ok("POST", self._model_path(name, version) + ":predict", body)
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # TF Serving does not name a model's only output
            signature = self.metadata(name, version)["metadata"]["signature_def"]["signatureDef"]["serving_default"]
            (only,) = signature["outputs"]
            return {only: np.asarray(outputs)}
        return {key: np.asarray(value) for key, value in outputs.items()}

    def metadata(self, name: str, version: int = 0) -> Any:
        return self._ok("GET", self._model_path(name, version) + "/metadata")

    def status(self, name: str, version: int = 0) -> dict[int, tuple[str, int | str, str]]:
        """version -> (state name, error code, error message)."""
        answer = self._ok("GET", self._model_path(name, version))
        return {
            int(v["version"]): (v["state"], v["status"]["error_code"], v["status"]["error_message"])
            for v in answer["model_version_status"]
        }
