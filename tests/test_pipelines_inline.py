"""A gRPC Predict of a pipeline whose nodes can only run one after the other (no demultiplexing,
each node takes an input from the one before) runs in the gRPC handler thread, its models through
`infer_now`, without the hand-offs to the event loop; REST, demultiplexed and fan-out pipelines
run on the loop. Either way the answers are the same, and a model's new version takes over
between two requests without failing any."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.load import Hammer
from dropin.testing.server import DropinServer, free_port


def wire(node: str, item: str) -> dict[str, str]:
    return {"node_name": node, "data_item": item}


def model_node(name: str, model: str, source: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "type": "DL model", "model_name": model, "inputs": [{"x": source}],
            "outputs": [{"data_item": "y", "alias": "y"}]}


def thread_node(name: str, source: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "type": "custom", "library_name": "thread_name", "inputs": [{"data": source}],
            "outputs": [{"data_item": "thread", "alias": "thread"}]}


def write_config(repo: Path, delay: float = 0.0) -> Path:
    modelgen.scale_model(repo / "m" / "1", shape=(-1, 2), factor=2.0)
    model: dict[str, Any] = {"name": "m", "base_path": str(repo / "m"), "nireq": 4}
    if delay:
        model["plugin_config"] = {"delay_seconds": delay}
    chain = {"name": "chain", "inputs": ["in"], "nodes": [
        model_node("first", "m", wire("request", "in")),
        model_node("second", "m", wire("first", "y")),
        thread_node("where", wire("second", "y")),
    ], "outputs": [{"out": wire("second", "y")}, {"thread": wire("where", "thread")}]}
    fan = {"name": "fan", "inputs": ["in"], "nodes": [
        model_node("a", "m", wire("request", "in")),
        thread_node("where", wire("request", "in")),  # independent of "a": both run at once
    ], "outputs": [{"out": wire("a", "y")}, {"thread": wire("where", "thread")}]}
    rows = {"name": "rows", "inputs": ["in"], "nodes": [
        {"name": "split", "type": "custom", "library_name": "split_rows", "demultiply_count": -1,
         "inputs": [{"data": wire("request", "in")}], "outputs": [{"data_item": "rows", "alias": "rows"}]},
        {"name": "sum", "type": "custom", "library_name": "sum_rows", "gather_from_node": "split",
         "inputs": [{"rows": wire("split", "rows")}], "outputs": [{"data_item": "total", "alias": "total"}]},
        thread_node("where", wire("sum", "total")),
    ], "outputs": [{"total": wire("sum", "total")}, {"thread": wire("where", "thread")}]}
    config = repo / "config.json"
    config.write_text(json.dumps({
        "model_config_list": [{"config": model}], "pipeline_config_list": [chain, fan, rows],
        "custom_node_library_config_list": [{"name": n, "base_path": n} for n in ("thread_name", "split_rows",
                                                                                 "sum_rows")],
    }))
    return config


def thread_of(outputs: dict[str, np.ndarray]) -> str:
    name = outputs["thread"].reshape(-1)[0]  # bytes on gRPC, str on REST
    return name.decode() if isinstance(name, bytes) else str(name)


def test_a_pipeline_of_nodes_in_turn_runs_in_the_grpc_handler_thread(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    srv: DropinServer = start_server("--config_path", str(write_config(repo)), "--rest_port", str(free_port()))
    srv.wait_for("chain", 1)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)

    out = srv.client.predict("chain", {"in": x})
    np.testing.assert_array_equal(out["out"], x * 4)
    assert thread_of(out).startswith("dropin-grpc"), thread_of(out)
    assert srv.rest is not None
    rest = srv.rest.predict("chain", {"in": x})  # REST runs it on the loop: same answer
    np.testing.assert_array_equal(rest["out"], x * 4)
    assert not thread_of(rest).startswith("dropin-grpc"), thread_of(rest)

    # concurrent nodes and demultiplexed branches stay on the loop, where they run at once
    fan = srv.client.predict("fan", {"in": x})
    np.testing.assert_array_equal(fan["out"], x * 2)
    assert not thread_of(fan).startswith("dropin-grpc"), thread_of(fan)
    rows = srv.client.predict("rows", {"in": x})
    np.testing.assert_array_equal(rows["total"], x.sum(axis=0, keepdims=True))
    assert not thread_of(rows).startswith("dropin-grpc"), thread_of(rows)
    # unless the output filter leaves one branch of the fan-out only
    alone = srv.client.predict("fan", {"in": x}, output_filter=["thread"])
    assert list(alone) == ["thread"] and thread_of(alone).startswith("dropin-grpc"), alone


def test_errors_are_the_same_in_the_handler_thread_and_on_the_loop(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    srv: DropinServer = start_server("--config_path", str(write_config(repo)), "--rest_port", str(free_port()))
    srv.wait_for("chain", 1)
    details = []
    for name in ("chain", "fan"):  # in the handler thread, on the loop
        with pytest.raises(grpc.RpcError) as error:
            srv.client.predict(name, {"in": np.ones((2, 3), np.float32)})
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        details.append(error.value.details())
    assert details[0] == details[1] and "in" in details[0], details
    assert "Traceback" not in srv.log


def test_pipeline_predicts_in_threads_survive_model_version_swaps(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    config = write_config(repo, delay=0.01)
    srv: DropinServer = start_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0.1")
    srv.wait_for("chain", 1)
    x = np.ones((1, 2), np.float32)

    def predict() -> None:
        out = srv.client.predict("chain", {"in": x})
        # each node takes whichever version serves when the request starts
        assert out["out"][0, 0] in (4.0, 6.0, 9.0), out["out"]

    with Hammer(predict, threads=4) as load:
        time.sleep(0.3)
        spec = json.loads((repo / "m" / "1" / "numpy_model.json").read_text())
        modelgen.scale_model(repo / "m" / "2", shape=(-1, 2), factor=3.0)
        new = json.loads((repo / "m" / "2" / "numpy_model.json").read_text())
        new["delay_seconds"] = spec.get("delay_seconds", 0.0)
        (repo / "m" / "2" / "numpy_model.json").write_text(json.dumps(new))
        srv.wait_for("m", 2)
        srv.wait_for("m", 1, "END")
        time.sleep(0.3)
    assert not load.failures, load.failures[:3]
    assert load.answered > 20
    assert srv.client.predict("chain", {"in": x})["out"][0, 0] == 9.0
    assert "Traceback" not in srv.log
