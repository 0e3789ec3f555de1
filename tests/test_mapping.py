"""mapping_config.json, end to end: clients see only the mapped input and output names, over gRPC
and REST, in metadata, Predict, output_filter and error messages; the file is part of the version."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.server import free_port

A = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
B = np.array([[0.5, 0.5], [1.0, -1.0]], np.float32)


def two_inputs_mapped(version_dir: Path, mapping: object) -> Path:
    """a, b -> sum, diff; mapping_config.json renames a to "first" and sum to "total"."""
    modelgen.two_input_model(version_dir)
    (version_dir / "mapping_config.json").write_text(json.dumps(mapping))
    return version_dir


MAPPING = {"inputs": {"a": "first"}, "outputs": {"sum": "total"}}


@pytest.fixture
def server(repo: Path, start_server):  # type: ignore[no-untyped-def]
    two_inputs_mapped(repo / "m" / "1", MAPPING)
    srv = start_server("--model_name", "m", "--model_path", str(repo / "m"), "--rest_port", str(free_port()))
    srv.wait_for("m", 1)
    return srv


def test_grpc_metadata_and_predict_use_the_mapped_names(server) -> None:  # type: ignore[no-untyped-def]
    signature = server.client.metadata("m")
    assert set(signature["inputs"]) == {"first", "b"}  # b is not in the file: it keeps its name
    assert set(signature["outputs"]) == {"total", "diff"}
    outputs = server.client.predict("m", {"first": A, "b": B})
    np.testing.assert_array_equal(outputs["total"], A + B)
    np.testing.assert_array_equal(outputs["diff"], A - B)
    only = server.client.predict("m", {"first": A, "b": B}, output_filter=["total"])
    assert list(only) == ["total"]


@pytest.mark.parametrize(
    ("inputs", "output_filter", "message"),
    [
        ({"a": A, "b": B}, (), "Missing input with specific name - Required input: first"),
        ({"first": A, "b": B}, ("sum",), "Expected one of: diff, total; Actual: sum"),
        ({"first": A[:, :1], "b": B}, (), "input name: first"),
    ],
)
def test_grpc_errors_name_the_mapped_names(server, inputs, output_filter, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict("m", inputs, output_filter=output_filter)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()


def test_rest_uses_the_mapped_names(server) -> None:  # type: ignore[no-untyped-def]
    signature = server.rest.metadata("m")["metadata"]["signature_def"]["signatureDef"]["serving_default"]
    assert set(signature["inputs"]) == {"first", "b"}
    assert {info["name"] for info in signature["outputs"].values()} == {"total", "diff"}
    outputs = server.rest.predict("m", {"first": A, "b": B})
    np.testing.assert_array_equal(outputs["total"], A + B)
    rows = [{"first": a.tolist(), "b": b.tolist()} for a, b in zip(A, B, strict=True)]
    status, answer = server.rest.request("POST", "/v1/models/m:predict", {"instances": rows})
    assert status == 200, answer
    np.testing.assert_array_equal([row["total"] for row in answer["predictions"]], A + B)
    status, answer = server.rest.request("POST", "/v1/models/m:predict", {"inputs": {"a": A.tolist(), "b": B.tolist()}})
    assert status == 400 and "Required input: first" in answer["error"], answer


def test_rest_unnamed_single_input_with_a_mapped_name(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    version = modelgen.scale_model(repo / "s" / "1", shape=(-1, 3), factor=3.0)
    (version / "mapping_config.json").write_text(json.dumps({"inputs": {"x": "image"}, "outputs": {"y": "score"}}))
    config = repo / "config.json"  # a per-input layout may name the input by its mapped name, as in OVMS
    config.write_text(json.dumps({"model_config_list": [{"config": {
        "name": "s", "base_path": "s", "layout": {"image": "NC"}}}]}))
    srv = start_server("--config_path", str(config), "--rest_port", str(free_port()))
    srv.wait_for("s", 1)
    x = [[1.0, 2.0, 3.0]]
    status, answer = srv.rest.request("POST", "/v1/models/s:predict", {"instances": x})
    assert status == 200, answer
    assert answer["predictions"] == [[3.0, 6.0, 9.0]]
    status, answer = srv.rest.request("POST", "/v1/models/s:predict", {"inputs": {"image": x}})
    assert status == 200 and answer["outputs"] == [[3.0, 6.0, 9.0]], answer
    assert set(srv.client.metadata("s")["outputs"]) == {"score"}


def test_a_changed_mapping_reloads_the_version(server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    mapping = repo / "m" / "1" / "mapping_config.json"
    staged = repo / "mapping.tmp"
    staged.write_text(json.dumps({"inputs": {"a": "left", "b": "right"}}))
    staged.replace(mapping)
    deadline = 20.0
    start = time.monotonic()
    while set(server.client.metadata("m")["inputs"]) != {"left", "right"}:
        assert time.monotonic() - start < deadline, server.log
        time.sleep(0.05)
    outputs = server.client.predict("m", {"left": A, "right": B})
    assert set(outputs) == {"sum", "diff"}  # outputs no longer renamed
    np.testing.assert_array_equal(outputs["sum"], A + B)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "mapping_config.json is not valid JSON"),
        ('{"inputs": {"a": 3}}', "inputs must map each input name to a non-empty string"),
        ('{"inputs": {}, "extra": {}}', "mapping_config.json: unknown key(s) extra"),
        ('{"inputs": {"a": "b"}}', "two inputs would be named 'b'"),
    ],
)
def test_a_malformed_mapping_fails_the_load_with_the_reason(repo: Path, start_server, text, reason) -> None:  # type: ignore[no-untyped-def]
    modelgen.two_input_model(repo / "m" / "1")
    (repo / "m" / "1" / "mapping_config.json").write_text(text)
    srv = start_server("--model_name", "m", "--model_path", str(repo / "m"))
    srv.wait_for("m", 1, "LOADING")
    start_deadline = 20
    start = time.monotonic()
    while reason not in srv.client.status("m")[1][2]:
        assert time.monotonic() - start < start_deadline, (srv.client.status("m"), srv.log)
        time.sleep(0.05)
