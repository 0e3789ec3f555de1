"""docs/plugins.md's complete third-party custom node works: built from the guide's code blocks
alone, installed as a distribution, listed by `dropin plugins`, and serving the guide's pipeline
in the real server to the official clients, with its refusals reaching them as errors."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.fake_plugins import install_from_pyproject

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"^<!-- custom node file: (\S+) -->\n```[\w-]*\n(.*?)^```$", re.S | re.M)


def guide_files() -> dict[str, str]:
    """The custom node example: each code block right after `<!-- custom node file: path -->`."""
    return {path: body for path, body in FILE_BLOCK.findall(GUIDE.read_text())}


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the example's source tree, a site directory it is installed in)"""
    root = tmp_path_factory.mktemp("guide")
    src, site = root / "src", root / "site"
    for path, body in guide_files().items():
        target = src / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body)
    assert install_from_pyproject(src, site) == "dropin-topk"
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


def guide_repository(src: Path, root: Path, classes: int = 3) -> Path:
    """The guide's config.json next to a classifier: logits FP32 [batch, classes] from x [batch, 4]."""
    modelgen.dense_model(root / "classifier" / "1", inputs=4, units=classes)
    config = root / "config.json"
    config.write_text((src / "config.json").read_text())
    return config
