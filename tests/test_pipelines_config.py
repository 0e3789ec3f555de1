"""Pipelines' configuration: every error fails its pipeline alone (status LOADING,
FAILED_PRECONDITION and the reason naming pipeline and node) while everything else serves; a
pipeline follows the models it uses; config.json edits add, change and remove pipelines, and a
new model version under a pipeline, with zero failed requests under load."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.server import DropinServer
from dropin.testing.status import wait_until

FAILED_PRECONDITION = 9
X = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)


def wire(node: str, item: str) -> dict[str, str]:
    return {"node_name": node, "data_item": item}


def node(name: str, model: str, inputs: dict[str, dict[str, str]], outputs: dict[str, str],
         **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "type": "DL model", "model_name": model,
        "inputs": [{k: v} for k, v in inputs.items()],
        "outputs": [{"data_item": k, "alias": v} for k, v in outputs.items()], **extra,
    }


def chain(name: str, first: str = "double", second: str = "plus") -> dict[str, Any]:
    return {"name": name, "inputs": ["in"], "nodes": [
        node("a", first, {"x": wire("request", "in")}, {"y": "y"}),
        node("b", second, {"x": wire("a", "y")}, {"y": "y"}),
    ], "outputs": [{"out": wire("b", "y")}]}


def one(name: str, nodes: list[dict[str, Any]], output: dict[str, str], inputs: tuple[str, ...] = ("in",),
        ) -> dict[str, Any]:
    return {"name": name, "inputs": list(inputs), "nodes": nodes, "outputs": [{"out": output}]}


BROKEN = [  # (pipeline, what its status says)
    ({"name": "cycle", "inputs": ["in"], "nodes": [
        node("a", "double", {"x": wire("b", "y")}, {"y": "y"}),
        node("b", "plus", {"x": wire("a", "y")}, {"y": "y"}),
    ], "outputs": [{"out": wire("b", "y")}]}, "pipeline 'cycle': the nodes form a cycle: "),
    (one("unknown_model", [node("a", "nope", {"x": wire("request", "in")}, {"y": "y"})], wire("a", "y")),
     "pipeline 'unknown_model' node 'a': model 'nope' is not served"),
    (one("unknown_node", [node("a", "double", {"x": wire("ghost", "y")}, {"y": "y"})], wire("a", "y")),
     "pipeline 'unknown_node' node 'a' input 'x': takes 'y' from node 'ghost', which is not a node of the pipeline"),
    (one("unknown_item", [node("a", "double", {"x": wire("request", "in")}, {"y": "y"})], wire("a", "nope")),
     "pipeline 'unknown_item' output 'out': takes 'nope', which is no output alias of node 'a' (there are: y)"),
    (one("unconnected", [node("c", "two", {"a": wire("request", "in")}, {"sum": "sum"})], wire("c", "sum")),
     "pipeline 'unconnected' node 'c': input(s) b are not connected"),
    (one("wrong_input", [node("a", "double", {"x": wire("request", "in"), "z": wire("request", "in")},
                              {"y": "y"})], wire("a", "y")),
     "pipeline 'wrong_input' node 'a': takes no input 'z' (its inputs: x)"),
    (one("mismatch", [node("a", "double", {"x": wire("request", "in")}, {"y": "y"}),
                      node("i", "ints", {"in_i32": wire("a", "y")}, {"out_i32": "y"})], wire("i", "y")),
     "pipeline 'mismatch' node 'i': input 'in_i32' takes I32 (-1,3), but 'y' of node 'a' gives FP32 (-1,2)"),
    (one("gather", [node("a", "double", {"x": wire("request", "in")}, {"y": "y"}),
                    node("b", "plus", {"x": wire("a", "y")}, {"y": "y"}, gather_from_node="a")], wire("b", "y")),
     "pipeline 'gather' node 'b': gather_from_node 'a' names no demultiplexer its inputs come from"),
    (one("no_version", [node("a", "double", {"x": wire("request", "in")}, {"y": "y"}, version=7)], wire("a", "y")),
     "pipeline 'no_version' node 'a': model 'double' has version 7 AVAILABLE"),
    (one("no_library", [{"name": "c", "type": "custom", "library_name": "missing",
                         "inputs": [{"input_numbers": wire("request", "in")}],
                         "outputs": [{"data_item": "output_numbers", "alias": "y"}]}], wire("c", "y")),
     "pipeline 'no_library' node 'c': library 'missing' is not in custom_node_library_config_list"),
    (one("bad_params", [{"name": "c", "type": "custom", "library_name": "add_sub", "params": {"add_value": "x"},
                         "inputs": [{"input_numbers": wire("request", "in")}],
                         "outputs": [{"data_item": "output_numbers", "alias": "y"}]}], wire("c", "y")),
     "pipeline 'bad_params' node 'c': custom node 'add_sub' refused its params: param add_value must be a number"),
    (one("dangling", [node("a", "double", {"x": wire("request", "in")}, {"y": "y"}),
                      node("b", "plus", {"x": wire("request", "in")}, {"y": "y"})], wire("a", "y")),
     "pipeline 'dangling' node 'b': not connected to the response"),
    (one("stateful", [node("a", "sums", {"x": wire("request", "in")}, {"y": "y"})], wire("a", "y")),
     "pipeline 'stateful' node 'a': model 'sums' is stateful; pipelines take stateless models only"),
]


def write(repo: Path, pipelines: list[dict[str, Any]], models: tuple[str, ...] = ("double", "plus", "two", "ints"),
          ) -> Path:
    config = repo / "config.json"
    listed = [{"config": {"name": n, "base_path": str(repo / n)}} for n in models]
    if (repo / "sums").is_dir():
        listed.append({"config": {"name": "sums", "base_path": str(repo / "sums"), "stateful": True}})
    document = {
        "model_config_list": listed,
        "custom_node_library_config_list": [{"name": "add_sub", "base_path": "libcustom_node_add_sub.so"}],
        "pipeline_config_list": pipelines,
    }
    temporary = config.with_suffix(".tmp")
    temporary.write_text(json.dumps(document))
    temporary.replace(config)  # a rename: the server never reads half a file
    return config


def make_models(repo: Path) -> None:
    modelgen.scale_model(repo / "double" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(repo / "plus" / "1", shape=(-1, 2), factor=1.0, offset=1.0)
    modelgen.two_input_model(repo / "two" / "1")
    modelgen.identity_model(repo / "ints" / "1", names=("i32",))
    modelgen.running_sum_model(repo / "sums" / "1")


def test_every_configuration_error_fails_its_pipeline_alone(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    make_models(repo)
    config = write(repo, [chain("good"), *(p for p, _ in BROKEN)])
    srv: DropinServer = start_server("--config_path", str(config))
    srv.wait_for("good", 1)
    for pipeline, reason in BROKEN:
        ((state, code, message),) = srv.client.status(pipeline["name"]).values()
        assert (state, code) == ("LOADING", FAILED_PRECONDITION), (pipeline["name"], message)
        assert message.startswith(reason), (pipeline["name"], message)
        with pytest.raises(grpc.RpcError) as info:
            srv.client.predict(pipeline["name"], {"in": X})
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    np.testing.assert_array_equal(srv.client.predict("good", {"in": X})["out"], X * 2 + 1)
    np.testing.assert_array_equal(srv.client.predict("double", {"x": X})["y"], X * 2)
    assert "Traceback" not in srv.log


def test_a_pipeline_cannot_take_a_models_name(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    make_models(repo)
    config = write(repo, [chain("double")])
    with pytest.raises(RuntimeError, match=r"pipeline\(s\) double: a model has that name"):
        start_server("--config_path", str(config))


def test_a_pipeline_is_available_only_while_its_models_are(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    make_models(repo)
    (repo / "late").mkdir()
    config = write(repo, [chain("waits", second="late")], models=("double", "late"))
    srv: DropinServer = start_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0.2")
    srv.wait_for_log("server ready")  # the pipelines are applied after every model of the file
    assert srv.client.status("waits") == {
        1: ("LOADING", FAILED_PRECONDITION, "pipeline 'waits' node 'b': model 'late' has no version AVAILABLE")
    }
    modelgen.scale_model(repo / "late" / "1", shape=(-1, 2), factor=1.0, offset=1.0)
    srv.wait_for("waits", 1)
    assert srv.client.status("waits") == {1: ("AVAILABLE", 0, "OK")}
    np.testing.assert_array_equal(srv.client.predict("waits", {"in": X})["out"], X * 2 + 1)
    shutil.rmtree(repo / "late" / "1")  # the model's only version goes: so does the pipeline
    srv.wait_for("late", 1, state="END")
    assert srv.client.status("waits") == {
        1: ("LOADING", FAILED_PRECONDITION, "pipeline 'waits' node 'b': model 'late' has no version AVAILABLE")
    }


class Load:
    """Clients calling Predict on a pipeline in a loop; every answer is checked against the
    outputs any configuration in use may give."""

    def __init__(self, srv: DropinServer, name: str, threads: int = 4) -> None:
        self.srv, self.name = srv, name
        self.allowed = [X * 2 + 1]
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                out = self.srv.client.predict(self.name, {"in": X})["out"]
            except grpc.RpcError as exc:
                self.failures.append(f"{exc.code()}: {exc.details()}")
                continue
            if any(np.array_equal(out, allowed) for allowed in list(self.allowed)):
                self.ok += 1
            else:
                self.failures.append(f"unexpected output {out}")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def test_config_edits_and_a_new_model_version_under_load_fail_no_request(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    make_models(repo)
    config = write(repo, [chain("p"), chain("other")])
    srv: DropinServer = start_server("--config_path", str(config), "--file_system_poll_wait_seconds", "0.2")
    srv.wait_for("p", 1)
    load = Load(srv, "p")
    try:
        time.sleep(0.5)
        # change the pipeline: a custom node after the chain; add one, remove one
        changed = chain("p")
        changed["nodes"].append({"name": "c", "type": "custom", "library_name": "add_sub",
                                 "params": {"add_value": "10"}, "inputs": [{"input_numbers": wire("b", "y")}],
                                 "outputs": [{"data_item": "output_numbers", "alias": "y"}]})
        changed["outputs"] = [{"out": wire("c", "y")}]
        load.allowed.append(X * 2 + 11)
        write(repo, [changed, chain("added", second="double")])
        wait_until(lambda: srv.client.status("other")[1][0] == "END", message="'other' was not removed")
        srv.wait_for("added", 1)
        np.testing.assert_array_equal(srv.client.predict("added", {"in": X})["out"], X * 4)
        wait_until(lambda: np.array_equal(srv.client.predict("p", {"in": X})["out"], X * 2 + 11))
        # a new version of a model under the pipeline
        load.allowed.append(X * 3 + 11)
        modelgen.scale_model(repo / "double" / "2", shape=(-1, 2), factor=3.0)
        wait_until(lambda: np.array_equal(srv.client.predict("p", {"in": X})["out"], X * 3 + 11),
                   message="version 2 of 'double' never served the pipeline")
        time.sleep(0.5)
    finally:
        load.stop()
    assert load.failures == []
    assert load.ok > 20
    with pytest.raises(grpc.RpcError) as info:  # removed: retired, as a removed model
        srv.client.predict("other", {"in": X})
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
