"""Detection -> crop -> classification, as OVMS's demos configured it: a detector and a classifier
(OpenVINO models built with the opset API), the crop node of this plugin under the name of OVMS's
library file, JPEG and PNG images as the pipeline's input, the boxes demultiplexed into one
classification each. Served by the real server to ovmsclient and tensorflow-serving-api; the
answers are compared with the two models and OpenCV run directly."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from dropin.testing.server import DropinServer, free_port
from dropin.testing.tfs_client import TfsClient
from dropin_image.testing import crop_reference, encode
from dropin_openvino.modelgen import F32_CONFIG, run_openvino, save

H, W = 48, 64  # the images the detector takes
CROP = 16  # the classifier's input: CROP x CROP
CLASSES = 5
#: the detector's boxes (xmin, ymin, xmax, ymax, relative) and the factor of each one's confidence:
#: confidence = mean pixel / 255 * factor, so a brighter image keeps more boxes
BOXES = np.array([[0.1, 0.1, 0.5, 0.6], [0.4, 0.2, 0.9, 0.9], [-0.1, 0.5, 0.3, 1.2], [0.6, 0.0, 1.0, 0.4],
                  [0.2, 0.3, 0.7, 0.8]], np.float32)
FACTORS = np.array([1.6, 1.2, 0.9, 2.0, 0.6], np.float32)
LABELS = np.array([1, 2, 1, 3, 2], np.float32)


def tensor(node: ov.Node, name: str) -> ov.Node:
    node.output(0).get_tensor().set_names({name})
    return node


def detector(version_dir: Path, layout: str) -> Path:
    """image FP32 [1,H,W,3] (NHWC) or [1,3,H,W] (NCHW) -> detection FP32 [1,1,5,7], as SSD models give it."""
    shape = [1, H, W, 3] if layout == "NHWC" else [1, 3, H, W]
    image = tensor(ops.parameter(shape, ov.Type.f32, name="image"), "image")
    image.set_layout(ov.Layout(layout))
    mean = ops.reduce_mean(image, ops.constant(np.array([1, 2, 3], np.int64)), keep_dims=False)  # [1]
    confidence = ops.clamp(ops.multiply(mean, ops.constant(FACTORS / 255.0)), 0.0, 1.0)  # [5]
    columns = [ops.constant(np.zeros(5, np.float32)), ops.constant(LABELS), confidence,
               *(ops.constant(np.ascontiguousarray(BOXES[:, i])) for i in range(4))]
    rows = ops.concat([ops.unsqueeze(c, ops.constant(np.int64(1))) for c in columns], 1)  # [5, 7]
    detection = ops.reshape(rows, ops.constant(np.array([1, 1, 5, 7], np.int64)), special_zero=False)
    result = ops.result(tensor(detection, "detection_out"), name="detection_out")
    return save(ov.Model([result], [image], "detector"), version_dir)


def classifier(version_dir: Path, layout: str) -> Path:
    """data FP32 [1,CROP,CROP,3] or [1,3,CROP,CROP] -> prob FP32 [1,CLASSES]: softmax of a random dense layer."""
    shape = [1, CROP, CROP, 3] if layout == "NHWC" else [1, 3, CROP, CROP]
    data = tensor(ops.parameter(shape, ov.Type.f32, name="data"), "data")
    data.set_layout(ov.Layout(layout))
    flat = ops.reshape(data, ops.constant(np.array([1, -1], np.int64)), special_zero=False)
    weights = np.random.default_rng(5).standard_normal((CROP * CROP * 3, CLASSES)).astype(np.float32) / 2000
    prob = ops.softmax(ops.matmul(flat, ops.constant(weights), False, False), 1)
    return save(ov.Model([ops.result(tensor(prob, "prob"), name="prob")], [data], "classifier"), version_dir)


def crop_params(layout: str, **more: str) -> dict[str, str]:
    return {
        "original_image_width": str(W), "original_image_height": str(H), "target_image_width": str(CROP),
        "target_image_height": str(CROP), "original_image_layout": layout, "target_image_layout": layout,
        "convert_to_gray_scale": "false", "max_output_batch": "100", "confidence_threshold": "0.5", **more,
    }


def pipeline(name: str, layout: str, demultiply_count: int, **params: str) -> dict:
    """OVMS's find_face_images demo pipeline, with these models."""
    return {
        "name": name, "inputs": ["image"],
        "nodes": [
            {"name": "detection_node", "model_name": f"detector_{layout.lower()}", "type": "DL model",
             "inputs": [{"image": {"node_name": "request", "data_item": "image"}}],
             "outputs": [{"data_item": "detection_out", "alias": "detection"}]},
            {"name": "extract_node", "library_name": "object_detection_image_extractor", "type": "custom",
             "demultiply_count": demultiply_count, "params": crop_params(layout, **params),
             "inputs": [{"image": {"node_name": "request", "data_item": "image"}},
                        {"detection": {"node_name": "detection_node", "data_item": "detection"}}],
             "outputs": [{"data_item": "images", "alias": "boxes"},
                         {"data_item": "coordinates", "alias": "coordinates"},
                         {"data_item": "confidences", "alias": "confidences"},
                         {"data_item": "label_ids", "alias": "label_ids"}]},
            {"name": "classification_node", "model_name": f"classifier_{layout.lower()}", "type": "DL model",
             "inputs": [{"data": {"node_name": "extract_node", "data_item": "boxes"}}],
             "outputs": [{"data_item": "prob", "alias": "prob"}]},
        ],
        "outputs": [{name: {"node_name": node, "data_item": item}} for name, node, item in (
            ("boxes", "extract_node", "boxes"), ("coordinates", "extract_node", "coordinates"),
            ("confidences", "extract_node", "confidences"), ("label_ids", "extract_node", "label_ids"),
            ("classes", "classification_node", "prob"))],
    }


