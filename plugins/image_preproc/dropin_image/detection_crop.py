"""The custom node OVMS's detection-to-classification demos used, as a dropin custom node.

OVMS shipped it as `libcustom_node_model_zoo_intel_object_detection.so`; it is registered here
as `model_zoo_intel_object_detection`, so a config.json naming that library works unchanged.
It reads an object detection model's `[1, 1, D, 7]` output (image id, label, confidence,
xmin, ymin, xmax, ymax; coordinates relative to the image) and the image the model saw, keeps
the boxes of image 0 whose confidence reaches `confidence_threshold` (and whose label is
`filter_label_id`, when given), at most `max_output_batch` of them in the model's order, and
crops each box out of the image, resized to the target size. Its outputs have one entry per box
in their first dimension, so a pipeline node using it demultiplexes (`demultiply_count` -1):

    images       FP32 [N, 1, C, H, W] (target_image_layout NCHW) or [N, 1, H, W, C] (NHWC)
    coordinates  FP32 [N, 1, 4]: the box's xmin, ymin, xmax, ymax as the detection gave them
    confidences  FP32 [N, 1, 1]
    label_ids    I32  [N, 1, 1]

Boxes are cut as OVMS cut them: corners truncated to whole pixels, a box starting left of or
above the image moved to its edge, one reaching past the right or bottom edge cut there; a box
with no pixel left is an error. Unlike OVMS, `max_output_batch` caps all four outputs (OVMS
capped only images and confidences, which then disagreed on N).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from dropin.custom_nodes import CustomNode
from dropin.dtypes import DType
from dropin.shapes import TensorSpec

log = logging.getLogger(__name__)

LAYOUTS = ("NCHW", "NHWC")
#: box corners in pixels are kept within this, so that the cast to int is defined for any input
PIXEL_LIMIT = 2**30


def int_param(params: Mapping[str, str], name: str, default: int | None = None, low: int = 1) -> int:
    text = params.get(name)
    if text is None:
        if default is None:
            raise ValueError(f"param {name} is required: an integer of at least {low}")
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"param {name} must be an integer, got {text!r}") from None
    if value < low:
        raise ValueError(f"param {name} must be at least {low}, got {value}")
    return value


def choice_param(params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = str(params.get(name, default)).strip()
    if value not in choices:
        raise ValueError(f"param {name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def bool_param(params: Mapping[str, str], name: str) -> bool:
    value = str(params.get(name, "false")).strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"param {name} must be true or false, got {params[name]!r}")
    return value == "true"


def threshold_param(params: Mapping[str, str], name: str) -> float:
    text = params.get(name)
    if text is None:
        raise ValueError(f"param {name} is required: a number from 0 to 1")
    try:
        value = float(str(text).strip())
    except ValueError:
        raise ValueError(f"param {name} must be a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"param {name} must be a number from 0 to 1, got {text!r}")
    return value


class DetectionCrop(CustomNode):
    """Crops and resizes the detected boxes of one image; params as OVMS's node took them."""

    def __init__(self, params: Mapping[str, str]) -> None:
        super().__init__(params)
        self.original_height = int_param(params, "original_image_height")
        self.original_width = int_param(params, "original_image_width")
        self.target_height = int_param(params, "target_image_height")
        self.target_width = int_param(params, "target_image_width")
        self.original_layout = choice_param(params, "original_image_layout", LAYOUTS, "NCHW")
        self.target_layout = choice_param(params, "target_image_layout", LAYOUTS, "NCHW")
        self.gray = bool_param(params, "convert_to_gray_scale")
        self.threshold = np.float32(threshold_param(params, "confidence_threshold"))
        self.max_boxes = int_param(params, "max_output_batch", 100)
        self.label_id = int_param(params, "filter_label_id", -1, low=-1)
        self.debug = bool_param(params, "debug")
        # OVMS preallocated this many output buffers; arrays need none, but the value is checked alike
        int_param(params, "buffer_queue_size", 24)
        self.channels = 1 if self.gray else 3

        h, w = self.original_height, self.original_width
        image_shape = (1, 3, h, w) if self.original_layout == "NCHW" else (1, h, w, 3)
        th, tw, c = self.target_height, self.target_width, self.channels
        crop_shape = (-1, 1, c, th, tw) if self.target_layout == "NCHW" else (-1, 1, th, tw, c)
        self._inputs = {
            "image": TensorSpec.of("image", DType.FP32, image_shape, self.original_layout),
            "detection": TensorSpec.of("detection", DType.FP32, (1, 1, -1, 7)),
        }
        self._outputs = {
            "images": TensorSpec.of("images", DType.FP32, crop_shape),
            "coordinates": TensorSpec.of("coordinates", DType.FP32, (-1, 1, 4)),
            "confidences": TensorSpec.of("confidences", DType.FP32, (-1, 1, 1)),
            "label_ids": TensorSpec.of("label_ids", DType.I32, (-1, 1, 1)),
        }

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    def execute(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        image = self._checked(inputs, "image")
        detection = self._checked(inputs, "detection")
        rows = detection[0, 0]
        boxes, kept, labels = self._boxes(rows)
        if self.debug:
            kept_boxes = [
                (int(label), float(conf), box.tolist())
                for label, conf, box in zip(labels, rows[kept, 2], boxes, strict=True)
            ]
            log.info("detections kept (label, confidence, box x y width height): %s", kept_boxes)
        return {
            "images": self._crops(image, boxes),
            "coordinates": rows[kept, 3:7].reshape(-1, 1, 4).astype(np.float32),
            "confidences": rows[kept, 2].reshape(-1, 1, 1).astype(np.float32),
            "label_ids": labels.astype(np.int32).reshape(-1, 1, 1),
        }

    def _checked(self, inputs: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        spec = self._inputs[name]
        if name not in inputs:
            raise ValueError(f"missing input {name}")
        array = inputs[name]
        if array.dtype != np.float32:
            raise ValueError(f"input {name}: expected FP32, got {DType.from_numpy(array.dtype).value}")
        if array.ndim != spec.rank or not all(d.accepts(n) for d, n in zip(spec.shape, array.shape, strict=True)):
            actual = "(" + ",".join(str(n) for n in array.shape) + ")"
            raise ValueError(f"input {name}: expected shape {spec.shape_text()}, got {actual}")
        if name == "detection" and array.shape[2] == 0:
            raise ValueError("input detection: expected at least one detection, got shape (1,1,0,7)")
        return array

    def _boxes(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The boxes kept, in pixels (x, y, width, height) and cut to the image; their rows; their labels."""
        with np.errstate(invalid="ignore"):  # NaN ids and labels: int casts of garbage, dropped below
            image_ids = rows[:, 0].astype(np.int64)
            labels = rows[:, 1].astype(np.int64)
        keep = (image_ids == 0) & (rows[:, 2] >= self.threshold)
        if self.label_id != -1:
            keep &= labels == self.label_id
        kept = np.flatnonzero(keep)[: self.max_boxes]
        size = np.array([self.original_width, self.original_height] * 2, np.float32)
        with np.errstate(invalid="ignore"):
            corners = np.clip(np.nan_to_num(rows[kept, 3:7] * size), -PIXEL_LIMIT, PIXEL_LIMIT).astype(np.int64)
        low = np.minimum(corners[:, :2], corners[:, 2:])
        extent = np.abs(corners[:, 2:] - corners[:, :2])
        low = np.maximum(low, 0)  # moved to the edge, its size kept, as OVMS did
        limit = np.array([self.original_width, self.original_height])
        extent = np.where(low + extent > limit, limit - low, extent)
        boxes = np.concatenate([low, extent], axis=1)
        empty = np.flatnonzero((extent <= 0).any(axis=1))
        if empty.size:
            row = int(kept[empty[0]])
            raise ValueError(
                f"input detection: box {row} (xmin, ymin, xmax, ymax {rows[row, 3:7].tolist()}) covers no pixel "
                f"of the {self.original_width}x{self.original_height} image"
            )
        return boxes, kept, labels[kept]

    def _crops(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        import cv2

        th, tw, c = self.target_height, self.target_width, self.channels
        planar_out = self.target_layout == "NCHW"
        out = np.empty((len(boxes), c, th, tw) if planar_out else (len(boxes), th, tw, c), np.float32)
        for i, (x, y, w, h) in enumerate(boxes.tolist()):
            if self.original_layout == "NCHW" and not self.gray:
                # bilinear resizing treats channels alike: resize each plane where it lies, no reordering
                for channel in range(3):
                    plane = cv2.resize(image[0, channel, y : y + h, x : x + w], (tw, th))
                    if planar_out:
                        out[i, channel] = plane
                    else:
                        out[i, :, :, channel] = plane
                continue
            if self.original_layout == "NCHW":  # gray needs the pixels interleaved: only the box is reordered
                crop = np.ascontiguousarray(image[0, :, y : y + h, x : x + w].transpose(1, 2, 0))
            else:
                crop = image[0, y : y + h, x : x + w]
            resized = cv2.resize(crop, (tw, th))
            if self.gray:
                resized = cv2.cvtColor(resized, cv2.COLOR_BGR2GRAY)
            resized = resized.reshape(th, tw, c)
            out[i] = resized.transpose(2, 0, 1) if planar_out else resized
        return out[:, None]
