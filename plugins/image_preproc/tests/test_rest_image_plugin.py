"""REST binary ({"b64": ...}) image inputs through the image plugin, to the OpenVINO digits model
(models/digits), compared with OpenVINO run directly: a test of the image and OpenVINO plugins."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np

from dropin.testing.server import free_port
from dropin_openvino import modelgen
from dropin_openvino.modelgen import F32_CONFIG

ROOT = Path(__file__).resolve().parents[3]
DIGITS = ROOT / "models" / "digits"
SAMPLES = ROOT / "examples" / "digits"


def test_binary_image_input_through_the_image_plugin(dropin_server, dropin_rest_client, tmp_path: Path) -> None:
    shutil.copytree(DIGITS, tmp_path / "digits")
    srv = dropin_server("--model_name", "digits", "--model_path", str(tmp_path / "digits"),
                        "--plugin_config", F32_CONFIG, "--rest_port", str(free_port()),
                        "--file_system_poll_wait_seconds", "0")
    srv.wait_for("digits", 1)
    samples = json.loads((SAMPLES / "samples.json").read_text())
    images = [{"b64": base64.b64encode((SAMPLES / s["file"]).read_bytes()).decode()} for s in samples]
    body = {"instances": [{"image": image} for image in images]}
    status, body = dropin_rest_client(srv).request("POST", "/v1/models/digits:predict", body)
    assert status == 200, body
    pixels = np.array([s["pixels"] for s in samples], np.float32)[..., None]
    expected = modelgen.run_openvino(tmp_path / "digits" / "1", {"image": pixels})
    rows = body["predictions"]
    assert [r["label"] for r in rows] == expected["label"].tolist() == [s["label"] for s in samples]
    probabilities = np.array([r["probabilities"] for r in rows])
    np.testing.assert_allclose(probabilities, expected["probabilities"], rtol=1e-5, atol=1e-7)
