"""docs/plugins.md's complete third-party custom node works: built from the guide's code blocks
alone, installed as a distribution, listed by `dropin plugins`, and serving the guide's pipeline
in the real server to the official clients, with its refusals reaching them as errors."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest

from dropin.testing import fake_plugins
from dropin.testing import numpy_models as modelgen
from dropin.testing.server import DropinServer
from dropin.testing.tfs_client import TfsClient

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
MARKER = "custom node file"


def guide_files() -> dict[str, str]:
    """The custom node example: each code block right after `<!-- custom node file: path -->`."""
    return fake_plugins.guide_files(GUIDE, MARKER)


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the example's source tree, a site directory it is installed in)"""
    src, site, dist = fake_plugins.install_guide_example(GUIDE, MARKER, tmp_path_factory.mktemp("guide"))
    assert dist == "dropin-topk"
    return src, site


@pytest.fixture(scope="module")
def node_module(example: tuple[Path, Path]) -> Iterator[ModuleType]:
    _, site = example
    sys.path.insert(0, str(site))
    try:
        yield importlib.import_module("dropin_topk.node")
    finally:
        sys.path.remove(str(site))
        for name in [n for n in sys.modules if n.startswith("dropin_topk")]:
            del sys.modules[name]


def test_the_guide_holds_a_whole_plugin_and_its_configuration() -> None:
    assert set(guide_files()) == {
        "pyproject.toml", "dropin_topk/__init__.py", "dropin_topk/node.py", "dropin_topk/plugin.py", "config.json",
    }
    assert json.loads(guide_files()["config.json"])["pipeline_config_list"][0]["name"] == "best_two"


def test_dropin_plugins_lists_it(example: tuple[Path, Path]) -> None:
    _, site = example
    out = subprocess.run(
        [sys.executable, "-m", "dropin", "plugins"], capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert (
        "topk (dropin-topk 1.0)\n  module: dropin_topk.plugin\n"
        "  hooks: dropin_register_custom_nodes\n  custom nodes: topk\n"
    ) in out, out


def test_the_node_on_arrays(node_module: ModuleType) -> None:
    node = node_module.TopK({"k": "2"})
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.1, 0.9]], np.float32)
    out = node.execute({"scores": scores})
    assert out["labels"].dtype == np.int32 and out["labels"].tolist() == [[1, 2], [2, 0]]
    np.testing.assert_array_equal(out["top_scores"], np.array([[0.7, 0.2], [0.9, 0.5]], np.float32))
    assert {name: spec.shape_text() for name, spec in node.outputs.items()} == {
        "labels": "(-1,2)", "top_scores": "(-1,2)",
    }
    with pytest.raises(ValueError, match=r"^param k must be at least 1, got 0$"):
        node_module.TopK({"k": "0"})
    with pytest.raises(ValueError, match=r"^param k must be an integer, got 'two'$"):
        node_module.TopK({"k": "two"})
    with pytest.raises(ValueError, match=r"^input scores: expected shape \[batch, at least 2 classes\], got \[2, 1\]$"):
        node.execute({"scores": scores[:, :1]})


def guide_repository(src: Path, root: Path) -> Path:
    """The guide's config.json next to a classifier (logits FP32 [batch, 3] from x [batch, 4]), plus
    two copies of its pipeline: one whose k exceeds the classes, one whose k the node refuses."""
    modelgen.dense_model(root / "classifier" / "1", inputs=4, units=3)
    document = json.loads((src / "config.json").read_text())
    pipeline = document["pipeline_config_list"][0]
    for name, k in (("best_four", "4"), ("best_none", "0")):
        copy = json.loads(json.dumps(pipeline))
        copy["name"], copy["nodes"][1]["params"]["k"] = name, k
        document["pipeline_config_list"].append(copy)
    config = root / "config.json"
    config.write_text(json.dumps(document))
    return config


@pytest.fixture(scope="module")
def tfs() -> Iterator[TfsClient]:
    client = TfsClient()  # TensorFlow imports while the server starts
    yield client
    client.close()


