"""Binary image inputs to a pipeline: the pipeline's input feeds a model input that takes images,
so encoded images are decoded by the image plugin as for that model (errors name the pipeline's
input); the result is compared with OpenCV decoding plus the two models run directly."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.expect import expect_error
from dropin.testing.server import DropinServer
from dropin_image.testing import encode, images_proto, reference

PIPELINE = {
    "name": "images", "inputs": ["picture"],
    "nodes": [
        {"name": "decode", "type": "DL model", "model_name": "identity",
         "inputs": [{"x": {"node_name": "request", "data_item": "picture"}}],
         "outputs": [{"data_item": "y", "alias": "pixels"}]},
        {"name": "double", "type": "DL model", "model_name": "double",
         "inputs": [{"x": {"node_name": "decode", "data_item": "pixels"}}],
         "outputs": [{"data_item": "y", "alias": "y"}]},
    ],
    "outputs": [{"doubled": {"node_name": "double", "data_item": "y"}}],
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    repo = tmp_path_factory.mktemp("pipeline_images")
    modelgen.image_model(repo / "identity" / "1", (-1, 8, 8, 3))
    modelgen.scale_model(repo / "double" / "1", shape=(-1, 8, 8, 3), factor=2.0)
    (repo / "config.json").write_text(json.dumps({
        "model_config_list": [{"config": {"name": n, "base_path": n}} for n in ("identity", "double")],
        "pipeline_config_list": [PIPELINE],
    }))
    srv = DropinServer(["--config_path", str(repo / "config.json"), "--file_system_poll_wait_seconds", "0"])
    try:
        srv.wait_for("images", 1)
        yield srv, repo
    finally:
        srv.stop()


def test_encoded_images_to_a_pipeline(server) -> None:  # type: ignore[no-untyped-def]
    srv, repo = server
    rng = np.random.default_rng(3)
    images = [encode(".png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
              encode(".jpg", rng.integers(0, 256, (12, 10, 3), dtype=np.uint8))]  # resized to 8x8
    request = predict_request("images", {"picture": images_proto(images)})
    got = outputs_of(srv.predict.Predict(request, timeout=30))["doubled"]
    pixels = reference(images, 8, 8)
    expected = modelgen.run_numpy(repo / "double" / "1", {"x": modelgen.run_numpy(repo / "identity" / "1",
                                                                                  {"x": pixels})["y"]})["y"]
    np.testing.assert_array_equal(got, expected)


def test_image_errors_name_the_pipeline_input(server) -> None:  # type: ignore[no-untyped-def]
    srv, _ = server
    gray = encode(".png", np.zeros((8, 8, 1), np.uint8))
    for images, message in [
        ([b"not an image"], "Image parsing failed - not an image format the server decodes; accepted: JPEG, PNG, "
                            "BMP, WebP, PBM, PGM or PPM; batch index: 0; input name: picture"),
        ([gray], "Invalid number of channels in binary input"),  # as for the model itself
    ]:
        expect_error(srv.predict.Predict, predict_request("images", {"picture": images_proto(images)}),
                     grpc.StatusCode.INVALID_ARGUMENT, message)
    assert "Traceback" not in srv.log


