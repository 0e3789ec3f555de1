"""REST JSON <-> tensors in-process (dropin.rest_json), with orjson and with the stdlib fallback:
dtype coercion, raggedness, b64 and plain strings, and the predictions / outputs shapes."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from dropin import rest_json
from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.rest_json import PredictRequest, dumps, loads
from dropin.rest_response import predict_response
from dropin.shapes import TensorSpec

X = {"x": TensorSpec.of("x", DType.FP32, [-1, 3])}


@pytest.fixture(params=["orjson", "json"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "json":
        monkeypatch.setattr(rest_json, "orjson", None)
    return request.param


def tensors(body: object, specs: dict[str, TensorSpec] = X) -> dict:
    return PredictRequest.parse(json.dumps(body).encode()).tensors(specs)


def status_of(body: object, specs: dict[str, TensorSpec] = X) -> Status:
    with pytest.raises(DropinError) as info:
        tensors(body, specs)
    return info.value.status


def test_numbers_take_the_model_dtype(codec: str) -> None:
    for dtype in DType:
        if dtype in (DType.STRING, DType.BOOL):
            continue
        row = [1, 2.5, 3] if dtype.numpy.kind == "f" else [1, 2.0, 3]  # 2.0 is an integer, 2.5 is not
        got = tensors({"instances": [row]}, {"x": TensorSpec.of("x", dtype, [-1, 3])})["x"]
        assert got.tf_dtype == dtype.tf_enum and got.shape == (1, 3)
        array = got.array("x", dtype)
        assert array.dtype == dtype.numpy
        np.testing.assert_array_equal(array, np.array([row]).astype(dtype.numpy))


def error_of(body: object, specs: dict[str, TensorSpec] = X) -> str:
    with pytest.raises(DropinError) as info:
        tensors(body, specs)
    return str(info.value)


def spec(dtype: DType) -> dict[str, TensorSpec]:
    return {"x": TensorSpec.of("x", dtype, [-1, -1])}


@pytest.mark.parametrize(
    "dtype,row,message",
    [
        (DType.I8, [300, -200], "Expected: I8 values, integers in [-128, 127]; Actual: 300"),
        (DType.U8, [1, 256, -1], "Expected: U8 values, integers in [0, 255]; Actual: 256"),
        (DType.U8, [1, -1], "Expected: U8 values, integers in [0, 255]; Actual: -1"),
        (DType.I32, [1, 1.9], "Expected: I32 values, integers in [-2147483648, 2147483647]; Actual: 1.9"),
        (
            DType.I64,
            [2**70],
            "Expected: I64 values, integers in [-9223372036854775808, 9223372036854775807]; Actual: "
            "1.1805916207174113e+21",
        ),
        (DType.I64, [2**60 + 0.0], "within +-2^53); Actual: 1.152921504606847e+18"),
        (
            DType.U64,
            [-1, 2**64 - 1],
            "Expected: U64 values, integers in [0, 18446744073709551615]; Actual: -1.0",
        ),  # numpy reads these as floats
        (DType.FP32, [1, 1e40], "Expected: FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: 1e+40"),
        (DType.FP32, [-3.5e38, 1], "Expected: FP32 values, in [-3.40282e+38, 3.40282e+38]; Actual: -3.5e+38"),
        (DType.FP16, [70000], "Expected: FP16 values, in [-65504, 65504]; Actual: 70000"),
        (DType.FP32, [1, True, 2], "Expected: FP32 numbers; Actual: true"),
        (DType.I32, [[1, 2], [3, False]], "Expected: I32 numbers; Actual: false"),
        (DType.FP32, [True, 1.5], "Expected: FP32 numbers; Actual: true"),  # a boolean first
        (DType.U8, [[False, True]], "Expected: U8 numbers; Actual: false"),  # only booleans
        (DType.BOOL, [0, 1, 2], "Expected: BOOL values, integers in [0, 1]; Actual: 2"),
    ],
)
def test_numbers_the_input_type_would_change_are_refused(codec: str, dtype: DType, row: list, message: str) -> None:
    text = error_of({"inputs": {"x": [row]}}, spec(dtype))
    assert text.startswith("Invalid value for the input type - ") and text.endswith(f"{message}; input name: x"), text


def test_numbers_that_fit_are_kept(codec: str) -> None:
    for dtype, row in [
        (DType.I8, [-128, 127]),
        (DType.U8, [0, 255]),
        (DType.U64, [2**64 - 1, 0]),
        (DType.FP32, [2**70, 3.4e38]),
        (DType.FP32, [-3.4028234663852886e38, 3.4028234663852886e38, 1.5]),  # the ends of FP32's range
        (DType.FP32, [2**63 - 1, -(2**63)]),  # integers: read as int64, always within FP32's range
        (DType.FP64, [1.7976931348623157e308, -1.5]),
        (DType.FP16, [65504, -65504]),
        (DType.BOOL, [0, 1]),
        (DType.I64, [2**63 - 1, -(2**63)]),
    ]:
        got = tensors({"inputs": {"x": [row]}}, spec(dtype))["x"].array("x", dtype)
        assert got.tolist() == [[dtype.numpy.type(v).item() for v in row]], dtype
    # a boolean input takes JSON booleans; "true" inside a string is no boolean
    assert tensors({"inputs": {"x": [[True, False]]}}, spec(DType.BOOL))["x"].array("x", DType.BOOL).tolist() == [
        [True, False]
    ]
    assert tensors({"signature_name": "true", "inputs": {"x": [[1, 2]]}}, spec(DType.I32))["x"].array(
        "x", DType.I32
    ).tolist() == [[1, 2]]


def test_empty_arrays_make_zero_dims_and_deep_nesting_is_refused(codec: str) -> None:
    assert tensors({"inputs": {"x": [[], []]}})["x"].shape == (2, 0)
    assert tensors({"instances": [[]]})["x"].shape == (1, 0)
    assert status_of({"inputs": {"x": [[], [1]]}}) is Status.REST_COULD_NOT_PARSE_INPUT  # ragged
    deep: object = "a"
    for _ in range(900):
        deep = [deep]
    strings = {"x": TensorSpec.of("x", DType.STRING, [-1])}
    assert "arrays nested deeper than 32 levels" in error_of({"inputs": deep}, strings)
    assert tensors({"inputs": [[["a"]]]}, strings)["x"].shape == (1, 1, 1)


def test_unknown_inputs_are_typed_as_ovms_guesses(codec: str) -> None:
    got = tensors({"inputs": {"x": [[1, 2, 3]], "extra": [1, 2], "other": [1.5]}})
    assert (got["extra"].tf_dtype, got["other"].tf_dtype) == (DType.I32.tf_enum, DType.FP32.tf_enum)


def test_bad_bodies(codec: str) -> None:
    for body in (b"{", b'{"inputs": [NaN]}', b'{"inputs": [Infinity]}', b'{"inputs": [1e400]}', b"\xff", b""):
        with pytest.raises(DropinError) as info:
            loads(body)
        assert info.value.status is Status.JSON_INVALID, body
    assert status_of([1]) is Status.REST_BODY_IS_NOT_AN_OBJECT
    assert status_of({"instances": [[1, 2], [3]]}) is Status.REST_COULD_NOT_PARSE_INSTANCE
    assert status_of({"inputs": [[1, 2], [3]]}) is Status.REST_COULD_NOT_PARSE_INPUT
    assert status_of({"inputs": [[[1], [2]], [3, 4]]}) is Status.REST_COULD_NOT_PARSE_INPUT


def test_binary_and_plain_strings(codec: str) -> None:
    strings = {"s": TensorSpec.of("s", DType.STRING, [-1, -1])}
    b64 = lambda raw: {"b64": base64.b64encode(raw).decode()}  # noqa: E731
    got = tensors({"inputs": [[b64(b"a"), b64(b"\x00")], [b64(b""), b64(b"z")]]}, strings)["s"]
    assert (got.tf_dtype, got.shape) == (DType.STRING.tf_enum, (2, 2))
    assert got.strings().tolist() == [b"a", b"\x00", b"", b"z"]
    assert tensors({"inputs": [["x", "y"]]}, strings)["s"].strings().tolist() == [b"x", b"y"]
    assert status_of({"inputs": [["x"], "y"]}, strings) is Status.REST_COULD_NOT_PARSE_INPUT
    assert status_of({"inputs": [["x"], ["y", "z"]]}, strings) is Status.REST_COULD_NOT_PARSE_INPUT
    assert status_of({"inputs": [[{"b64": "x", "other": 1}]]}, strings) is Status.REST_COULD_NOT_PARSE_INPUT
    assert status_of({"inputs": {"x": ["plain"]}}) is Status.REST_COULD_NOT_PARSE_INPUT  # FP32 input: b64 only


def test_responses(codec: str) -> None:
    outputs = {"p": np.array([[0.1, 0.2], [0.3, 0.4]], np.float32), "label": np.array([1, 0], np.int64),
               "half": np.array([0.5, 1.5], np.float16), "name_bytes": np.array([b"\x01", b"\x02"], dtype=object)}
    rows = json.loads(dumps(predict_response("row", outputs)))
    for row in rows["predictions"]:  # exact once read back as float32 (orjson also writes them shortest)
        row["p"] = np.float32(row["p"]).tolist()
    assert rows == {"predictions": [
        {"p": np.float32([0.1, 0.2]).tolist(), "label": 1, "half": 0.5, "name_bytes": {"b64": "AQ=="}},
        {"p": np.float32([0.3, 0.4]).tolist(), "label": 0, "half": 1.5, "name_bytes": {"b64": "Ag=="}},
    ]}
    columns = json.loads(dumps(predict_response("column", outputs)))
    np.testing.assert_array_equal(np.float32(columns["outputs"]["p"]), outputs["p"])
    if codec == "orjson":
        assert columns["outputs"]["p"] == [[0.1, 0.2], [0.3, 0.4]]  # float32 in its shortest form
    assert json.loads(dumps(predict_response("column", {"only": np.arange(3)}))) == {"outputs": [0, 1, 2]}
    assert json.loads(dumps(predict_response("row", {"only": np.arange(3)}))) == {"predictions": [0, 1, 2]}
    transposed = np.arange(6, dtype=np.float32).reshape(2, 3).T  # not C-contiguous
    assert json.loads(dumps(predict_response("column", {"t": transposed}))) == {"outputs": transposed.tolist()}
    with pytest.raises(DropinError) as info:
        predict_response("row", {"a": np.ones((2, 1)), "b": np.ones((3, 1))})
    assert info.value.status is Status.REST_PROTO_TO_STRING_ERROR


def test_literal_tokens_are_found_cheaply() -> None:
    from dropin.rest_json import may_hold_literals

    assert not may_hold_literals(json.dumps({"signature_name": "serving_default", "inputs": [[0.5] * 1000]}).encode())
    assert (
        may_hold_literals(b'{"inputs": [1, true]}')
        and may_hold_literals(b'{"inputs": [false]}')
        and may_hold_literals(b'{"inputs": [1, null]}')
        and may_hold_literals(b"true")
        and may_hold_literals(b"null")
    )
    many = "lu" * 40  # the letters are common: the words themselves are searched
    assert may_hold_literals(json.dumps({"s": many, "x": [1, True]}).encode())
    assert may_hold_literals(json.dumps({"s": many, "x": [1, None]}).encode())
    assert not may_hold_literals(json.dumps({"s": many, "x": [1, 2]}).encode())
