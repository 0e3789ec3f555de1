"""Pipelines served like models, end to end: a real server process, gRPC and REST clients, the
outputs compared with the numpy models run directly on the same input (model A, then model B)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from dropin.dtypes import DType
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import RestError
from dropin.testing.server import DropinServer, free_port


def wire(node: str, item: str) -> dict[str, str]:
    return {"node_name": node, "data_item": item}


def model_node(name: str, model: str, inputs: dict[str, dict[str, str]], outputs: dict[str, str],
               **extra: Any) -> dict[str, Any]:
    """A "DL model" node: `inputs` model input -> source, `outputs` model output -> alias."""
    return {
        "name": name, "type": "DL model", "model_name": model,
        "inputs": [{k: v} for k, v in inputs.items()],
        "outputs": [{"data_item": k, "alias": v} for k, v in outputs.items()], **extra,
    }


def custom_node(name: str, library: str, inputs: dict[str, dict[str, str]], outputs: dict[str, str],
                **extra: Any) -> dict[str, Any]:
    node = model_node(name, "", inputs, outputs, **extra)
    del node["model_name"]
    return {**node, "type": "custom", "library_name": library}


def pipeline(name: str, inputs: list[str], nodes: list[dict[str, Any]], outputs: dict[str, dict[str, str]],
             **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputs": inputs, "nodes": nodes, "outputs": [{k: v} for k, v in outputs.items()], **extra}


LIBRARIES = [
    {"name": "add_sub", "base_path": "/ovms/lib/libcustom_node_add_sub.so"},  # found by its file name
    {"name": "splitter", "base_path": "/ovms/lib/libcustom_node_split_rows.so"},
    {"name": "sum_rows", "base_path": "/unused/lib.so"},  # found by its name
]

PIPELINES = [
    # a chain of two models: plus(double(x))
    pipeline("chain", ["in"], [
        model_node("a", "double", {"x": wire("request", "in")}, {"y": "doubled"}),
        model_node("b", "plus", {"x": wire("a", "doubled")}, {"y": "out"}),
    ], {"out": wire("b", "out")}),
    # fan-out and fan-in: both models on the request, then one model on both results
    pipeline("fan", ["in"], [
        model_node("a", "double", {"x": wire("request", "in")}, {"y": "y"}),
        model_node("b", "plus", {"x": wire("request", "in")}, {"y": "y"}),
        model_node("c", "two", {"a": wire("a", "y"), "b": wire("b", "y")}, {"sum": "sum", "diff": "diff"}),
    ], {"sum": wire("c", "sum"), "diff": wire("c", "diff"), "doubled": wire("a", "y")}),
    # a custom node after a model
    pipeline("custom", ["in"], [
        model_node("a", "double", {"x": wire("request", "in")}, {"y": "y"}),
        custom_node("shift", "add_sub", {"input_numbers": wire("a", "y")}, {"output_numbers": "shifted"},
                    params={"add_value": "5", "sub_value": "1.5"}),
    ], {"out": wire("shift", "shifted")}),
    # a dynamic demultiplexer, gathered at the response: one branch per row
    pipeline("rows", ["in"], [
        custom_node("split", "splitter", {"data": wire("request", "in")}, {"rows": "rows"}, demultiply_count=-1),
        model_node("a", "double", {"x": wire("split", "rows")}, {"y": "y"}),
    ], {"out": wire("a", "y")}),
    # a fixed demultiplexer of 3, gathered by a node
    pipeline("three", ["in"], [
        custom_node("split", "splitter", {"data": wire("request", "in")}, {"rows": "rows"}, demultiply_count=3),
        model_node("a", "double", {"x": wire("split", "rows")}, {"y": "y"}),
        custom_node("total", "sum_rows", {"rows": wire("a", "y")}, {"total": "total"}, gather_from_node="split"),
    ], {"total": wire("total", "total")}),
]


def write_config(repo: Path, pipelines: list[dict[str, Any]] = PIPELINES, **extra: Any) -> Path:
    models = [{"config": {"name": n, "base_path": str(repo / n)}} for n in ("double", "plus", "two")]
    config = repo / "config.json"
    config.write_text(json.dumps({
        "model_config_list": models, "custom_node_library_config_list": LIBRARIES,
        "pipeline_config_list": pipelines, **extra,
    }))
    return config


def make_models(repo: Path) -> None:
    modelgen.scale_model(repo / "double" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(repo / "plus" / "1", shape=(-1, 2), factor=1.0, offset=1.0)
    modelgen.two_input_model(repo / "two" / "1")


@pytest.fixture
def server(repo: Path, start_server) -> DropinServer:  # type: ignore[no-untyped-def]
    make_models(repo)
    srv: DropinServer = start_server("--config_path", str(write_config(repo)), "--rest_port", str(free_port()))
    for name in ("double", "plus", "two", "chain"):
        srv.wait_for(name, 1)
    return srv


X = np.array([[1.0, -2.0], [3.5, 4.0], [0.25, 8.0]], np.float32)


def run(repo: Path, model: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
    return modelgen.run_numpy(repo / model / "1", inputs)


def test_a_chain_of_two_models_over_grpc_and_rest(server: DropinServer, repo: Path) -> None:
    expected = run(repo, "plus", x=run(repo, "double", x=X)["y"])["y"]
    np.testing.assert_array_equal(server.client.predict("chain", {"in": X})["out"], expected)
    assert server.rest is not None
    np.testing.assert_array_equal(server.rest.predict("chain", {"in": X})["out"], expected)


def test_fan_out_and_fan_in_and_output_filter(server: DropinServer, repo: Path) -> None:
    doubled, plus = run(repo, "double", x=X)["y"], run(repo, "plus", x=X)["y"]
    expected = {**run(repo, "two", a=doubled, b=plus), "doubled": doubled}
    got = server.client.predict("fan", {"in": X})
    assert sorted(got) == ["diff", "doubled", "sum"]
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
    filtered = server.client.predict("fan", {"in": X}, output_filter=["diff"])
    assert list(filtered) == ["diff"]
    np.testing.assert_array_equal(filtered["diff"], expected["diff"])
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict("fan", {"in": X}, output_filter=["nope"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expected one of: diff, doubled, sum; Actual: nope" in info.value.details()


def test_a_custom_node_after_a_model(server: DropinServer, repo: Path) -> None:
    expected = run(repo, "double", x=X)["y"] + np.float32(5 - 1.5)
    np.testing.assert_array_equal(server.client.predict("custom", {"in": X})["out"], expected)


@pytest.mark.parametrize("rows", [1, 3, 5])
def test_a_dynamic_demultiplexer_runs_one_branch_per_row(server: DropinServer, repo: Path, rows: int) -> None:
    x = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    expected = np.stack([run(repo, "double", x=x[i : i + 1])["y"] for i in range(rows)])
    got = server.client.predict("rows", {"in": x})["out"]
    assert got.shape == (rows, 1, 2)
    np.testing.assert_array_equal(got, expected)


def test_a_fixed_demultiplexer_gathered_by_a_node(server: DropinServer, repo: Path) -> None:
    expected = sum(run(repo, "double", x=X[i : i + 1])["y"] for i in range(3))
    np.testing.assert_array_equal(server.client.predict("three", {"in": X})["total"], expected)
    with pytest.raises(grpc.RpcError) as info:  # 2 rows where the configuration says 3
        server.client.predict("three", {"in": X[:2]})
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "node 'split' demultiplies into 3 branches" in info.value.details()
    np.testing.assert_array_equal(server.client.predict("three", {"in": X})["total"], expected)  # still serves


def test_status_and_metadata(server: DropinServer) -> None:
    assert server.client.status("chain") == {1: ("AVAILABLE", 0, "OK")}
    assert server.client.status("chain", 1) == {1: ("AVAILABLE", 0, "OK")}
    assert server.client.metadata("chain") == {
        "inputs": {"in": (DType.FP32, (-1, 2))}, "outputs": {"out": (DType.FP32, (-1, 2))}
    }
    assert server.client.metadata("rows")["outputs"] == {"out": (DType.FP32, (-1, -1, 2))}
    assert server.client.metadata("three")["outputs"] == {"total": (DType.FP32, (1, -1))}
    assert server.rest is not None
    assert server.rest.status("chain") == {1: ("AVAILABLE", "OK", "OK")}
    signature = server.rest.metadata("chain")["metadata"]["signature_def"]["signatureDef"]["serving_default"]
    assert list(signature["inputs"]) == ["in"] and list(signature["outputs"]) == ["out"]
    with pytest.raises(grpc.RpcError) as info:  # an unknown name is still unknown
        server.client.status("nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("inputs", "code", "message"),
    [
        ({"in": X.astype(np.float64)}, grpc.StatusCode.INVALID_ARGUMENT,
         "Invalid input precision - Expected: FP32; Actual: FP64; input name: in"),
        ({"in": np.zeros((2, 3), np.float32)}, grpc.StatusCode.INVALID_ARGUMENT,
         "Invalid input shape - Expected: (-1,2); Actual: (2,3); input name: in"),
        ({"x": X}, grpc.StatusCode.INVALID_ARGUMENT, "Missing input with specific name - Required input: in"),
        ({"in": X, "other": X}, grpc.StatusCode.INVALID_ARGUMENT, "Invalid number of inputs - Expected: 1; Actual: 2"),
    ],
)
def test_validation_errors_name_the_pipeline_input(
    server: DropinServer, inputs: dict[str, np.ndarray], code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict("chain", inputs)
    assert (info.value.code(), info.value.details()) == (code, message)
    assert server.rest is not None
    if "precision" not in message:  # REST's JSON numbers take the input's type
        with pytest.raises(RestError) as rest_info:
            server.rest.predict("chain", inputs)
        assert (rest_info.value.status, rest_info.value.message) == (400, message)
    np.testing.assert_array_equal(server.client.predict("chain", {"in": X})["out"], (X * 2 + 1))  # still serves
    assert "Traceback" not in server.log
