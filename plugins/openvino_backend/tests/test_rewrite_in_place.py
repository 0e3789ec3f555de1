"""OpenVINO IR weights (model.bin, which the CPU plugin maps) rewritten in place under a served
version, on the real server under Predict load: see dropin.testing.rewrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov

from dropin.testing.rewrite import ROWS, WIDTH, check_weights_rewritten_in_place
from dropin_openvino import modelgen
from dropin_openvino.modelgen import F32_CONFIG


def ir_gather(version_dir: Path, seed: int) -> str:
    modelgen.gather_model(version_dir, ROWS, WIDTH, seed)
    return "model.bin"


def openvino_reference(version_dir: Path, ids: np.ndarray) -> np.ndarray:
    """OpenVINO run directly on the files of `version_dir`."""
    compiled = ov.Core().compile_model(str(version_dir / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.array(compiled.infer_new_request({"ids": ids})[compiled.output(0)])


def test_weights_rewritten_in_place_under_load_reload_and_never_crash(dropin_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    check_weights_rewritten_in_place(
        dropin_server, tmp_path, ir_gather, ("--plugin_config", F32_CONFIG), openvino_reference
    )
