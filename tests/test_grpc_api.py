"""End to end over gRPC: a real `dropin serve` process, Predict compared with numpy run directly,
GetModelMetadata, GetModelStatus, and every error of docs/wire-contract.md with its code and message."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin._proto.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
)
from dropin.dtypes import DType
from dropin.tensor_proto import from_numpy
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import GIB, outputs_of, predict_request, to_typed_proto
from dropin.testing.expect import expect_error
from dropin.testing.server import DropinServer
from dropin.testing.typed_protos import typed

SIGNATURE_DEF_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    modelgen.scale_model(root / "scale" / "1", shape=(1, 3, 4), factor=2.0)
    modelgen.scale_model(root / "scale" / "2", shape=(1, 3, 4), factor=3.0)
    modelgen.dynamic_model(root / "dynamic" / "1")
    modelgen.two_input_model(root / "two" / "1")
    modelgen.identity_model(root / "identity" / "1")
    (root / "broken" / "1").mkdir(parents=True)
    modelgen.scale_model(root / "broken" / "1", shape=(-1, 2), factor=5.0)
    (root / "broken" / "2").mkdir(parents=True)
    (root / "broken" / "2" / "numpy_model.json").write_text("this is not a graph")
    config = {
        "model_config_list": [
            {"config": {"name": "scale", "base_path": "scale", "model_version_policy": {"all": {}}}},
            {"config": {"name": "dynamic", "base_path": "dynamic"}},
            {"config": {"name": "two", "base_path": "two"}},
            {"config": {"name": "identity", "base_path": "identity"}},
            {"config": {"name": "broken", "base_path": "broken", "model_version_policy": {"all": {}}}},
        ]
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> DropinServer:
    srv = DropinServer(["--config_path", str(repo / "config.json"), "--file_system_poll_wait_seconds", "0"])
    try:
        for name, version in [("scale", 1), ("scale", 2), ("dynamic", 1), ("two", 1), ("identity", 1), ("broken", 1)]:
            srv.wait_for(name, version)
        yield srv
    finally:
        srv.stop()


# -- Predict --------------------------------------------------------------------------------


def test_predict_matches_numpy(server: DropinServer, repo: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    response = server.predict.Predict(predict_request("scale", {"x": x}), timeout=20)
    expected = modelgen.run_numpy(repo / "scale" / "2", {"x": x})
    np.testing.assert_array_equal(outputs_of(response)["y"], expected["y"])
    assert response.model_spec.name == "scale"
    assert response.model_spec.version.value == 2  # version 0 means the highest AVAILABLE


def test_predict_explicit_version(server: DropinServer, repo: Path) -> None:
    x = np.ones((1, 3, 4), np.float32)
    response = server.predict.Predict(predict_request("scale", {"x": x}, version=1), timeout=20)
    np.testing.assert_array_equal(outputs_of(response)["y"], modelgen.run_numpy(repo / "scale" / "1", {"x": x})["y"])
    assert response.model_spec.version.value == 1


def test_dims_with_names_and_unknown_shape_fields_are_validated_and_served(server: DropinServer, repo: Path) -> None:
    """Such a request is not the common one the short path reads (tensor_proto.decode_exact):
    validation takes it, and the answer is the same."""
    x = np.random.default_rng(2).standard_normal((1, 3, 4)).astype(np.float32)
    expected = modelgen.run_numpy(repo / "scale" / "2", {"x": x})["y"]
    for _ in range(2):  # the second after the server learned the shape
        named = predict_request("scale", {"x": x})
        for dim, name in zip(named.inputs["x"].tensor_shape.dim, ["batch", "rows", "columns"], strict=True):
            dim.name = name
        unknown = predict_request("scale", {"x": x})
        unknown.inputs["x"].tensor_shape.MergeFromString(b"\x28\x05")  # field 5, which TensorShapeProto lacks
        for request in (named, unknown, predict_request("scale", {"x": x})):
            np.testing.assert_array_equal(outputs_of(server.predict.Predict(request, timeout=20))["y"], expected)


@pytest.mark.parametrize("shape", [(1, 1), (2, 5), (7, 3)])
def test_dynamic_shapes(server: DropinServer, repo: Path, shape: tuple[int, int]) -> None:
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    got = outputs_of(server.predict.Predict(predict_request("dynamic", {"x": x}), timeout=20))
    expected = modelgen.run_numpy(repo / "dynamic" / "1", {"x": x})
    np.testing.assert_allclose(got["y"], expected["y"], rtol=1e-6)
    np.testing.assert_allclose(got["total"], expected["total"], rtol=1e-6)


def test_output_filter(server: DropinServer) -> None:
    x = np.ones((2, 3), np.float32)
    response = server.predict.Predict(predict_request("dynamic", {"x": x}, output_filter=("total",)), timeout=20)
    assert set(response.outputs) == {"total"}
    np.testing.assert_array_equal(outputs_of(response)["total"], [3.0, 3.0])


def test_typed_values_and_single_value_fill(server: DropinServer) -> None:
    full = to_typed_proto(np.arange(6, dtype=np.float32).reshape(2, 3), DType.FP32)
    got = outputs_of(server.predict.Predict(predict_request("dynamic", {"x": full}), timeout=20))
    np.testing.assert_array_equal(got["y"], np.arange(6, dtype=np.float32).reshape(2, 3) + 1)
    one = to_typed_proto(np.array([4.0], np.float32), DType.FP32)
    one.tensor_shape.dim[0].size = 2
    one.tensor_shape.dim.add().size = 3
    got = outputs_of(server.predict.Predict(predict_request("dynamic", {"x": one}), timeout=20))
    np.testing.assert_array_equal(got["y"], np.full((2, 3), 5.0, np.float32))


def _identity_arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    arrays = {}
    for name in modelgen.IDENTITY_TYPES:
        dtype = DType[name.upper()] if name != "bool" else DType.BOOL
        if dtype is DType.BOOL:
            arrays[name] = rng.integers(0, 2, (2, 3)).astype(bool)
        elif dtype.numpy.kind == "f":
            arrays[name] = rng.standard_normal((2, 3)).astype(dtype.numpy)
        else:
            info = np.iinfo(dtype.numpy)
            arrays[name] = rng.integers(max(info.min, -1000), min(info.max, 1000), (2, 3)).astype(dtype.numpy)
    return arrays


@pytest.mark.parametrize("form", ["tensor_content", "typed"])
def test_every_dtype_round_trips(server: DropinServer, repo: Path, form: str) -> None:
    arrays = _identity_arrays()
    inputs = {}
    for name, array in arrays.items():
        dtype = DType.from_numpy(array.dtype)
        inputs[f"in_{name}"] = from_numpy(array) if form == "tensor_content" else to_typed_proto(array, dtype)
    got = outputs_of(server.predict.Predict(predict_request("identity", inputs), timeout=20))
    expected = modelgen.run_numpy(repo / "identity" / "1", {f"in_{n}": a for n, a in arrays.items()})
    for name, array in arrays.items():
        assert got[f"out_{name}"].dtype == array.dtype, name
        np.testing.assert_array_equal(got[f"out_{name}"], expected[f"out_{name}"], err_msg=name)
        np.testing.assert_array_equal(got[f"out_{name}"], array, err_msg=name)


def test_unimplemented_methods(server: DropinServer) -> None:
    for method in ("Classify", "Regress", "MultiInference"):
        call = server.channel.unary_unary(f"/tensorflow.serving.PredictionService/{method}")
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# -- Predict errors, in the order of docs/wire-contract.md ------------------------------------


def test_unknown_model(server: DropinServer) -> None:
    expect_error(server.predict.Predict, predict_request("nope", {"x": np.ones((1, 3, 4), np.float32)}),
                 grpc.StatusCode.NOT_FOUND, "Model with requested name is not found")


def test_unknown_version(server: DropinServer) -> None:
    expect_error(server.predict.Predict, predict_request("scale", {"x": np.ones((1, 3, 4), np.float32)}, version=7),
                 grpc.StatusCode.NOT_FOUND, "Model with requested version is not found")


def test_failed_version_is_not_loaded_and_older_serves(server: DropinServer) -> None:
    status = server.status("broken")
    states = {v.version: v for v in status.model_version_status}
    assert states[1].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert states[2].state == get_model_status_pb2.ModelVersionStatus.LOADING
    assert states[2].status.error_code == 2  # UNKNOWN
    assert "numpy_model.json" in states[2].status.error_message
    expect_error(server.predict.Predict, predict_request("broken", {"x": np.ones((1, 2), np.float32)}, version=2),
                 grpc.StatusCode.UNAVAILABLE, "Model with requested version is not loaded yet")
    response = server.predict.Predict(predict_request("broken", {"x": np.ones((1, 2), np.float32)}), timeout=20)
    assert response.model_spec.version.value == 1
    np.testing.assert_array_equal(outputs_of(response)["y"], [[5.0, 5.0]])


ONES = np.ones((1, 3, 4), np.float32)

ERROR_ROWS = [
    ("no inputs", "two", {}, "Invalid number of inputs - Expected: 2; Actual: 0"),
    (
        "too many inputs",
        "two",
        {"a": np.ones((1, 2), np.float32), "b": np.ones((1, 2), np.float32), "c": np.ones((1, 2), np.float32)},
        "Invalid number of inputs - Expected: 2; Actual: 3",
    ),
    (
        "unexpected name",
        "two",
        {"a": np.ones((1, 2), np.float32), "z": np.ones((1, 2), np.float32)},
        "Missing input with specific name - Required input: b",
    ),
    (
        "precision",
        "scale",
        {"x": np.ones((1, 3, 4), np.int32)},
        "Invalid input precision - Expected: FP32; Actual: I32; input name: x",
    ),
    (
        "rank",
        "scale",
        {"x": np.ones((1, 3), np.float32)},
        "Invalid number of shape dimensions - Expected: (1,3,4); Actual: (1,3); input name: x",
    ),
    (
        "batch",
        "scale",
        {"x": np.ones((2, 3, 4), np.float32)},
        "Invalid input batch size - Expected: 1; Actual: 2; input name: x",
    ),
    (
        "shape",
        "scale",
        {"x": np.ones((1, 3, 5), np.float32)},
        "Invalid input shape - Expected: (1,3,4); Actual: (1,3,5); input name: x",
    ),
    (
        "precision before rank, inputs in name order",
        "two",
        {"a": np.ones((1, 2, 1), np.float32), "b": np.ones((1, 2), np.int64)},
        "Invalid number of shape dimensions - Expected: (-1,2); Actual: (1,2,1); input name: a",
    ),
]


@pytest.mark.parametrize("case,model,inputs,message", ERROR_ROWS, ids=[row[0] for row in ERROR_ROWS])
def test_validation_errors(server: DropinServer, case: str, model: str, inputs: dict, message: str) -> None:
    expect_error(server.predict.Predict, predict_request(model, inputs), grpc.StatusCode.INVALID_ARGUMENT, message)


def test_negative_dimension(server: DropinServer) -> None:
    proto = from_numpy(ONES)
    proto.tensor_shape.dim[1].size = -3
    expect_error(server.predict.Predict, predict_request("scale", {"x": proto}), grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid input shape - Negative or zero dimension size is not acceptable: (1,-3,4); input name: x")


def test_zero_dimension(server: DropinServer) -> None:
    expect_error(server.predict.Predict, predict_request("dynamic", {"x": np.zeros((0, 10), np.float32)}),
                 grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid input shape - Negative or zero dimension size is not acceptable: (0,10); input name: x")


def test_one_value_cannot_fill_more_than_a_message_holds(server: DropinServer) -> None:
    # a dozen bytes on the wire used to allocate the whole shape (MemoryError, ValueError: INTERNAL)
    before = len(server.log_lines)
    for rows, size in [(2**40, 43980465111040), (2**62, 184467440737095516160), (27 * 2**20, 1132462080)]:
        expect_error(server.predict.Predict, predict_request("dynamic", {"x": typed(DType.FP32, (rows, 10), [1.0])}),
                     grpc.StatusCode.RESOURCE_EXHAUSTED,
                     f"Request is too large - Expected: at most {GIB} bytes in one input (--grpc_max_message_size); "
                     f"Actual: {size} bytes (FP32 of shape ({rows},10)); input name: x")
    assert not [line for line in server.log_lines[before:] if "ERROR" in line or "Traceback" in line]
    # up to the limit, one value still fills the shape
    got = outputs_of(
        server.predict.Predict(predict_request("dynamic", {"x": typed(DType.FP32, (1000, 10), [2.5])}), timeout=20)
    )
    np.testing.assert_array_equal(got["y"], np.full((1000, 10), 3.5, np.float32))


def test_inputs_must_agree_on_the_batch_size(server: DropinServer) -> None:
    before = len(server.log_lines)
    expect_error(server.predict.Predict,
                 predict_request("two", {"a": np.ones((2, 2), np.float32), "b": np.ones((3, 2), np.float32)}),
                 grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid input batch size - Expected: 2 (the batch size of input a); Actual: 3; input name: b")
    assert not [line for line in server.log_lines[before:] if "ERROR" in line or "Traceback" in line]


def _identity_zeros(**given: predict_pb2.TensorProto) -> dict:
    inputs = {f"in_{n}": from_numpy(np.zeros((1, 3), DType.BOOL.numpy if n == "bool" else DType[n.upper()].numpy))
              for n in modelgen.IDENTITY_TYPES}
    inputs.update({f"in_{n}": proto for n, proto in given.items()})
    return inputs


TYPED_VALUE_ROWS = [
    ("i8", typed(DType.I8, (1, 3), [300, -200, 1]), "Expected: I8 values, integers in [-128, 127]; Actual: 300"),
    ("u8", typed(DType.U8, (1, 3), [255, -1, 1]), "Expected: U8 values, integers in [0, 255]; Actual: -1"),
    ("u8 fill", typed(DType.U8, (1, 3), [1000]), "Expected: U8 values, integers in [0, 255]; Actual: 1000"),
    (
        "i16",
        typed(DType.I16, (1, 3), [1, 2, 40000]),
        "Expected: I16 values, integers in [-32768, 32767]; Actual: 40000",
    ),
    ("u16", typed(DType.U16, (1, 3), [70000, 0, 0]), "Expected: U16 values, integers in [0, 65535]; Actual: 70000"),
    (
        "fp16",
        typed(DType.FP16, (1, 3), [0x3C00, 0x10000, 0]),
        "Expected: FP16 bit patterns in half_val, integers in [0, 65535]; Actual: 65536",
    ),
]


@pytest.mark.parametrize("name,proto,message", TYPED_VALUE_ROWS, ids=[row[0] for row in TYPED_VALUE_ROWS])
def test_typed_values_out_of_the_input_range(server: DropinServer, name: str, proto, message: str) -> None:
    # int_val is an int32 field: I8, U8, I16 and U16 values used to wrap (300 -> 44, -1 -> 255)
    key = name.split()[0]
    expect_error(
        server.predict.Predict,
        predict_request("identity", _identity_zeros(**{key: proto})),
        grpc.StatusCode.INVALID_ARGUMENT,
        f"Invalid value for the input type - {message}; input name: in_{key}",
    )


def test_typed_values_at_the_ends_of_the_range(server: DropinServer) -> None:
    given = {"i8": typed(DType.I8, (1, 3), [-128, 127, 0]), "u8": typed(DType.U8, (1, 3), [0, 255, 7]),
             "i16": typed(DType.I16, (1, 3), [-32768, 32767, 0]), "u16": typed(DType.U16, (1, 3), [65535]),
             "fp16": typed(DType.FP16, (1, 3), [0x7BFF, 0xFBFF, 0x3C00])}
    got = outputs_of(server.predict.Predict(predict_request("identity", _identity_zeros(**given)), timeout=20))
    assert got["out_i8"].tolist() == [[-128, 127, 0]] and got["out_u8"].tolist() == [[0, 255, 7]]
    assert got["out_i16"].tolist() == [[-32768, 32767, 0]] and got["out_u16"].tolist() == [[65535] * 3]
    assert got["out_fp16"].tolist() == [[65504.0, -65504.0, 1.0]]


def test_content_size(server: DropinServer) -> None:
    proto = from_numpy(ONES)
    proto.tensor_content = proto.tensor_content[:-4]
    expect_error(server.predict.Predict, predict_request("scale", {"x": proto}), grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid content size of tensor proto - Expected: 48 bytes; Actual: 44 bytes; input name: x")
    empty = from_numpy(ONES)
    empty.tensor_content = b""
    expect_error(server.predict.Predict, predict_request("scale", {"x": empty}), grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid content size of tensor proto - Expected: 48 bytes; Actual: 0 bytes; input name: x")


def test_value_count(server: DropinServer) -> None:
    proto = to_typed_proto(np.ones(5, np.float32), DType.FP32)
    del proto.tensor_shape.dim[:]
    for size in (1, 3, 4):
        proto.tensor_shape.dim.add().size = size
    expect_error(server.predict.Predict, predict_request("scale", {"x": proto}), grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid number of values in tensor proto container - Expected: 12; Actual: 5; input name: x")


def test_unknown_output_filter(server: DropinServer) -> None:
    expect_error(
        server.predict.Predict,
        predict_request("dynamic", {"x": np.ones((1, 1), np.float32)}, output_filter=("nope",)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Invalid output name in output_filter - Expected one of: total, y; Actual: nope",
    )


def test_string_to_numeric_input_without_preprocessor(server: DropinServer) -> None:
    proto = to_typed_proto(np.array([b"abc"], dtype=object), DType.STRING)
    expect_error(server.predict.Predict, predict_request("dynamic", {"x": proto}), grpc.StatusCode.INVALID_ARGUMENT,
                 "Invalid input precision - Expected: FP32; Actual: STRING; input name: x")


def test_server_keeps_serving_after_errors(server: DropinServer) -> None:
    for _ in range(20):
        with pytest.raises(grpc.RpcError):
            server.predict.Predict(predict_request("scale", {"x": np.ones((9, 9), np.float32)}), timeout=10)
    response = server.predict.Predict(predict_request("scale", {"x": ONES}), timeout=10)
    np.testing.assert_array_equal(outputs_of(response)["y"], ONES * 3)


# -- GetModelMetadata -------------------------------------------------------------------------


def metadata_request(name: str | None, version: int = 0, fields: tuple[str, ...] = ("signature_def",)):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    if name is not None:
        request.model_spec.name = name
        if version:
            request.model_spec.version.value = version
    request.metadata_field.extend(fields)
    return request


def test_metadata(server: DropinServer) -> None:
    response = server.predict.GetModelMetadata(metadata_request("dynamic"), timeout=10)
    assert response.model_spec.name == "dynamic"
    assert response.model_spec.version.value == 1
    any_ = response.metadata["signature_def"]
    assert any_.type_url == SIGNATURE_DEF_URL
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert any_.Unpack(signatures)
    assert list(signatures.signature_def) == ["serving_default"]
    signature = signatures.signature_def["serving_default"]
    assert set(signature.inputs) == {"x"} and set(signature.outputs) == {"y", "total"}
    x = signature.inputs["x"]
    assert x.name == "x" and x.dtype == DType.FP32.tf_enum
    assert [d.size for d in x.tensor_shape.dim] == [-1, -1]
    assert [d.size for d in signature.outputs["total"].tensor_shape.dim] == [-1]


def test_metadata_static_shape_and_dtypes(server: DropinServer) -> None:
    response = server.predict.GetModelMetadata(metadata_request("scale", version=1), timeout=10)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert [d.size for d in signatures.signature_def["serving_default"].inputs["x"].tensor_shape.dim] == [1, 3, 4]
    response = server.predict.GetModelMetadata(metadata_request("identity"), timeout=10)
    response.metadata["signature_def"].Unpack(signatures)
    inputs = signatures.signature_def["serving_default"].inputs
    assert inputs["in_fp16"].dtype == 19 and inputs["in_i64"].dtype == 9 and inputs["in_u8"].dtype == 4
    assert inputs["in_bool"].dtype == 10 and inputs["in_u16"].dtype == 17


@pytest.mark.parametrize(
    "request_,code,message",
    [
        (metadata_request(None), grpc.StatusCode.INVALID_ARGUMENT, "model_spec missing in request"),
        (metadata_request("scale", fields=()), grpc.StatusCode.INVALID_ARGUMENT, "Invalid signature name"),
        (metadata_request("scale", fields=("other",)), grpc.StatusCode.INVALID_ARGUMENT, "Invalid signature name"),
        (metadata_request("nope"), grpc.StatusCode.NOT_FOUND, "Model with requested name is not found"),
        (metadata_request("scale", version=9), grpc.StatusCode.NOT_FOUND, "Model with requested version is not found"),
        (
            metadata_request("broken", version=2),
            grpc.StatusCode.UNAVAILABLE,
            "Model with requested version is not loaded yet",
        ),
    ],
    ids=["no model_spec", "no field", "other field", "unknown model", "unknown version", "failed version"],
)
def test_metadata_errors(server: DropinServer, request_, code: grpc.StatusCode, message: str) -> None:
    expect_error(server.predict.GetModelMetadata, request_, code, message)


# -- GetModelStatus ---------------------------------------------------------------------------


def test_status_all_versions(server: DropinServer) -> None:
    status = server.status("scale")
    assert [v.version for v in status.model_version_status] == [1, 2]
    for v in status.model_version_status:
        assert v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert v.status.error_code == 0 and v.status.error_message == "OK"


def test_status_one_version(server: DropinServer) -> None:
    status = server.status("scale", 1)
    assert [(v.version, v.state) for v in status.model_version_status] == [(1, 30)]


def test_status_errors(server: DropinServer) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    expect_error(
        server.models.GetModelStatus, request, grpc.StatusCode.NOT_FOUND, "Model with requested name is not found"
    )
    request.model_spec.name = "scale"
    request.model_spec.version.value = 5
    expect_error(
        server.models.GetModelStatus, request, grpc.StatusCode.NOT_FOUND, "Model with requested version is not found"
    )


# -- HandleReloadConfigRequest ----------------------------------------------------------------


def test_reload_config_request(start_server, tmp_path: Path) -> None:
    modelgen.scale_model(tmp_path / "a" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(tmp_path / "b" / "1", shape=(-1, 2), factor=4.0)
    server = start_server("--model_name", "a", "--model_path", str(tmp_path / "a"),
                          "--reload_config_enable", "--reload_config_roots", str(tmp_path))
    server.wait_for("a", 1)
    request = model_management_pb2.ReloadConfigRequest()
    for name in ("a", "b"):
        entry = request.config.model_config_list.config.add()
        entry.name = name
        entry.base_path = str(tmp_path / name)
        entry.model_platform = "openvino"
    response = server.models.HandleReloadConfigRequest(request, timeout=60)
    assert response.status.error_code == 0
    server.wait_for("b", 1)
    got = outputs_of(server.predict.Predict(predict_request("b", {"x": np.ones((1, 2), np.float32)}), timeout=20))
    np.testing.assert_array_equal(got["y"], [[4.0, 4.0]])
    # a config without "a" retires it
    del request.config.model_config_list.config[0]
    assert server.models.HandleReloadConfigRequest(request, timeout=60).status.error_code == 0
    server.wait_for("a", 1, state=50)
    expect_error(server.predict.Predict, predict_request("a", {"x": np.ones((1, 2), np.float32)}),
                 grpc.StatusCode.NOT_FOUND, "Model with requested version is not found")