@pytest.fixture(scope="module")
def guide(
    example: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory, tfs: TfsClient
) -> Iterator[tuple[DropinServer, Path]]:
    """(the real server serving the guide's config.json with the plugin installed, its repository)"""
    src, site = example
    root = tmp_path_factory.mktemp("repo")
    config = guide_repository(src, root)
    server = DropinServer(["--config_path", str(config), "--file_system_poll_wait_seconds", "0"],
                          env={"PYTHONPATH": str(site)})
    try:
        server.wait_for("classifier", 1)
        server.wait_for("best_two", 1)
        yield server, root
    finally:
        server.stop()


def expected_top(root: Path, x: np.ndarray, k: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The classifier run with numpy directly, then the k best classes of each row."""
    logits = modelgen.run_numpy(root / "classifier" / "1", {"x": x})["logits"]
    best = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return best.astype(np.int32), np.take_along_axis(logits, best, axis=1)


X = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
BEST_FOUR_REFUSED = (
    "Custom node refused its input - pipeline 'best_four' node 'top': "
    "input scores: expected shape [batch, at least 4 classes], got [5, 3]"
)
BEST_NONE_REASON = (
    "pipeline 'best_none' node 'top': custom node 'topk' refused its params: param k must be at least 1, got 0"
)


def test_the_pipeline_with_ovmsclient(guide: tuple[DropinServer, Path]) -> None:
    from ovmsclient import make_grpc_client

    server, root = guide
    client = make_grpc_client(f"127.0.0.1:{server.port}")
    out = client.predict({"x": X}, "best_two")
    labels, scores = expected_top(root, X)
    assert out["labels"].dtype == np.int32
    np.testing.assert_array_equal(out["labels"], labels)
    np.testing.assert_allclose(out["scores"], scores, rtol=1e-6)
    meta = client.get_model_metadata("best_two")
    assert meta["inputs"] == {"x": {"shape": [-1, 4], "dtype": "DT_FLOAT"}}
    assert meta["outputs"] == {
        "labels": {"shape": [-1, 2], "dtype": "DT_INT32"}, "scores": {"shape": [-1, 2], "dtype": "DT_FLOAT"},
    }
    assert client.get_model_status("best_two") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}}


def test_the_pipeline_with_tensorflow_serving_api(guide: tuple[DropinServer, Path], tfs: TfsClient) -> None:
    server, root = guide
    predicted, filtered, refused, meta, status, broken = tfs.run(server.port, [
        {"predict": "best_two", "inputs": {"x": X}},
        {"predict": "best_two", "inputs": {"x": X}, "output_filter": ["labels"]},
        {"predict": "best_four", "inputs": {"x": X}},
        {"metadata": "best_two"},
        {"status": "best_two"},
        {"status": "best_none"},
    ])
    labels, scores = expected_top(root, X)
    np.testing.assert_array_equal(predicted["outputs"]["labels"], labels)
    np.testing.assert_allclose(predicted["outputs"]["scores"], scores, rtol=1e-6)
    assert set(filtered["outputs"]) == {"labels"}
    assert refused == {"error": ["INVALID_ARGUMENT", BEST_FOUR_REFUSED]}
    assert meta == {"inputs": {"x": ["float32", [-1, 4]]},
                    "outputs": {"labels": ["int32", [-1, 2]], "scores": ["float32", [-1, 2]]}}
    assert status == {"versions": [[1, "AVAILABLE", 0, "OK"]]}
    assert broken["versions"][0][:3] == [1, "LOADING", 9] and BEST_NONE_REASON in broken["versions"][0][3], broken


def test_a_refusal_is_the_client_s_error_and_the_server_goes_on(guide: tuple[DropinServer, Path]) -> None:
    server, root = guide
    for _ in range(3):
        with pytest.raises(grpc.RpcError) as refused:
            server.client.predict("best_four", {"x": X})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and refused.value.details() == BEST_FOUR_REFUSED
    np.testing.assert_array_equal(server.client.predict("best_two", {"x": X})["labels"], expected_top(root, X)[0])
    assert "Traceback" not in server.log and "refused its input" not in server.log
    assert BEST_NONE_REASON in server.log  # the pipeline that is not served says why
