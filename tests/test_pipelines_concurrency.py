"""Pipeline nodes that do not depend on each other run at the same time, and so do the branches of
a demultiplexer: with models that take 0.5 s each, a fan-out of two and four demultiplexed branches
each take about one model's time, not the sum."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dropin.testing import numpy_models as modelgen
from dropin.testing.server import DropinServer

DELAY = 0.5


def wire(node: str, item: str) -> dict[str, str]:
    return {"node_name": node, "data_item": item}


def test_independent_nodes_and_branches_run_concurrently(repo: Path, start_server) -> None:  # type: ignore[no-untyped-def]
    modelgen.scale_model(repo / "slow_a" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(repo / "slow_b" / "1", shape=(-1, 2), factor=3.0)
    models = [{"config": {"name": n, "base_path": str(repo / n), "nireq": 4,
                          "plugin_config": {"delay_seconds": DELAY}}} for n in ("slow_a", "slow_b")]
    fan = {"name": "fan", "inputs": ["in"], "nodes": [
        {"name": n, "type": "DL model", "model_name": n, "inputs": [{"x": wire("request", "in")}],
         "outputs": [{"data_item": "y", "alias": "y"}]} for n in ("slow_a", "slow_b")
    ], "outputs": [{"a": wire("slow_a", "y")}, {"b": wire("slow_b", "y")}]}
    rows = {"name": "rows", "inputs": ["in"], "nodes": [
        {"name": "split", "type": "custom", "library_name": "split_rows", "demultiply_count": -1,
         "inputs": [{"data": wire("request", "in")}], "outputs": [{"data_item": "rows", "alias": "rows"}]},
        {"name": "a", "type": "DL model", "model_name": "slow_a", "inputs": [{"x": wire("split", "rows")}],
         "outputs": [{"data_item": "y", "alias": "y"}]},
    ], "outputs": [{"out": wire("a", "y")}]}
    config = repo / "config.json"
    config.write_text(json.dumps({
        "model_config_list": models, "pipeline_config_list": [fan, rows],
        "custom_node_library_config_list": [{"name": "split_rows", "base_path": "split_rows"}],
    }))
    srv: DropinServer = start_server("--config_path", str(config))
    srv.wait_for("fan", 1)
    x = np.arange(8, dtype=np.float32).reshape(4, 2)

    started = time.monotonic()
    out = srv.client.predict("fan", {"in": x})
    fan_seconds = time.monotonic() - started
    np.testing.assert_array_equal(out["a"], x * 2)
    np.testing.assert_array_equal(out["b"], x * 3)

    started = time.monotonic()
    out = srv.client.predict("rows", {"in": x})
    rows_seconds = time.monotonic() - started
    np.testing.assert_array_equal(out["out"], (x * 2)[:, None, :])

    assert fan_seconds < 1.6 * DELAY, f"two independent nodes took {fan_seconds:.2f} s (in turn: {2 * DELAY} s)"
    assert rows_seconds < 2.5 * DELAY, f"four branches took {rows_seconds:.2f} s (in turn: {4 * DELAY} s)"
