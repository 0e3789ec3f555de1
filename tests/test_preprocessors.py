"""The preprocessor contract (dropin/preprocess.py), proved by a third-party-style preprocessor:
UTF-8 text -> token ids for a model that takes I32 ids, installed as a real entry point that the
real server process loads; plus the contract's helpers and its error paths."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin._proto.tensorflow.core.framework import tensor_pb2
from dropin.errors import DropinError, Status
from dropin.preprocess import check_binary_batch, input_option
from dropin.shapes import Dim
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.expect import expect_error
from dropin.testing.fake_plugins import install_fake_distribution

# What a third party ships: a module with a hook, a Preprocessor and an InputConverter.
TOKENIZER_PLUGIN = '''
import numpy as np

from dropin.dtypes import DType
from dropin.errors import DropinError, Status
from dropin.hookspecs import hookimpl
from dropin.preprocess import InputConverter, Preprocessor, check_binary_batch


class CodepointConverter(InputConverter):
    """Each text becomes its Unicode code points, padded with 0 to the model's length."""

    blocking = True  # real tokenizers take time: run in the server's worker threads

    def __init__(self, spec):
        self.batch = spec.shape[0]
        self.length = spec.shape[1].low

    def convert(self, name, shape, values):
        count = check_binary_batch(name, shape, values, self.batch)
        ids = np.zeros((count, self.length), dtype=np.int32)
        for row, value in enumerate(values):
            codes = [ord(c) for c in value.decode("utf-8", errors="replace")]
            if len(codes) > self.length:
                raise DropinError(
                    Status.INVALID_SHAPE,
                    f"Expected: at most {self.length} characters; Actual: {len(codes)}; input name: {name}",
                )
            ids[row, : len(codes)] = codes
        return ids


class CodepointTokenizer(Preprocessor):
    def claim(self, spec, options):
        # I32 [batch, length] inputs named "*ids" with a fixed length
        if spec.dtype is DType.I32 and spec.rank == 2 and spec.name.endswith("ids") and spec.shape[1].is_static:
            return CodepointConverter(spec)
        return None


class BrokenConverter(InputConverter):
    def convert(self, name, shape, values):
        return np.zeros((1, 3), dtype=np.float64)  # wrong dtype and shape: the plugin's fault


class Broken(Preprocessor):
    def claim(self, spec, options):
        return BrokenConverter() if spec.name == "x" else None


@hookimpl
def dropin_register_preprocessors(registry):
    registry.add("codepoints", CodepointTokenizer)
    registry.add("broken", Broken)
