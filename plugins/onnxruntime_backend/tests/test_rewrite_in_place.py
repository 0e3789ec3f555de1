"""ONNX weights in an external data file (which ONNX Runtime maps) rewritten in place under a
served version, on the real server under Predict load: see dropin.testing.rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dropin.testing.rewrite import WIDTH, check_weights_rewritten_in_place, table


def onnx_gather(version_dir: Path, seed: int) -> str:
    """The Gather as ONNX with its table in an external data file."""
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], axis=0)], "gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, ["n"])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["n", WIDTH])],
        initializer=[numpy_helper.from_array(table(seed), "table")],
    )
    version_dir.mkdir(parents=True, exist_ok=True)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.save(model, str(version_dir / "model.onnx"), save_as_external_data=True, location="model.data")
    return "model.data"


def onnxruntime_reference(version_dir: Path, ids: np.ndarray) -> np.ndarray:
    """ONNX Runtime run directly on the files of `version_dir`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(["emb"], {"ids": ids})[0])


def test_weights_rewritten_in_place_under_load_reload_and_never_crash(dropin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    check_weights_rewritten_in_place(
        dropin_server, tmp_path, onnx_gather, ("--backend", "onnxruntime"), onnxruntime_reference
    )