@pytest.fixture(scope="module")
def tfs() -> Iterator[TfsClient]:
    client = TfsClient()  # TensorFlow imports while the models are built and the server starts
    yield client
    client.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tfs: TfsClient) -> Iterator[tuple[DropinServer, Path]]:
    root = tmp_path_factory.mktemp("detect")
    for layout in ("NHWC", "NCHW"):
        detector(root / f"detector_{layout.lower()}" / "1", layout)
        classifier(root / f"classifier_{layout.lower()}" / "1", layout)
    config = {
        "model_config_list": [{"config": {"name": f"{kind}_{layout}", "base_path": f"{kind}_{layout}",
                                          "plugin_config": json.loads(F32_CONFIG)}}
                              for kind in ("detector", "classifier") for layout in ("nhwc", "nchw")],
        "custom_node_library_config_list": [{
            "name": "object_detection_image_extractor",
            "base_path": "/workspace/lib/libcustom_node_model_zoo_intel_object_detection.so"}],
        "pipeline_config_list": [
            pipeline("find_objects", "NHWC", 0),
            pipeline("find_objects_nchw", "NCHW", -1, max_output_batch="2"),
        ],
    }
    (root / "config.json").write_text(json.dumps(config))
    server = DropinServer(["--config_path", str(root / "config.json"), "--file_system_poll_wait_seconds", "0",
                           "--rest_port", str(free_port())])
    try:
        server.wait_for("find_objects", 1)
        server.wait_for("find_objects_nchw", 1)
        yield server, root
    finally:
        server.stop()


def picture(brightness: float, seed: int) -> np.ndarray:
    """A BGR uint8 picture, H x W, of about this mean brightness (0..255)."""
    noise = np.random.default_rng(seed).normal(brightness, 40, (H, W, 3))
    return np.clip(noise, 0, 255).astype(np.uint8)


def expected(root: Path, image: np.ndarray, layout: str, **params: str) -> dict[str, np.ndarray]:
    """The detector and the classifier run by OpenVINO directly, the crops cut with OpenCV."""
    detection = run_openvino(root / f"detector_{layout.lower()}" / "1", {"image": image})["detection_out"]
    crops = crop_reference(crop_params(layout, **params), image, detection)
    classifier_dir = root / f"classifier_{layout.lower()}" / "1"
    classes = np.stack([run_openvino(classifier_dir, {"data": box})["prob"] for box in crops["images"]])
    return {"boxes": crops["images"], "coordinates": crops["coordinates"], "confidences": crops["confidences"],
            "label_ids": crops["label_ids"], "classes": classes}


