"""Property-based fuzzing of the gRPC API on a real server: random names, dtypes, shapes, content
sizes, typed values and string payloads, and raw mutated request bytes.

Every request must get a gRPC status; client errors are never INTERNAL or UNKNOWN; nothing crashes
or hangs; a valid request right after is answered. Values given in a wider type than the input
(typed `int_val`, JSON numbers over REST) come back exactly, or are refused: never changed.
"""

from __future__ import annotations

import json
import random

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropin._proto.tensorflow.core.framework import tensor_pb2
from dropin._proto.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2
from dropin.dtypes import DType
from dropin.tensor_proto import from_numpy
from dropin.testing import numpy_models as modelgen
from dropin.testing.server import DropinServer, free_port

SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
MODELS = {"dynamic": ["x"], "two": ["a", "b"], "identity": [f"in_{n}" for n in modelgen.IDENTITY_TYPES], "scale": ["x"]}
FUZZ_SETTINGS = settings(
    max_examples=500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck), database=None
)
counts = {"requests": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> DropinServer:
    root = tmp_path_factory.mktemp("fuzz")
    modelgen.dynamic_model(root / "dynamic" / "1")
    modelgen.two_input_model(root / "two" / "1")
    modelgen.identity_model(root / "identity" / "1")
    modelgen.scale_model(root / "scale" / "1", shape=(1, 3, 4))
    config = {"model_config_list": [{"config": {"name": n, "base_path": n}} for n in MODELS]}
    (root / "config.json").write_text(json.dumps(config))
    srv = DropinServer(["--config_path", str(root / "config.json"), "--file_system_poll_wait_seconds", "0",
                        "--max_elements", "1000000", "--rest_port", str(free_port())])
    try:
        for name in MODELS:
            srv.wait_for(name, 1)
        yield srv
    finally:
        srv.stop()
        print(f"fuzz: {counts['requests']} requests")


def assert_still_serving(server: DropinServer) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "dynamic"
    request.inputs["x"].CopyFrom(from_numpy(np.ones((1, 2), np.float32)))
    response = server.predict.Predict(request, timeout=10)
    assert response.outputs["y"].tensor_content == np.full((1, 2), 2.0, np.float32).tobytes()


def call(method, request) -> None:
    counts["requests"] += 1
    try:
        method(request, timeout=20)
    except grpc.RpcError as exc:
        assert exc.code() not in SERVER_ERRORS, f"{exc.code()}: {exc.details()}\nrequest: {request}"
        assert exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"hang on {request}"
        assert exc.details(), "an error without a message"


names = st.one_of(st.sampled_from(sorted({n for ns in MODELS.values() for n in ns})), st.text(max_size=8))
dims = st.lists(st.one_of(st.integers(min_value=-3, max_value=40), st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1])),
               max_size=5)


@st.composite
def tensors(draw) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto()
    proto.dtype = draw(st.one_of(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 9, 10, 17, 19, 22, 23]), st.integers(0, 40)))
    shape = draw(dims)
    if draw(st.booleans()) or not shape:
        for d in shape:
            proto.tensor_shape.dim.add().size = d
    else:  # a plausible shape: every dim within the model's expectations more often
        for d in shape:
            proto.tensor_shape.dim.add().size = abs(d) % 4
    kind = draw(st.sampled_from(["content", "float", "int", "int64", "half", "bool", "string", "uint", "empty"]))
    if kind == "content":
        proto.tensor_content = draw(st.binary(max_size=512))
    elif kind == "float":
        proto.float_val.extend(draw(st.lists(st.floats(width=32, allow_nan=True), max_size=40)))
    elif kind == "int":
        proto.int_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40)))
    elif kind == "int64":
        proto.int64_val.extend(draw(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40)))
    elif kind == "half":
        proto.half_val.extend(draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40)))
    elif kind == "bool":
        proto.bool_val.extend(draw(st.lists(st.booleans(), max_size=40)))
    elif kind == "string":
        proto.string_val.extend(draw(st.lists(st.binary(max_size=64), max_size=8)))
    elif kind == "uint":
        proto.uint64_val.extend(draw(st.lists(st.integers(0, 2**64 - 1), max_size=40)))
    return proto


@st.composite
def predict_requests(draw) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    model = draw(st.one_of(st.sampled_from(sorted(MODELS)), st.text(max_size=10)))
    request.model_spec.name = model
    if draw(st.booleans()):
        request.model_spec.version.value = draw(st.one_of(st.just(1), st.integers(-(2**63), 2**63 - 1)))
    inputs = draw(st.dictionaries(names, tensors(), max_size=4))
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    if draw(st.integers(0, 5)) == 0:
        request.output_filter.extend(draw(st.lists(st.text(max_size=6), max_size=3)))
    return request


@FUZZ_SETTINGS
@given(request=predict_requests())
def test_fuzz_predict(server: DropinServer, request: predict_pb2.PredictRequest) -> None:
    call(server.predict.Predict, request)


@FUZZ_SETTINGS
@given(
    name=st.one_of(st.sampled_from(sorted(MODELS)), st.text(max_size=10)),
    version=st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    fields=st.lists(st.one_of(st.just("signature_def"), st.text(max_size=12)), max_size=3),
    with_spec=st.booleans(),
)
def test_fuzz_metadata_and_status(
    server: DropinServer, name: str, version: int | None, fields: list[str], with_spec: bool
) -> None:
    meta = get_model_metadata_pb2.GetModelMetadataRequest()
    status = get_model_status_pb2.GetModelStatusRequest()
    if with_spec:
        for request in (meta, status):
            request.model_spec.name = name
            if version is not None:
                request.model_spec.version.value = version
    meta.metadata_field.extend(fields)
    call(server.predict.GetModelMetadata, meta)
    call(server.models.GetModelStatus, status)


