"""The detection crop custom node on arrays, against a reference that follows OVMS's node step by
step with OpenCV (one detection at a time, the whole image reordered to HWC first), and its
refusals: bad params name the param, bad inputs name the input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dropin.custom_nodes import CustomNode
from dropin.registry import Registry
from dropin_image.detection_crop import DetectionCrop
from dropin_image.plugin import dropin_register_custom_nodes
from dropin_image.testing import crop_reference as reference

RNG = np.random.default_rng(13)
H, W = 24, 32
PARAMS = {
    "original_image_width": str(W), "original_image_height": str(H),
    "target_image_width": "8", "target_image_height": "6", "confidence_threshold": "0.5",
}


def image(layout: str = "NCHW") -> np.ndarray:
    pixels = RNG.uniform(0, 255, (1, H, W, 3)).astype(np.float32)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)) if layout == "NCHW" else pixels


def detections(*rows: tuple[float, ...]) -> np.ndarray:
    return np.array(rows, np.float32).reshape(1, 1, len(rows), 7)


BOXES = detections(
    (0, 1, 0.9, 0.1, 0.2, 0.6, 0.7),
    (0, 2, 0.4, 0.0, 0.0, 1.0, 1.0),  # below the threshold
    (0, 2, 0.5, 0.5, 0.5, 1.0, 1.0),  # exactly at it
    (0, 1, 0.99, -0.2, -0.1, 0.3, 0.5),  # starts outside: moved to the edge, as OVMS did
    (0, 3, 0.8, 0.9, 0.8, 0.7, 0.6),  # corners swapped
    (0, 1, 0.7, 0.8, 0.6, 1.4, 1.3),  # reaches past the edges: cut there
    (-1, 0, 0.0, 0, 0, 0, 0),  # the end marker SSD models write
    (1, 1, 0.95, 0.1, 0.1, 0.5, 0.5),  # another image
)


def assert_as_reference(params: dict[str, str], img: np.ndarray, det: np.ndarray) -> dict[str, np.ndarray]:
    got = DetectionCrop(params).execute({"image": img, "detection": det})
    want = reference(params, img, det)
    assert set(got) == set(want)
    for name, array in want.items():
        assert got[name].dtype == array.dtype, name
        assert got[name].shape == array.shape, name
        np.testing.assert_allclose(got[name], array, rtol=0, atol=0, err_msg=name)
    return got


def test_crops_resizes_and_demultiplies_the_boxes_kept() -> None:
    got = assert_as_reference(PARAMS, image(), BOXES)
    assert got["images"].shape == (5, 1, 3, 6, 8)
    assert got["label_ids"][:, 0, 0].tolist() == [1, 2, 1, 3, 1]


@pytest.mark.parametrize("original", ["NCHW", "NHWC"])
@pytest.mark.parametrize("target", ["NCHW", "NHWC"])
@pytest.mark.parametrize("gray", ["true", "false"])
def test_layouts_and_gray_scale(original: str, target: str, gray: str) -> None:
    params = {**PARAMS, "original_image_layout": original, "target_image_layout": target, "convert_to_gray_scale": gray}
    got = assert_as_reference(params, image(original), BOXES)
    channels = 1 if gray == "true" else 3
    assert got["images"].shape == ((5, 1, channels, 6, 8) if target == "NCHW" else (5, 1, 6, 8, channels))


def test_label_filter_and_max_output_batch_cap_every_output() -> None:
    got = assert_as_reference({**PARAMS, "filter_label_id": "1"}, image(), BOXES)
    assert got["label_ids"][:, 0, 0].tolist() == [1, 1, 1]
    got = assert_as_reference({**PARAMS, "max_output_batch": "2"}, image(), BOXES)
    assert [array.shape[0] for array in got.values()] == [2, 2, 2, 2]


def test_no_box_kept_gives_empty_outputs() -> None:
    got = assert_as_reference({**PARAMS, "confidence_threshold": "1"}, image(), BOXES)
    assert got["images"].shape == (0, 1, 3, 6, 8) and got["label_ids"].shape == (0, 1, 1)


def test_declares_its_inputs_and_outputs_from_the_params() -> None:
    node = DetectionCrop({**PARAMS, "original_image_layout": "NHWC", "convert_to_gray_scale": "true"})
    assert {name: spec.shape_text() for name, spec in node.inputs.items()} == {
        "image": f"(1,{H},{W},3)", "detection": "(1,1,-1,7)",
    }
    assert {name: (spec.dtype.value, spec.shape_text()) for name, spec in node.outputs.items()} == {
        "images": ("FP32", "(-1,1,1,6,8)"), "coordinates": ("FP32", "(-1,1,4)"),
        "confidences": ("FP32", "(-1,1,1)"), "label_ids": ("I32", "(-1,1,1)"),
    }


def test_registered_under_the_name_of_ovms_library() -> None:
    registry: Registry[CustomNode] = Registry("custom node", CustomNode)
    dropin_register_custom_nodes(registry)
    assert registry.get("model_zoo_intel_object_detection") is DetectionCrop


@pytest.mark.parametrize(
    "change,message",
    [
        ({"original_image_width": None}, "param original_image_width is required"),
        ({"target_image_height": None}, "param target_image_height is required"),
        ({"confidence_threshold": None}, "param confidence_threshold is required"),
        ({"original_image_height": "tall"}, "param original_image_height must be an integer, got 'tall'"),
        ({"target_image_width": "0"}, "param target_image_width must be at least 1, got 0"),
        ({"max_output_batch": "-3"}, "param max_output_batch must be at least 1, got -3"),
        ({"buffer_queue_size": "0"}, "param buffer_queue_size must be at least 1, got 0"),
        ({"filter_label_id": "x"}, "param filter_label_id must be an integer"),
        ({"confidence_threshold": "1.5"}, "param confidence_threshold must be a number from 0 to 1, got '1.5'"),
        ({"confidence_threshold": "high"}, "param confidence_threshold must be a number from 0 to 1"),
        ({"original_image_layout": "HWC"}, "param original_image_layout must be one of NCHW, NHWC, got 'HWC'"),
        ({"target_image_layout": "nchw"}, "param target_image_layout must be one of NCHW, NHWC"),
        ({"convert_to_gray_scale": "yes"}, "param convert_to_gray_scale must be true or false, got 'yes'"),
    ],
)
def test_bad_params_are_refused_naming_the_param(change: dict[str, str | None], message: str) -> None:
    params = {key: value for key, value in {**PARAMS, **change}.items() if value is not None}
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        DetectionCrop(params)


GOOD = {"image": image(), "detection": BOXES}


@pytest.mark.parametrize(
    "inputs,message",
    [
        ({"detection": BOXES}, "missing input image"),
        ({**GOOD, "image": GOOD["image"].astype(np.uint8)}, "input image: expected FP32, got U8"),
        ({**GOOD, "image": image()[:, :, :20]}, f"input image: expected shape (1,3,{H},{W}), got (1,3,20,{W})"),
        ({**GOOD, "image": image("NHWC")}, f"input image: expected shape (1,3,{H},{W}), got (1,{H},{W},3)"),
        ({**GOOD, "detection": BOXES[0]}, "input detection: expected shape (1,1,-1,7), got (1,8,7)"),
        ({**GOOD, "detection": BOXES[..., :6]}, "input detection: expected shape (1,1,-1,7), got (1,1,8,6)"),
        ({**GOOD, "detection": BOXES.astype(np.float64)}, "input detection: expected FP32, got FP64"),
        ({**GOOD, "detection": BOXES[:, :, :0]}, "input detection: expected at least one detection"),
        ({**GOOD, "detection": detections((0, 1, 0.9, 0.5, 0.5, 0.51, 0.9))},
         f"input detection: box 0 (xmin, ymin, xmax, ymax [0.5, 0.5, 0.5099999904632568, 0.8999999761581421]) "
         f"covers no pixel of the {W}x{H} image"),
        ({**GOOD, "detection": detections((0, 1, 0.9, 0.2, 0.2, 0.4, 0.4), (0, 1, 0.9, 1.2, 0.1, 1.5, 0.4))},
         f"input detection: box 1 (xmin, ymin, xmax, ymax [1.2000000476837158, 0.10000000149011612, 1.5, "
         f"0.4000000059604645]) covers no pixel of the {W}x{H} image"),
    ],
)
def test_bad_inputs_are_refused_naming_the_input(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(ValueError) as refused:
        DetectionCrop(PARAMS).execute(inputs)
    assert str(refused.value) == message or str(refused.value).startswith(message + ","), str(refused.value)


def test_odd_values_in_the_detection_are_dropped_or_cut_not_crashed_on() -> None:
    img = image()
    det = detections(
        (np.nan, 1, 0.9, 0.1, 0.1, 0.5, 0.5), (0, 1, np.nan, 0.1, 0.1, 0.5, 0.5), (0, np.nan, 0.9, 0.1, 0.1, 0.5, 0.5),
        (0, 1, 0.9, -np.inf, 0.1, np.inf, 0.5),
    )
    got = DetectionCrop({**PARAMS, "filter_label_id": "1"}).execute({"image": img, "detection": det})
    # only the last row is kept, and its infinite corners are the image's edges: rows 2..11, all columns
    whole_width = cv2.resize(np.ascontiguousarray(img[0].transpose(1, 2, 0)[2:12]), (8, 6))
    np.testing.assert_allclose(got["images"][0, 0], whole_width.transpose(2, 0, 1), rtol=1e-6, atol=1e-4)
    assert got["label_ids"].tolist() == [[[1]]]


def test_one_instance_serves_many_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    node = DetectionCrop(PARAMS)
    images = [image() for _ in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda img: node.execute({"image": img, "detection": BOXES}), images))
    for img, got in zip(images, results, strict=True):
        np.testing.assert_array_equal(got["images"], reference(PARAMS, img, BOXES)["images"])
