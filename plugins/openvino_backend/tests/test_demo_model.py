"""The bundled demo model, served from models/ exactly as `python3 dev.py serve` serves it, called
with ovmsclient (the client OVMS users have) and compared with OpenVINO run directly."""

from __future__ import annotations

import json
from pathlib import Path

import dropin_openvino.runtime  # noqa: F401  (the first import of openvino, with its telemetry off)

# isort: split
import numpy as np
import openvino as ov
import pytest
from ovmsclient import make_grpc_client

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = json.loads((ROOT / "examples" / "digits" / "samples.json").read_text())


@pytest.fixture(scope="module")
def digits_server():
    from dropin.testing.server import DropinServer

    server = DropinServer(
        ["--config_path", str(ROOT / "models" / "config.json"), "--file_system_poll_wait_seconds", "0"]
    )
    try:
        server.wait_for("digits", 1)
        yield server
    finally:
        server.stop()


def test_ovmsclient_predicts_the_sample_digits(digits_server) -> None:
    images = np.array([s["pixels"] for s in SAMPLES], dtype=np.float32)[..., None]
    client = make_grpc_client(f"127.0.0.1:{digits_server.port}")
    outputs = client.predict({"image": images}, "digits")
    assert outputs["label"].tolist() == [s["label"] for s in SAMPLES]
    # the server uses OpenVINO's default precision (bf16 on CPUs that have it): the same here
    compiled = ov.Core().compile_model(str(ROOT / "models" / "digits" / "1" / "model.xml"), "CPU")
    expected = compiled(images)[compiled.output("probabilities")]
    np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-2, atol=1e-3)


def test_ovmsclient_metadata_and_status(digits_server) -> None:
    client = make_grpc_client(f"127.0.0.1:{digits_server.port}")
    assert client.get_model_status("digits") == {1: {"state": "AVAILABLE", "error_code": 0, "error_message": "OK"}}
    metadata = client.get_model_metadata("digits")
    assert metadata["model_version"] == 1
    assert metadata["inputs"] == {"image": {"shape": [-1, 8, 8, 1], "dtype": "DT_FLOAT"}}
    assert metadata["outputs"] == {
        "probabilities": {"shape": [-1, 10], "dtype": "DT_FLOAT"},
        "label": {"shape": [-1], "dtype": "DT_INT64"},
    }


def test_ovmsclient_errors(digits_server) -> None:
    from ovmsclient.tfs_compat.base.errors import InvalidInputError, ModelNotFoundError

    client = make_grpc_client(f"127.0.0.1:{digits_server.port}")
    with pytest.raises(ModelNotFoundError):
        client.predict({"image": np.zeros((1, 8, 8, 1), np.float32)}, "nope")
    with pytest.raises(InvalidInputError, match="Invalid number of shape dimensions"):
        client.predict({"image": np.zeros((1, 64), np.float32)}, "digits")


def test_requests_of_shapes_that_alternate_are_each_answered_and_checked(digits_server) -> None:
    # The model's batch is dynamic: the server skips validation for requests shaped like the last
    # one that passed it (Servable.learn_exact). Every shape change, and every bad request in
    # between, must still get its own answer or its own error.
    from ovmsclient.tfs_compat.base.errors import InvalidInputError

    client = make_grpc_client(f"127.0.0.1:{digits_server.port}")
    compiled = ov.Core().compile_model(str(ROOT / "models" / "digits" / "1" / "model.xml"), "CPU")
    pixels = np.array([s["pixels"] for s in SAMPLES], dtype=np.float32)[..., None]
    for batch in [1, 3, 3, 1, 5, 1, 3]:
        images = pixels[batch : 2 * batch]
        outputs = client.predict({"image": images}, "digits")
        assert outputs["label"].tolist() == [s["label"] for s in SAMPLES[batch : 2 * batch]]
        expected = compiled(images)[compiled.output("probabilities")]
        np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-2, atol=1e-3)
        with pytest.raises(InvalidInputError, match=r"Invalid input shape - Expected: \(-1,8,8,1\); Actual: "):
            client.predict({"image": np.zeros((batch, 8, 7, 1), np.float32)}, "digits")
        with pytest.raises(InvalidInputError, match="Invalid input precision - Expected: FP32; Actual: FP64"):
            client.predict({"image": images.astype(np.float64)}, "digits")