# the identity inputs whose values are fuzzed
EXACT_TYPES = ["i8", "u8", "i16", "u16", "i32", "fp16", "fp32"]
VALUES_SETTINGS = settings(FUZZ_SETTINGS, max_examples=300)


def identity_inputs(name: str, array: tensor_pb2.TensorProto) -> dict[str, tensor_pb2.TensorProto]:
    inputs = {f"in_{n}": from_numpy(np.ones((1, 3), DType.BOOL.numpy if n == "bool" else DType[n.upper()].numpy))
              for n in modelgen.IDENTITY_TYPES}
    inputs[f"in_{name}"] = array
    return inputs


def fits(value: object, dtype: DType) -> bool:
    """Whether `value`, as a JSON number, is a value of `dtype` (the oracle, in plain Python)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        value = float(value)  # JSON integers beyond 64 bits are read as floats
    if dtype.numpy.kind == "f":
        with np.errstate(over="ignore"):
            return bool(np.isfinite(np.array(float(value), np.float64).astype(dtype.numpy)))
    info = np.iinfo(dtype.numpy)
    if isinstance(value, float):
        return value.is_integer() and abs(value) <= 2**53 and info.min <= value <= info.max
    return info.min <= value <= info.max


json_numbers = st.one_of(
    st.integers(-(2**70), 2**70), st.integers(-70000, 70000), st.floats(allow_nan=False, allow_infinity=False),
    st.floats(-1000, 1000).map(lambda v: float(round(v))), st.booleans(),
)


@VALUES_SETTINGS
@given(name=st.sampled_from(EXACT_TYPES), values=st.lists(json_numbers, min_size=3, max_size=3))
def test_fuzz_json_numbers_are_exact_or_refused(server: DropinServer, name: str, values: list) -> None:
    counts["requests"] += 1
    dtype = DType[name.upper()]
    body = {"inputs": {**{f"in_{n}": [[1, 1, 1]] for n in modelgen.IDENTITY_TYPES}, f"in_{name}": [values]}}
    status, answer = server.rest.request("POST", "/v1/models/identity:predict", body)
    if all(fits(v, dtype) for v in values):
        assert status == 200, (values, answer)
        got = np.array(answer["outputs"][f"out_{name}"], dtype.numpy)
        np.testing.assert_array_equal(
            got, np.array([[float(v) if isinstance(v, float) else v for v in values]]).astype(dtype.numpy)
        )
        if dtype.numpy.kind in "iu":
            assert answer["outputs"][f"out_{name}"] == [[int(v) for v in values]]
    else:
        assert status == 400, (values, answer)
        assert answer["error"].startswith(("Invalid value for the input type - ", "Could not parse input content")), (
            answer
        )


@VALUES_SETTINGS
@given(
    name=st.sampled_from(["i8", "u8", "i16", "u16"]),
    values=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=3),
)
def test_fuzz_int_val_is_exact_or_refused(server: DropinServer, name: str, values: list[int]) -> None:
    counts["requests"] += 1
    dtype = DType[name.upper()]
    proto = tensor_pb2.TensorProto(dtype=dtype.tf_enum)
    for size in (1, 3):
        proto.tensor_shape.dim.add().size = size
    proto.int_val.extend(values if len(values) != 2 else values[:1])  # 1 value fills the shape
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "identity"
    for key, tensor in identity_inputs(name, proto).items():
        request.inputs[key].CopyFrom(tensor)
    info = np.iinfo(dtype.numpy)
    given_values = list(proto.int_val)
    try:
        response = server.predict.Predict(request, timeout=20)
    except grpc.RpcError as exc:
        assert not all(info.min <= v <= info.max for v in given_values), exc.details()
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and exc.details().startswith(
            "Invalid value for the input type - "
        )
        return
    assert all(info.min <= v <= info.max for v in given_values), given_values
    out = response.outputs[f"out_{name}"]
    expected = given_values * 3 if len(given_values) == 1 else given_values
    assert np.frombuffer(out.tensor_content, dtype.numpy).tolist() == expected


def test_fuzz_raw_request_bytes(server: DropinServer) -> None:
    """Mutated serialized requests straight onto the wire: undecodable ones are client errors too."""
    rng = random.Random(1234)
    seed = predict_pb2.PredictRequest()
    seed.model_spec.name = "dynamic"
    seed.inputs["x"].CopyFrom(from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4)))
    payload = bytearray(seed.SerializeToString())
    methods = {
        "Predict": server.channel.unary_unary("/tensorflow.serving.PredictionService/Predict"),
        "GetModelMetadata": server.channel.unary_unary("/tensorflow.serving.PredictionService/GetModelMetadata"),
        "GetModelStatus": server.channel.unary_unary("/tensorflow.serving.ModelService/GetModelStatus"),
    }
    for i in range(800):
        data = bytearray(payload)
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            pos = rng.randrange(len(data) + 1)
            if op == 0 and data:
                data[pos % len(data)] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 2:
                del data[pos : pos + rng.randint(1, 8)]
            else:
                data = data[:pos]
        for name, method in methods.items():
            counts["requests"] += 1
            try:
                method(bytes(data), timeout=20)
            except grpc.RpcError as exc:
                assert exc.code() not in SERVER_ERRORS, f"{name} #{i}: {exc.code()}: {exc.details()}"
        if i % 100 == 0:
            assert_still_serving(server)
    assert_still_serving(server)


def test_valid_request_after_fuzzing(server: DropinServer) -> None:
    assert_still_serving(server)
    assert server.proc.poll() is None
