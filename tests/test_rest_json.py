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
from dropin.rest_json import PredictRequest, dumps, loads, predict_response
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
    for dtype in (DType.FP32, DType.FP16, DType.FP64, DType.I8, DType.U8, DType.I64, DType.U64):
        got = tensors({"instances": [[1, 2.5, 3]]}, {"x": TensorSpec.of("x", dtype, [-1, 3])})["x"]
        assert got.tf_dtype == dtype.tf_enum and got.shape == (1, 3)
        array = got.array("x", dtype)
        assert array.dtype == dtype.numpy
        np.testing.assert_array_equal(array, np.array([[1, 2.5, 3]]).astype(dtype.numpy))


def test_unknown_inputs_are_typed_as_ovms_guesses(codec: str) -> None:
    got = tensors({"inputs": {"x": [[1, 2, 3]], "extra": [1, 2], "other": [1.5]}})
    assert (got["extra"].tf_dtype, got["other"].tf_dtype) == (DType.I32.tf_enum, DType.FP32.tf_enum)


def test_bad_bodies(codec: str) -> None:
    for body in (b"{", b'{"inputs": [NaN]}', b'{"inputs": [Infinity]}', b"\xff", b""):
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