def assert_outputs(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype and got[name].shape == array.shape, (name, got[name].shape, array.shape)
        np.testing.assert_allclose(got[name], array, rtol=1e-5, atol=1e-5, err_msg=name)


JPEG = encode(".jpg", picture(150, 1))
PNG = encode(".png", picture(90, 2))


def decoded_tensor(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[None].astype(np.float32)


def test_binary_images_through_detection_crop_and_classification_with_ovmsclient(
    served: tuple[DropinServer, Path],
) -> None:
    from ovmsclient import make_grpc_client

    server, root = served
    client = make_grpc_client(f"127.0.0.1:{server.port}")
    for data, boxes in ((JPEG, 4), (PNG, 2)):
        got = client.predict({"image": data}, "find_objects")
        want = expected(root, decoded_tensor(data), "NHWC")
        assert want["boxes"].shape == (boxes, 1, CROP, CROP, 3)  # the brighter picture keeps more boxes
        assert_outputs(got, want)
    meta = client.get_model_metadata("find_objects")
    assert meta["inputs"] == {"image": {"shape": [1, H, W, 3], "dtype": "DT_FLOAT"}}
    assert meta["outputs"]["classes"] == {"shape": [-1, 1, CLASSES], "dtype": "DT_FLOAT"}
    assert meta["outputs"]["label_ids"] == {"shape": [-1, 1, 1], "dtype": "DT_INT32"}


def test_tensors_in_nchw_with_the_batch_capped(served: tuple[DropinServer, Path]) -> None:
    server, root = served
    image = np.ascontiguousarray(picture(150, 3).astype(np.float32)[None].transpose(0, 3, 1, 2))
    got = server.client.predict("find_objects_nchw", {"image": image})
    want = expected(root, image, "NCHW", max_output_batch="2")
    assert want["boxes"].shape == (2, 1, 3, CROP, CROP)
    assert_outputs(got, want)


def test_errors_reach_the_client_and_the_server_goes_on(served: tuple[DropinServer, Path]) -> None:
    server, root = served
    dark = np.zeros((1, H, W, 3), np.float32)  # no box reaches the threshold
    with pytest.raises(grpc.RpcError) as none:
        server.client.predict("find_objects", {"image": dark})
    assert none.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert none.value.details().startswith("Pipeline execution aborted due to no content from custom node")
    with pytest.raises(grpc.RpcError) as wrong:
        server.client.predict("find_objects", {"image": np.zeros((1, H, W + 1, 3), np.float32)})
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in wrong.value.details()
    got = server.client.predict("find_objects", {"image": decoded_tensor(JPEG)})
    assert_outputs(got, expected(root, decoded_tensor(JPEG), "NHWC"))
    assert "Traceback" not in server.log


def test_binary_images_with_tensorflow_serving_api(served: tuple[DropinServer, Path], tfs: TfsClient) -> None:
    server, root = served
    jpeg, png, status = tfs.run(server.port, [
        {"predict": "find_objects", "inputs": {"image": [JPEG]}},
        {"predict": "find_objects", "inputs": {"image": [PNG]}, "output_filter": ["classes", "label_ids"]},
        {"status": "find_objects"},
    ])
    assert_outputs(jpeg["outputs"], expected(root, decoded_tensor(JPEG), "NHWC"))
    want = expected(root, decoded_tensor(PNG), "NHWC")
    assert_outputs(png["outputs"], {"classes": want["classes"], "label_ids": want["label_ids"]})
    assert status == {"versions": [[1, "AVAILABLE", 0, "OK"]]}



def test_binary_images_over_rest(served: tuple[DropinServer, Path]) -> None:
    server, root = served
    assert server.rest is not None
    body = {"inputs": {"image": [{"b64": base64.b64encode(JPEG).decode()}]}}
    status, answer = server.rest.request("POST", "/v1/models/find_objects:predict", body)
    assert status == 200, answer
    want = expected(root, decoded_tensor(JPEG), "NHWC")
    got = {name: np.asarray(value, want[name].dtype) for name, value in answer["outputs"].items()}
    assert_outputs(got, want)
    status, answer = server.rest.request("POST", "/v1/models/find_objects:predict",
                                         {"inputs": {"image": [{"b64": base64.b64encode(b"no image").decode()}]}})
    assert status == 400 and answer["error"].startswith("Image parsing failed"), answer
