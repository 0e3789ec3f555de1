"""Every config.json key OVMS accepts: honoured, or logged once as unsupported naming the model (or
the list) it concerns; a key OVMS does not know is a configuration error naming it, at every level."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dropin.config import ConfigError, parse_config
from dropin.testing import numpy_models as modelgen
from dropin.testing.server import free_port

PIPELINE = {
    "name": "pipe",
    "inputs": ["x"],
    "nodes": [{
        "name": "node", "model_name": "m", "type": "DL model", "version": 1,
        "inputs": [{"x": {"node_name": "request", "data_item": "x"}}],
        "outputs": [{"data_item": "y", "alias": "y"}],
    }],
    "outputs": [{"y": {"node_name": "node", "data_item": "y"}}],
    "demultiply_count": 0,
}


def every_key(base_path: str) -> dict[str, Any]:
    """A config.json with every key OVMS accepts, each with a valid value (those the numpy backend
    can honour: it has no reshape, so batch_size and shape are the OpenVINO test's)."""
    return {
        "model_config_list": [{"config": {
            "name": "m", "base_path": base_path, "model_version_policy": {"latest": {"num_versions": 1}},
            "nireq": 2, "target_device": "CPU", "plugin_config": {}, "layout": "NC",
            "stateful": False, "low_latency_transformation": False, "idle_sequence_cleanup": True,
            "max_sequence_number": 100, "allow_cache": True, "precision": "FP32",
            "custom_loader_options": {"loader_name": "loader"},
        }}],
        "pipeline_config_list": [PIPELINE],
        "mediapipe_config_list": [
            {"name": "graph", "graph_path": "graph.pbtxt", "base_path": "g", "subconfig": "s.json"}
        ],
        "custom_loader_config_list": [{"config": {
            "loader_name": "loader", "library_path": "/loader.so", "loader_config_file": "loader.json",
        }}],
        "custom_node_library_config_list": [{"name": "lib", "base_path": "/lib.so"}],
        "monitoring": {"metrics": {"enable": True, "metrics_list": ["ovms_requests_success"]}},
    }


UNSUPPORTED = [
    "model m: config key custom_loader_options is not supported",
    "model m: config key idle_sequence_cleanup is not supported",
    "model m: config key low_latency_transformation is not supported",
    "model m: config key max_sequence_number is not supported",
    "model m: config key precision is not supported",
    "model m: config key stateful is not supported",
    "mediapipe_config_list: MediaPipe graphs are not served yet: graph ignored",
    "custom_loader_config_list: custom loaders are not supported: loader ignored",
]


def test_every_ovms_key_serves_and_each_unsupported_one_is_logged_once(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    modelgen.scale_model(repo / "m" / "1", shape=(-1, 3), factor=2.0)
    config = repo / "config.json"
    document = every_key("m")
    config.write_text(json.dumps(document))
    srv = start_server("--config_path", str(config), "--rest_port", str(free_port()))
    srv.wait_for("m", 1)
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    np.testing.assert_array_equal(srv.client.predict("m", {"x": x})["y"], x * 2)
    # the same keys again in a changed file: applied, nothing logged twice
    document["model_config_list"][0]["config"]["nireq"] = 1
    config.write_text(json.dumps(document))
    status, _ = srv.rest.request("POST", "/v1/config/reload")
    assert status in (200, 201)
    np.testing.assert_array_equal(srv.client.predict("m", {"x": x})["y"], x * 2)
    # the pipeline is served: its request is split along a first dimension of its own (demultiply_count 0)
    np.testing.assert_array_equal(srv.client.predict("pipe", {"x": x[None]})["y"], x[None] * 2)
    for line in UNSUPPORTED:
        assert srv.log.count(line) == 1, (line, srv.log)
    assert "allow_cache is not supported" not in srv.log  # it is the backend's (LoadOptions.options)
    status, metrics = srv.rest.request("GET", "/metrics")  # monitoring.metrics honoured
    assert status == 200 and "ovms_requests_success" in str(metrics)


def _set(document: dict[str, Any], path: list[Any], key: str) -> dict[str, Any]:
    document = copy.deepcopy(document)
    target: Any = document
    for step in path:
        target = target[step]
    target[key] = 1
    return document


@pytest.mark.parametrize(
    ("path", "where"),
    [
        ([], "config.json: unknown key(s) bogus"),
        (["model_config_list", 0, "config"], "model 'm': unknown key(s) bogus"),
        (["model_config_list", 0, "config", "model_version_policy", "latest"], "latest: unknown key(s) bogus"),
        (["pipeline_config_list", 0], "pipeline_config_list item 'pipe': unknown key(s) bogus"),
        (["pipeline_config_list", 0, "nodes", 0], "node 'node': unknown key(s) bogus"),
        (["mediapipe_config_list", 0], "mediapipe_config_list item 'graph': unknown key(s) bogus"),
        (["custom_loader_config_list", 0, "config"], "custom_loader_config_list item 'loader': unknown key(s) bogus"),
        (["custom_node_library_config_list", 0], "custom_node_library_config_list item 'lib': unknown key(s) bogus"),
        (["monitoring"], "monitoring: unknown key(s) bogus"),
    ],
)
def test_a_key_ovms_does_not_know_is_an_error_naming_it(tmp_path: Path, path: list[Any], where: str) -> None:
    document = _set(every_key("m"), path, "bogus")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bogus") as info:
        parse_config(json.dumps(document).encode(), tmp_path / "config.json")
    assert where in str(info.value)


def test_allow_cache_reaches_the_backend_as_a_load_option(tmp_path: Path) -> None:
    document = every_key("m")
    (model,) = parse_config(json.dumps(document).encode(), tmp_path / "config.json")
    assert model.load.options == {"allow_cache": True}
    document["model_config_list"][0]["config"]["allow_cache"] = "yes"
    with pytest.raises(ConfigError, match="model 'm': allow_cache must be true or false, got 'yes'"):
        parse_config(json.dumps(document).encode(), tmp_path / "config.json")


def test_the_server_refuses_to_start_on_an_unknown_nested_key(repo: Path) -> None:
    document = _set(every_key("m"), ["monitoring", "metrics"], "bogus")
    config = repo / "config.json"
    config.write_text(json.dumps(document))
    run = subprocess.run(
        [sys.executable, "-m", "dropin", "serve", "--port", "0", "--config_path", str(config)],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert run.returncode != 0
    assert "monitoring.metrics: unknown key(s) bogus" in run.stderr, run.stderr
