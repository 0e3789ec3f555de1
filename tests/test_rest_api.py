"""End to end over REST: a real `dropin serve --rest_port` process and a real HTTP client over TCP.

Status and metadata JSON as OVMS prints them, predict in row and column formats compared with
numpy run directly, binary ({"b64": ...}) inputs, every REST error with its HTTP status (docs/wire-contract.md)
and message, config status and reload, and ovmsclient's HTTP client."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from dropin.dtypes import DType
from dropin.tensor_proto import from_numpy
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import predict_request
from dropin.testing.expect import expect, expect_prefix
from dropin.testing.numpy_models import NumpyModelWriter
from dropin.testing.raw_http import get, http, post
from dropin.testing.server import DropinServer, free_port

SAMPLES = Path(__file__).parent.parent / "examples" / "digits"
BODY_LIMIT = 100_000


def string_model(version_dir: Path) -> Path:
    """text: STRING [-1] -> echo_bytes: the same strings (an output named *_bytes comes back as b64)."""
    return modelgen.string_model(version_dir, "text", "echo_bytes")


def uneven_model(version_dir: Path) -> Path:
    """x: FP32 [-1,2] -> y = x [N,2] and colsum = sum over the batch [2]: outputs with different dim 0."""
    m = NumpyModelWriter()
    x = m.input("x", DType.FP32, (-1, 2))
    m.output(m.node("mul", x, m.const(1.0)), "y", DType.FP32, (-1, 2))
    m.output(m.node("sum", x, axis=0), "colsum", DType.FP32, (2,))
    return m.save(version_dir)


def digits_model(version_dir: Path) -> Path:
    """image: FP32 [-1,8,8,1] -> probabilities = softmax(dense(image)) [-1,10], label = argmax (I64 [-1]),
    with random weights: the shape of models/digits."""
    m = NumpyModelWriter()
    rng = np.random.default_rng(8)
    flat = m.node("reshape", m.input("image", DType.FP32, (-1, 8, 8, 1)), shape=[-1, 64])
    logits = m.node("dense", flat, m.weight("w", rng.standard_normal((64, 10)).astype(np.float32)),
                    m.weight("b", rng.standard_normal(10).astype(np.float32)))
    m.output(m.node("argmax", logits), "label", DType.I64, (-1,))
    m.output(m.node("softmax", logits), "probabilities", DType.FP32, (-1, 10))
    return m.save(version_dir)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rest")
    modelgen.scale_model(root / "scale" / "1", shape=(1, 3, 4), factor=2.0)
    modelgen.scale_model(root / "scale" / "2", shape=(1, 3, 4), factor=3.0)
    modelgen.dynamic_model(root / "dynamic" / "1")
    modelgen.two_input_model(root / "two" / "1")
    modelgen.identity_model(root / "identity" / "1")
    string_model(root / "strings" / "1")
    uneven_model(root / "uneven" / "1")
    digits_model(root / "digits" / "1")
    modelgen.scale_model(root / "broken" / "1", shape=(-1, 2), factor=5.0)
    (root / "broken" / "2").mkdir(parents=True)
    (root / "broken" / "2" / "numpy_model.json").write_text("this is not a graph")
    models = [
        {"name": "scale", "base_path": "scale", "model_version_policy": {"all": {}}},
        {"name": "dynamic", "base_path": "dynamic"},
        {"name": "two", "base_path": "two"},
        {"name": "identity", "base_path": "identity"},
        {"name": "strings", "base_path": "strings"},
        {"name": "uneven", "base_path": "uneven"},
        {"name": "digits", "base_path": "digits"},
        {"name": "broken", "base_path": "broken", "model_version_policy": {"all": {}}},
    ]
    config = {"model_config_list": [{"config": m} for m in models]}
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> DropinServer:
    srv = DropinServer([
        "--config_path", str(repo / "config.json"), "--file_system_poll_wait_seconds", "0",
        "--rest_port", str(free_port()), "--rest_bind_address", "127.0.0.1",
        "--rest_max_body_bytes", str(BODY_LIMIT),
    ])
    try:
        for name, version in [("scale", 1), ("scale", 2), ("dynamic", 1), ("two", 1), ("identity", 1), ("strings", 1),
                              ("uneven", 1), ("digits", 1), ("broken", 1)]:
            srv.wait_for(name, version)
        yield srv
    finally:
        srv.stop()


# -- GetModelStatus --------------------------------------------------------------------------


def status_entry(version: int, state: str = "AVAILABLE", code: str = "OK", message: str = "OK") -> dict[str, Any]:
    return {"version": str(version), "state": state, "status": {"error_code": code, "error_message": message}}


def test_status_all_versions_as_ovms_prints_it(server: DropinServer) -> None:
    for path in ("/v1/models/scale", "/v1/models/scale/versions/0", "/v1/models/scale/labels/stable"):
        reply = get(server, path)
        assert reply.status == 200 and reply.content_type.startswith("application/json")
        assert reply.json == {"model_version_status": [status_entry(1), status_entry(2)]}, path


def test_status_one_version(server: DropinServer) -> None:
    assert get(server, "/v1/models/scale/versions/1").json == {"model_version_status": [status_entry(1)]}


def test_status_of_a_version_that_failed_to_load(server: DropinServer) -> None:
    entries = get(server, "/v1/models/broken").json["model_version_status"]
    assert entries[0] == status_entry(1)
    assert entries[1]["version"] == "2" and entries[1]["state"] == "LOADING"
    assert entries[1]["status"]["error_code"] == "UNKNOWN"
    assert "numpy_model.json" in entries[1]["status"]["error_message"]


def test_status_errors(server: DropinServer) -> None:
    expect(get(server, "/v1/models/nope"), 404, "Model with requested name is not found")
    expect(get(server, "/v1/models"), 404, "Model with requested name is not found")
    expect(get(server, "/v1/models/scale/versions/7"), 404, "Model with requested version is not found")
    expect(
        get(server, "/v1/models/scale/versions/99999999999999999999"), 404, "Model with requested version is not found"
    )
    expect_prefix(get(server, "/v1/models/scale/versions/one"), 400, "Invalid request URL")


# -- GetModelMetadata ------------------------------------------------------------------------


def tensor_json(name: str, dtype: str, dims: list[int]) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "tensorShape": {"dim": [{"size": str(d), "name": ""} for d in dims], "unknownRank": False},
        "name": name,
    }


def test_metadata_as_ovms_prints_it(server: DropinServer) -> None:
    for path, version in [("/v1/models/scale/metadata", 2), ("/v1/models/scale/versions/0/metadata", 2),
                          ("/v1/models/scale/versions/1/metadata", 1)]:
        reply = get(server, path)
        assert reply.status == 200
        assert reply.json == {
            "modelSpec": {"name": "scale", "signatureName": "", "version": str(version)},
            "metadata": {"signature_def": {
                "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
                "signatureDef": {"serving_default": {
                    "inputs": {"x": tensor_json("x", "DT_FLOAT", [1, 3, 4])},
                    "outputs": {"y": tensor_json("y", "DT_FLOAT", [1, 3, 4])},
                    "methodName": "",
                    "defaults": {},
                }},
            }},
        }, path


def test_metadata_dynamic_dims_and_dtypes(server: DropinServer) -> None:
    signature = get(server, "/v1/models/digits/metadata").json["metadata"]["signature_def"]["signatureDef"][
        "serving_default"
    ]
    assert signature["inputs"]["image"] == tensor_json("image", "DT_FLOAT", [-1, 8, 8, 1])
    assert signature["outputs"]["label"] == tensor_json("label", "DT_INT64", [-1])


def test_metadata_errors(server: DropinServer) -> None:
    expect(get(server, "/v1/models/nope/metadata"), 404, "Model with requested name is not found")
    expect(get(server, "/v1/models/scale/versions/3/metadata"), 404, "Model with requested version is not found")
    expect(get(server, "/v1/models/broken/versions/2/metadata"), 404, "Model with requested version is not loaded yet")


# -- Predict ---------------------------------------------------------------------------------


def test_predict_row_and_column_match_numpy(server: DropinServer, repo: Path) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    expected = modelgen.run_numpy(repo / "scale" / "2", {"x": x})["y"]
    row = post(server, "/v1/models/scale:predict", {"instances": x.tolist()})
    assert row.status == 200, row.body
    assert list(row.json) == ["predictions"]
    np.testing.assert_array_equal(np.array(row.json["predictions"], np.float32), expected)
    column = post(
        server, "/v1/models/scale/versions/0:predict", {"inputs": x.tolist(), "signature_name": "serving_default"}
    )
    assert list(column.json) == ["outputs"]
    np.testing.assert_array_equal(np.array(column.json["outputs"], np.float32), expected)
    named = post(server, "/v1/models/scale/versions/1:predict", {"inputs": {"x": x.tolist()}})
    np.testing.assert_array_equal(
        np.array(named.json["outputs"], np.float32), modelgen.run_numpy(repo / "scale" / "1", {"x": x})["y"]
    )
    labelled = post(server, "/v1/models/scale/labels/stable:predict", {"instances": [{"x": x[0].tolist()}]})
    np.testing.assert_array_equal(np.array(labelled.json["predictions"], np.float32), expected)


def test_predict_several_outputs(server: DropinServer, repo: Path) -> None:
    x = np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32)
    expected = modelgen.run_numpy(repo / "dynamic" / "1", {"x": x})
    rows = post(server, "/v1/models/dynamic:predict", {"instances": x.tolist()}).json["predictions"]
    assert len(rows) == 3 and all(set(r) == {"y", "total"} for r in rows)
    np.testing.assert_allclose(np.array([r["y"] for r in rows], np.float32), expected["y"], rtol=1e-6)
    np.testing.assert_allclose(np.array([r["total"] for r in rows], np.float32), expected["total"], rtol=1e-6)
    columns = post(server, "/v1/models/dynamic:predict", {"inputs": {"x": x.tolist()}}).json["outputs"]
    assert set(columns) == {"y", "total"}
    np.testing.assert_allclose(np.array(columns["y"], np.float32), expected["y"], rtol=1e-6)
    np.testing.assert_allclose(np.array(columns["total"], np.float32), expected["total"], rtol=1e-6)


def test_predict_two_inputs_named_rows_and_columns(server: DropinServer) -> None:
    a = [[1.0, 2.0], [3.0, 4.0]]
    b = [[10.0, 20.0], [30.0, 40.0]]
    rows = post(server, "/v1/models/two:predict", {"instances": [{"a": a[0], "b": b[0]}, {"a": a[1], "b": b[1]}]})
    assert rows.json == {
        "predictions": [{"sum": [11.0, 22.0], "diff": [-9.0, -18.0]}, {"sum": [33.0, 44.0], "diff": [-27.0, -36.0]}]
    }
    columns = post(server, "/v1/models/two:predict", {"inputs": {"a": a, "b": b}})
    assert columns.json == {"outputs": {"sum": [[11.0, 22.0], [33.0, 44.0]], "diff": [[-9.0, -18.0], [-27.0, -36.0]]}}


def test_json_numbers_take_the_model_input_dtype(server: DropinServer) -> None:
    names = list(modelgen.IDENTITY_TYPES)
    values = [[1, 2, 3], [4, 5, 6]]
    bits = [[1, 0, 1], [0, 0, 1]]  # a BOOL input takes the numbers 0 and 1 too
    inputs = {**{f"in_{n}": values for n in names}, "in_bool": bits}
    reply = post(server, "/v1/models/identity:predict", {"inputs": inputs})
    assert reply.status == 200, reply.body
    outputs = reply.json["outputs"]
    for name in names:
        if name == "bool":
            assert outputs["out_bool"] == [[True, False, True], [False, False, True]]
        else:
            assert outputs[f"out_{name}"] == values, name  # fp16 answers as JSON numbers too
    floats = post(server, "/v1/models/identity:predict", {"inputs": {**inputs, "in_i32": [[1.0, -2.0, 3e0]] * 2}})
    assert floats.json["outputs"]["out_i32"] == [[1, -2, 3]] * 2  # integral floats are integers


VALUE_ROWS = [  # (input, JSON values, what the message says); each used to be answered 200 with other values
    ("i8", [[300, -200, 1]], "Expected: I8 values, integers in [-128, 127]; Actual: 300"),
    ("u8", [[1, 256, 1000]], "Expected: U8 values, integers in [0, 255]; Actual: 256"),
    ("u8", [[-1, 0, 0]], "Expected: U8 values, integers in [0, 255]; Actual: -1"),
    ("i32", [[1, 1.9, 3]], "Expected: I32 values, integers in [-2147483648, 2147483647]; Actual: 1.9"),
    ("i64", [[2**70, 1, 1]], "Expected: I64 values, integers in [-9223372036854775808, 9223372036854775807]; "
                             "Actual: 1.1805916207174113e+21"),
    ("fp32", [[1e40, 1, 1]], "Expected: FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: 1e+40"),
    ("fp16", [[1, 70000, 1]], "Expected: FP16 values, in [-65504, 65504]; Actual: 70000"),
    ("fp32", [[1, True, 2]], "Expected: FP32 numbers; Actual: true"),
    ("i32", [[1, 2, 3], [4, 5, False]], "Expected: I32 numbers; Actual: false"),
]


@pytest.mark.parametrize("name,value,message", VALUE_ROWS, ids=[f"{row[0]}-{i}" for i, row in enumerate(VALUE_ROWS)])
def test_json_numbers_the_input_type_would_change(server: DropinServer, name: str, value: list, message: str) -> None:
    ones = [[1, 1, 1]] * len(value)
    body = {"inputs": {**{f"in_{n}": ones for n in modelgen.IDENTITY_TYPES}, f"in_{name}": value}}
    before = len(server.log_lines)
    expect(post(server, "/v1/models/identity:predict", body), 400,
           f"Invalid value for the input type - {message}; input name: in_{name}")
    assert not [line for line in server.log_lines[before:] if "ERROR" in line]
    # the same value over gRPC's typed fields, where the field is wider than the input
    if name in ("i8", "u8"):
        from dropin.dtypes import DType
        from dropin.testing.typed_protos import typed

        dtype = DType[name.upper()]
        inputs = {
            f"in_{n}": from_numpy(np.ones((len(value), 3), DType.BOOL.numpy if n == "bool" else DType[n.upper()].numpy))
            for n in modelgen.IDENTITY_TYPES
        }
        inputs[f"in_{name}"] = typed(dtype, (len(value), 3), [v for row in value for v in row])
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(predict_request("identity", inputs), timeout=20)
        assert (info.value.code(), info.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, json.loads(
            post(server, "/v1/models/identity:predict", body).body)["error"])


def test_values_at_the_ends_of_the_input_range(server: DropinServer, repo: Path) -> None:
    given = {n: [[1, 1, 1]] for n in modelgen.IDENTITY_TYPES}
    given.update(
        {
            "i8": [[-128, 127, 0]],
            "u8": [[0, 255, 1]],
            "u64": [[2**64 - 1, 0, 1]],
            "fp16": [[65504, -65504, 0.5]],
            "fp32": [[2.0**70, 3.4e38, -1.5]],
            "i64": [[2**63 - 1, -(2**63), 0]],
        }
    )
    reply = post(server, "/v1/models/identity:predict", {"inputs": {f"in_{n}": v for n, v in given.items()}})
    assert reply.status == 200, reply.body
    arrays = {f"in_{n}": np.array(v, modelgen.IDENTITY_TYPES[n].numpy) for n, v in given.items()}
    expected = modelgen.run_numpy(repo / "identity" / "1", arrays)
    for name in ("i8", "u8", "u64", "fp16", "fp32", "i64"):
        got = np.array(reply.json["outputs"][f"out_{name}"], arrays[f"in_{name}"].dtype)
        np.testing.assert_array_equal(got, expected[f"out_{name}"], err_msg=name)


def test_zero_dimension_and_deep_nesting(server: DropinServer) -> None:
    before = len(server.log_lines)
    for body, shape in [
        ({"inputs": {"x": [[], []]}}, "(2,0)"),
        ({"instances": [[]]}, "(1,0)"),
        ({"inputs": []}, "(0)"),
    ]:
        expect(post(server, "/v1/models/dynamic:predict", body), 400,
               f"Invalid input shape - Negative or zero dimension size is not acceptable: {shape}; input name: x")
    # strings nested 1000 deep used to end in RecursionError (500, with a traceback in the log)
    deep = "[" * 1000 + '"a"' + "]" * 1000
    expect(post(server, "/v1/models/strings:predict", '{"inputs": {"text": ' + deep + "}}"), 400,
           "Could not parse input content. Not valid ndarray detected - arrays nested deeper than 32 levels")
    assert not [line for line in server.log_lines[before:] if "ERROR" in line or "Traceback" in line]


def test_inputs_must_agree_on_the_batch_size(server: DropinServer) -> None:
    before = len(server.log_lines)
    expect(post(server, "/v1/models/two:predict", {"inputs": {"a": [[1, 1]] * 2, "b": [[1, 1]] * 3}}), 400,
           "Invalid input batch size - Expected: 2 (the batch size of input a); Actual: 3; input name: b")
    assert not [line for line in server.log_lines[before:] if "ERROR" in line or "Traceback" in line]


def test_validation_messages_are_the_grpc_ones(server: DropinServer) -> None:
    import grpc

    cases = [
        ({"x": np.ones((2, 3, 4), np.float32)}, {"inputs": {"x": np.ones((2, 3, 4)).tolist()}}),
        ({"x": np.ones((1, 3, 5), np.float32)}, {"instances": np.ones((1, 3, 5)).tolist()}),
        ({"x": np.ones((1, 3), np.float32)}, {"inputs": [[1, 2, 3]]}),
        ({"y": np.ones((1, 3, 4), np.float32)}, {"inputs": {"y": np.ones((1, 3, 4)).tolist()}}),
        ({"x": np.ones((1, 3, 4), np.float32), "z": np.ones((1,), np.float32)},
         {"inputs": {"x": np.ones((1, 3, 4)).tolist(), "z": [1.0]}}),
    ]
    for grpc_inputs, body in cases:
        with pytest.raises(grpc.RpcError) as info:
            server.predict.Predict(predict_request("scale", grpc_inputs), timeout=20)
        reply = post(server, "/v1/models/scale:predict", body)
        assert reply.status == 400
        assert reply.error == info.value.details(), body


def test_binary_input_reaches_a_string_model_as_dt_string(server: DropinServer) -> None:
    blobs = [b"\x00\x01binary\xff", b"second"]
    b64 = [{"b64": base64.b64encode(b).decode()} for b in blobs]
    for body in (
        {"instances": b64},
        {"inputs": {"text": b64}},
        {"instances": [{"text": v} for v in b64]},
        {"inputs": b64},
    ):
        reply = post(server, "/v1/models/strings:predict", body)
        assert reply.status == 200, (body, reply.body)
        got = reply.json.get("predictions", reply.json.get("outputs"))
        assert [base64.b64decode(v["b64"]) for v in got] == blobs, body
    plain = post(server, "/v1/models/strings:predict", {"instances": ["plain", "text"]})
    assert [base64.b64decode(v["b64"]) for v in plain.json["predictions"]] == [b"plain", b"text"]


def test_binary_input_without_the_image_plugin(repo: Path, start_server) -> None:
    srv = start_server(
        "--model_name", "digits", "--model_path", str(repo / "digits"),
        "--rest_port", str(free_port()), "--file_system_poll_wait_seconds", "0",
        env={"DROPIN_BLOCK_PLUGINS": "image"},
    )
    srv.wait_for("digits", 1)
    image = base64.b64encode((SAMPLES / "digit_0.png").read_bytes()).decode()
    expect(post(srv, "/v1/models/digits/versions/0:predict", {"instances": [{"b64": image}]}), 400,
           "Invalid input precision - Expected: FP32; Actual: STRING; input name: image")


# -- REST errors (docs/wire-contract.md#errors) ----------------------------------------------


def test_body_errors(server: DropinServer) -> None:
    url = "/v1/models/scale:predict"
    reply = post(server, url, b'{"instances": [1, 2')
    assert reply.status == 412 and reply.error.startswith("The file is not valid json - "), reply.body
    assert post(server, url, b'{"instances": [NaN]}').status == 412
    assert post(server, url, b"\xff\xfe").status == 412
    expect(post(server, url, [1, 2]), 400, "Request body should be JSON object")
    expect(
        post(server, url, {"instances": [1], "inputs": [1]}),
        400,
        "Invalid JSON structure. Could not detect row or column format",
    )
    expect(
        post(server, url, {"signature_name": "x"}), 400, "Invalid JSON structure. Could not detect row or column format"
    )
    expect(post(server, url, {"instances": {"x": 1}}), 400, "Invalid JSON structure. Nonamed instance is not an array.")
    expect(post(server, url, {"instances": []}), 400, "Invalid JSON structure. Missing instances in row format")
    expect(
        post(server, url, {"instances": [{"x": [1]}, 2]}),
        400,
        "Invalid JSON structure. One of named instances is not a JSON object.",
    )
    expect(post(server, url, {"instances": [None, 5]}), 400, "Could not detect neither named or nonamed format")
    expect(post(server, url, {"instances": [True]}), 400, "Could not detect neither named or nonamed format")
    expect(post(server, url, {"inputs": 5}), 400, "Invalid JSON structure. One of inputs is not a JSON object.")
    expect(post(server, url, {"inputs": {}}), 400, "Invalid JSON structure, missing inputs")


def test_ragged_and_non_numeric_arrays(server: DropinServer) -> None:
    url = "/v1/models/dynamic:predict"
    row, column = (
        "Could not parse instance content. Not valid ndarray detected",
        "Could not parse input content. Not valid ndarray detected",
    )
    for bad in ([[1, 2], [3]], [[1, 2], [3, [4]]], [[1, None]], [[1, "a"]], [[], [1]], [[1, {"x": 1}]]):
        expect_prefix(post(server, url, {"instances": bad}), 400, row)
        expect_prefix(post(server, url, {"inputs": bad}), 400, column)
        expect_prefix(post(server, url, {"inputs": {"x": bad}}), 400, column)
    for body in ({"instances": [[True, 1]]}, {"inputs": [[True, 1]]}, {"inputs": {"x": [[1, True]]}}):
        # a boolean where numbers belong, first or not, is refused naming the input
        expect(post(server, url, body), 400, "Invalid value for the input type - Expected: FP32 numbers; Actual: true; "
                                            "input name: x")
    expect_prefix(post(server, url, {"instances": [{"x": [1, 2]}, {"x": [3]}]}), 400, row)
    expect_prefix(post(server, url, {"inputs": {"x": [{"b64": "not base64!"}]}}), 400, column)
    expect_prefix(post(server, url, {"inputs": {"x": [["text"]]}}), 400, column)  # plain strings: U8/STRING inputs only


def test_no_name_forms_need_a_single_input_model(server: DropinServer) -> None:
    message = "Inputs inside buffer does not match expected format."
    expect_prefix(post(server, "/v1/models/two:predict", {"instances": [[1, 2]]}), 400, message)
    expect_prefix(post(server, "/v1/models/two:predict", {"inputs": [[1, 2]]}), 400, message)
    expect(post(server, "/v1/models/two:predict", {"instances": [{"a": [1, 2], "b": [1, 2]}, {"a": [1, 2]}]}), 400,
           "Invalid JSON structure. Request inputs have different batch sizes")


def test_resolution_errors(server: DropinServer) -> None:
    body = {"instances": [[1.0, 2.0]]}
    expect(post(server, "/v1/models/nope:predict", body), 404, "Model with requested name is not found")
    expect(
        post(server, "/v1/models/dynamic/versions/5:predict", body), 404, "Model with requested version is not found"
    )
    expect(
        post(server, "/v1/models/broken/versions/2:predict", body),
        404,
        "Model with requested version is not loaded yet",
    )
    # resolution comes before parsing, as in OVMS
    expect(post(server, "/v1/models/nope:predict", b"not json"), 404, "Model with requested name is not found")


def test_url_and_method_errors(server: DropinServer) -> None:
    port = server.rest_port
    expect_prefix(http(port, "GET", "/v1/models/scale:predict"), 406, "Unsupported method")
    expect_prefix(http(port, "POST", "/v1/models/scale", {}), 406, "Unsupported method")
    expect_prefix(http(port, "POST", "/v1/models/scale/metadata", {}), 406, "Unsupported method")
    expect_prefix(http(port, "GET", "/v1/config/reload"), 406, "Unsupported method")
    expect_prefix(http(port, "PUT", "/v1/models/scale:predict", {}), 406, "Unsupported method")
    expect_prefix(http(port, "DELETE", "/v1/models/scale"), 406, "Unsupported method")
    for verb in ("classify", "regress"):
        expect_prefix(
            http(port, "POST", f"/v1/models/scale:{verb}", {"instances": [1]}), 404, "Requested REST resource not found"
        )
    for path in ("/", "/v1", "/v1/modelz/scale", "/v1/models/scale/versions/x:predict", "/v2/models/scale", "/metrics"):
        expect_prefix(http(port, "GET", path), 400, "Invalid request URL")
    expect_prefix(http(port, "GET", "/v1/models/../config"), 400, "The provided base path is invalid or doesn't exists")
    # :predict URLs that the common URL's quick check (no regular expression) must leave alone
    for path in ("/v1/models/:predict", "/v1/models/sc:ale:predict", "/v1/models/scale/versions/x:predict",
                 "/v1/models/scale/:predict", "/v1/models//versions/1:predict"):
        expect_prefix(http(port, "POST", path, {"instances": [[1.0, 2.0]]}), 400, "Invalid request URL")
    expect(http(port, "POST", "/v1/models/nope:predict", {"instances": [[1.0, 2.0]]}), 404,
           "Model with requested name is not found")


def test_outputs_that_cannot_be_rows(server: DropinServer) -> None:
    body = {"x": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}
    expect_prefix(
        post(server, "/v1/models/uneven:predict", {"instances": body["x"]}), 500, "Response parsing to JSON error"
    )
    columns = post(server, "/v1/models/uneven:predict", {"inputs": body})
    assert columns.json == {"outputs": {"y": body["x"], "colsum": [9.0, 12.0]}}


def test_body_size_limit(server: DropinServer) -> None:
    big = json.dumps({"instances": [[0.5] * 5] * (BODY_LIMIT // 20)}).encode()
    assert len(big) > BODY_LIMIT
    expect_prefix(post(server, "/v1/models/dynamic:predict", big), 413, "Request body is too large")
    chunks = iter([big[i:i + 8192] for i in range(0, len(big), 8192)])
    reply = http(server.rest_port, "POST", "/v1/models/dynamic:predict", chunks)
    expect_prefix(reply, 413, "Request body is too large")
    assert post(server, "/v1/models/dynamic:predict", {"instances": [[0.5] * 5]}).status == 200  # still serving


def _memory(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise AssertionError(key)


def test_default_body_limit_bounds_decoding_memory(repo: Path, start_server) -> None:
    """The default --rest_max_body_bytes (64 MiB; it was 1 GiB) times the documented peak multiple
    of a float body (about 11: a Python float per number while decoding) stays near 1 GB."""
    srv = start_server(
        "--model_name",
        "dynamic",
        "--model_path",
        str(repo / "dynamic"),
        "--rest_port",
        str(free_port()),
        "--file_system_poll_wait_seconds",
        "0",
    )
    srv.wait_for("dynamic", 1)
    row = "[" + ",".join(["0.1234"] * 1000) + "]"
    body = ('{"inputs": {"x": [' + ",".join([row] * (16 * 2**20 // len(row))) + "]}}").encode()
    assert post(srv, "/v1/models/dynamic:predict", {"inputs": {"x": [[1.0]]}}).status == 200
    before = _memory(srv.proc.pid, "VmRSS:")
    reply = post(srv, "/v1/models/dynamic:predict", body)
    assert reply.status == 200 and reply.body.startswith(b'{"outputs":{"y":[[1.1234,')
    growth = (_memory(srv.proc.pid, "VmHWM:") - before) / len(body)
    assert growth < 14, f"peak memory grew by {growth:.1f} times the body"  # measured 10 to 12
    limit = 64 << 20
    expect(post(srv, "/v1/models/dynamic:predict", b" " * (limit + 1)), 413,
           f"Request body is too large - {limit + 1} bytes; the limit is {limit} (--rest_max_body_bytes)")
    assert post(srv, "/v1/models/dynamic:predict", b" " * (limit - 20) + b'{"inputs": [[1.0]]}').status == 200


# -- config status and reload ----------------------------------------------------------------


def test_config_status(server: DropinServer) -> None:
    reply = get(server, "/v1/config")
    assert reply.status == 200
    data = reply.json
    assert sorted(data) == ["broken", "digits", "dynamic", "identity", "scale", "strings", "two", "uneven"]
    assert data["scale"] == {"model_version_status": [status_entry(1), status_entry(2)]}


def test_config_reload(start_server, tmp_path: Path) -> None:
    modelgen.scale_model(tmp_path / "a" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(tmp_path / "b" / "1", shape=(-1, 2), factor=3.0)
    config = tmp_path / "config.json"
    write = lambda names: config.write_text(json.dumps(  # noqa: E731
        {"model_config_list": [{"config": {"name": n, "base_path": n}} for n in names]}))
    write(["a"])
    srv = start_server(
        "--config_path", str(config), "--file_system_poll_wait_seconds", "0", "--version_settle_seconds", "0",
        "--rest_port", str(free_port()),
    )
    srv.wait_for("a", 1)
    unchanged = post(srv, "/v1/config/reload", b"")
    assert unchanged.status == 200 and unchanged.json == {"a": {"model_version_status": [status_entry(1)]}}
    write(["a", "b"])
    added = post(srv, "/v1/config/reload", b"")
    assert added.status == 201
    assert added.json == {
        "a": {"model_version_status": [status_entry(1)]},
        "b": {"model_version_status": [status_entry(1)]},
    }
    modelgen.scale_model(tmp_path / "a" / "2", shape=(-1, 2), factor=4.0)  # a new version: the reload rescans too
    rescanned = post(srv, "/v1/config/reload", b"")
    assert rescanned.status == 201
    assert rescanned.json["a"] == {"model_version_status": [status_entry(1, "END"), status_entry(2)]}
    expect(
        post(srv, "/v1/models/a/versions/1:predict", {"instances": [[1, 1]]}),
        404,
        "Model with requested version is retired",
    )
    assert post(srv, "/v1/models/a:predict", {"instances": [[1, 1]]}).json == {"predictions": [[4.0, 4.0]]}
    config.write_text("{not json")
    broken = post(srv, "/v1/config/reload", b"")
    assert broken.status == 500 and broken.error.startswith("Reloading config file failed - "), broken.body
    assert post(srv, "/v1/models/b:predict", {"instances": [[1, 1]]}).json == {"predictions": [[3.0, 3.0]]}


# -- ovmsclient's HTTP client ---------------------------------------------------------------


def test_ovmsclient_http(server: DropinServer, repo: Path) -> None:
    from ovmsclient import make_http_client
    from ovmsclient.tfs_compat.base.errors import InvalidInputError, ModelNotFoundError

    client = make_http_client(f"127.0.0.1:{server.rest_port}")
    x = np.random.default_rng(2).standard_normal((1, 3, 4)).astype(np.float32)
    # JSON numbers are float32 values written in their shortest form: exact once read back as float32
    got = client.predict({"x": x}, "scale").astype(np.float32)
    np.testing.assert_array_equal(got, modelgen.run_numpy(repo / "scale" / "2", {"x": x})["y"])
    got = client.predict({"x": x}, "scale", 1).astype(np.float32)
    np.testing.assert_array_equal(got, modelgen.run_numpy(repo / "scale" / "1", {"x": x})["y"])
    outputs = client.predict({"x": np.ones((2, 3), np.float32)}, "dynamic")
    np.testing.assert_array_equal(outputs["total"], [3.0, 3.0])
    assert client.get_model_metadata("scale") == {
        "model_version": 2,
        "inputs": {"x": {"dtype": "DT_FLOAT", "shape": [1, 3, 4]}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "shape": [1, 3, 4]}},
    }
    assert client.get_model_status("scale") == {
        1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"},
        2: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"},
    }
    assert client.get_model_status("scale", 1) == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}}
    with pytest.raises(ModelNotFoundError):
        client.get_model_status("nope")
    with pytest.raises(ModelNotFoundError):
        client.predict({"x": x}, "scale", 9)
    with pytest.raises(InvalidInputError, match="Invalid input shape"):
        client.predict({"x": np.ones((1, 3, 5), np.float32)}, "scale")


def test_server_keeps_serving_after_every_error(server: DropinServer) -> None:
    time.sleep(0)  # the errors above ran on the same process
    reply = post(server, "/v1/models/dynamic:predict", {"inputs": {"x": [[1.0, 2.0]]}})
    assert reply.json == {"outputs": {"y": [[2.0, 3.0]], "total": [3.0]}}
    assert server.proc.poll() is None
    assert "Traceback" not in server.log, server.log