'''


@pytest.fixture(scope="module")
def tokens_server(tmp_path_factory: pytest.TempPathFactory):
    from dropin.testing.server import DropinServer

    root = tmp_path_factory.mktemp("tokens")
    site = root / "site"
    install_fake_distribution(
        site, "dropin_codepoints", {"codepoints": "codepoints_plugin"}, {"codepoints_plugin": TOKENIZER_PLUGIN}
    )
    modelgen.token_model(root / "tokens" / "1", length=8)
    modelgen.dynamic_model(root / "dynamic" / "1")
    config = root / "config.json"
    config.write_text(
        '{"model_config_list": ['
        '{"config": {"name": "tokens", "base_path": "tokens"}},'
        '{"config": {"name": "dynamic", "base_path": "dynamic"}}]}'
    )
    server = DropinServer(
        ["--config_path", str(config), "--file_system_poll_wait_seconds", "0"], env={"PYTHONPATH": str(site)}
    )
    try:
        server.wait_for("tokens", 1)
        server.wait_for("dynamic", 1)
        yield server
    finally:
        server.stop()


def texts(*items: bytes, shape: list[int] | None = None) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=7, string_val=list(items))
    for size in [len(items)] if shape is None else shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def test_third_party_tokenizer_serves_text(tokens_server) -> None:
    response = tokens_server.predict.Predict(
        predict_request("tokens", {"ids": texts(b"hi", "héllo €".encode())}), timeout=20
    )
    got = outputs_of(response)
    expected = np.zeros((2, 8), np.int32)
    expected[0, :2] = [ord("h"), ord("i")]
    expected[1, :7] = [ord(c) for c in "héllo €"]
    np.testing.assert_array_equal(got["echo"], expected)
    np.testing.assert_array_equal(got["total"], expected.sum(axis=1))


def test_numeric_ids_bypass_the_tokenizer(tokens_server) -> None:
    ids = np.arange(16, dtype=np.int32).reshape(2, 8)
    got = outputs_of(tokens_server.predict.Predict(predict_request("tokens", {"ids": ids}), timeout=20))
    np.testing.assert_array_equal(got["echo"], ids)


def test_third_party_errors_reach_the_client(tokens_server) -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect_error(
        tokens_server.predict.Predict,
        predict_request("tokens", {"ids": texts(b"far too long a text")}),
        invalid,
        "Invalid input shape - Expected: at most 8 characters; Actual: 19; input name: ids",
    )
    expect_error(
        tokens_server.predict.Predict,
        predict_request("tokens", {"ids": texts(b"a", b"")}),
        invalid,
        "String val is empty",
    )
    expect_error(
        tokens_server.predict.Predict,
        predict_request("tokens", {"ids": texts(b"a", shape=[1, 1])}),
        invalid,
        "Invalid number of shape dimensions - Expected number of binary input shape dimensions: 1; Actual: 2; "
        "input name: ids",
    )
    # a dtype the converter does not accept is the core's precision error, as without a plugin
    expect_error(tokens_server.predict.Predict, predict_request("tokens", {"ids": np.zeros((1, 8), np.int64)}), invalid,
                 "Invalid input precision - Expected: I32; Actual: I64; input name: ids")


def test_a_converter_returning_the_wrong_tensor_is_the_plugins_fault(tokens_server) -> None:
    expect_error(
        tokens_server.predict.Predict,
        predict_request("dynamic", {"x": texts(b"abc")}),
        grpc.StatusCode.INTERNAL,
        "Plugin error - preprocessor 'broken' returned float64 for input x; the model expects FP32",
    )


# -- the contract's helpers -------------------------------------------------------------------------


def strings(*items: bytes) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = list(items)
    return out


@pytest.mark.parametrize(
    "shape,values,batch,message",
    [
        (
            (1, 1),
            (b"a",),
            Dim.static(1),
            "Invalid number of shape dimensions - Expected number of binary input shape dimensions: 1; Actual: "
            "2; input name: t",
        ),
        (
            (),
            (b"a",),
            Dim.static(1),
            "Invalid number of shape dimensions - Expected number of binary input shape dimensions: 1; Actual: "
            "0; input name: t",
        ),
        ((1,), (b"a",), None, "Invalid input batch size - Batch not present in input name: t"),
        ((2,), (b"a",), Dim.dynamic(), "Invalid input batch size"),
        ((2,), (b"a", b"b"), Dim.static(1), "Invalid input batch size - Expected: 1; Actual: 2; input name: t"),
        ((3,), (b"a", b"b", b"c"), Dim(1, 2), "Invalid input batch size - Expected: [1~2]; Actual: 3; input name: t"),
        ((0,), (), Dim.dynamic(), "Invalid input batch size"),
        ((2,), (b"a", b""), Dim.dynamic(), "String val is empty"),
    ],
)
def test_check_binary_batch_errors(shape, values, batch, message: str) -> None:
    with pytest.raises(DropinError) as info:
        check_binary_batch("t", shape, strings(*values), batch)
    assert str(info.value) == message
    assert info.value.status.grpc_code == grpc.StatusCode.INVALID_ARGUMENT


def test_check_binary_batch_returns_the_batch() -> None:
    assert check_binary_batch("t", (2,), strings(b"a", b"b"), Dim.dynamic()) == 2
    assert check_binary_batch("t", (1,), strings(b"a"), Dim(1, 4)) == 1


def test_input_option_for_the_model_or_per_input() -> None:
    assert input_option({"mean": [1, 2, 3]}, "mean", "x") == [1, 2, 3]
    assert input_option({"mean": {"x": 5, "y": 6}}, "mean", "y") == 6
    assert input_option({"mean": {"x": 5}}, "mean", "z") is None
    assert input_option({}, "mean", "x") is None


def test_plugin_module_is_importable_as_a_third_party_would_write_it(tmp_path: Path) -> None:
    namespace: dict = {}
    exec(compile(TOKENIZER_PLUGIN, "codepoints_plugin.py", "exec"), namespace)
    from dropin.dtypes import DType
    from dropin.shapes import TensorSpec

    converter = namespace["CodepointTokenizer"]().claim(TensorSpec.of("ids", DType.I32, [-1, 4]), {})
    assert converter.convert("ids", (1,), strings(b"ab")).tolist() == [[97, 98, 0, 0]]
    assert namespace["CodepointTokenizer"]().claim(TensorSpec.of("ids", DType.I64, [-1, 4]), {}) is None
    assert Status.STRING_VAL_EMPTY.message == "String val is empty"
