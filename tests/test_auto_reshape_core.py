"""batch_size / shape "auto" on a backend that cannot reshape (the numpy test backend): the
request that needs another shape gets FAILED_PRECONDITION "Model could not be reshaped with
requested shape" with the backend's reason, and the version keeps serving its own shape.
(Reshaping itself is OpenVINO's: plugins/openvino_backend/tests/test_auto_reshape.py.)"""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models
from dropin.testing.server import free_port


@pytest.mark.parametrize("flag", ["--batch_size", "--shape"])
def test_a_backend_that_cannot_reshape_gives_failed_precondition(dropin_server, tmp_path: Path, flag: str) -> None:
    numpy_models.scale_model(tmp_path / "m" / "1", shape=(1, 3), factor=2.0)
    server = dropin_server("--model_name", "m", "--model_path", str(tmp_path / "m"), flag, "auto",
                           "--file_system_poll_wait_seconds", "0", "--rest_port", str(free_port()))
    server.wait_for("m", 1)
    with pytest.raises(grpc.RpcError) as failed:
        server.client.predict("m", {"x": np.ones((2, 3), np.float32)})
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = failed.value.details()
    assert details.startswith("Model could not be reshaped with requested shape - x (2,3): "), details
    assert "backend numpy: " in details and "the numpy backend cannot reshape models" in details
    assert str(tmp_path) not in details
    assert server.rest is not None
    status, body = server.rest.request("POST", "/v1/models/m:predict", {"inputs": {"x": [[1, 2, 3], [4, 5, 6]]}})
    assert status == 412 and body["error"].startswith("Model could not be reshaped with requested shape"), body
    # the version keeps serving requests of its shape; other validation steps are unchanged
    np.testing.assert_array_equal(server.client.predict("m", {"x": np.ones((1, 3), np.float32)})["y"], [[2, 2, 2]])
    with pytest.raises(grpc.RpcError) as wrong:
        server.client.predict("m", {"x": np.ones((1, 3), np.int32)})
    assert wrong.value.details() == "Invalid input precision - Expected: FP32; Actual: I32; input name: x"
    with pytest.raises(grpc.RpcError) as rank:
        server.client.predict("m", {"x": np.ones((1, 3, 1), np.float32)})
    assert rank.value.details().startswith("Invalid number of shape dimensions")
    assert server.client.status("m")[1][0] == "AVAILABLE"
    assert "Traceback" not in server.log
