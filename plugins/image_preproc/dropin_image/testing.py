"""For tests of the image plugin: real files encoded with OpenCV, a PNG whose header claims any
size, images sent to a server as DT_STRING tensors, and what the server should make of them
(OpenCV run directly)."""

from __future__ import annotations

import struct
import zlib

import grpc
import numpy as np

from dropin._proto.tensorflow.core.framework import tensor_pb2
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.expect import expect_error
from dropin.testing.server import DropinServer


def encode(ext: str, image: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    """`image` encoded as `ext` (".png", ".jpg", ...) with OpenCV's `params`."""
    import cv2

    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def png_claiming(width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> bytes:
    """A PNG whose IHDR claims width x height, with a valid CRC and a tiny IDAT: a decompression
    bomb's header (the real ones deflate gigabytes of zeros into a few kilobytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def images_proto(images: list[bytes], shape: list[int] | None = None) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=7, string_val=images)  # type: ignore[arg-type]  # 7: DT_STRING
    for size in [len(images)] if shape is None else shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def predict(
    server: DropinServer, model: str, images: list[bytes], shape: list[int] | None = None
) -> dict[str, np.ndarray]:
    request = predict_request(model, {"image" if model == "digits" else "x": images_proto(images, shape)})
    return outputs_of(server.predict.Predict(request, timeout=30))


def image_error(
    server: DropinServer, model: str, images: list[bytes], code: grpc.StatusCode, message: str,
    shape: list[int] | None = None,
) -> None:
    request = predict_request(model, {"x": images_proto(images, shape)})
    expect_error(server.predict.Predict, request, code, message)


def decoded(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image is not None, "not an image OpenCV decodes"
    return image if image.ndim == 3 else image[:, :, None]


def reference(
    images: list[bytes], height: int, width: int, nchw: bool = False, dtype: type = np.float32
) -> np.ndarray:
    """What the server should build: OpenCV decode (BGR), bilinear resize, cast, stack, layout."""
    import cv2

    batch: list[np.ndarray] = []
    for data in images:
        image = decoded(data)
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            image = image if image.ndim == 3 else image[:, :, None]
        batch.append(image.astype(dtype))
    tensor = np.stack(batch)
    return np.ascontiguousarray(tensor.transpose(0, 3, 1, 2)) if nchw else tensor


def crop_reference(params: dict[str, str], image: np.ndarray, detection: np.ndarray) -> dict[str, np.ndarray]:
    """What OVMS's model_zoo_intel_object_detection node returned for these params and inputs,
    computed the way its C++ does: one detection at a time, on the image in HWC order."""
    import cv2

    nchw_in = params.get("original_image_layout", "NCHW") == "NCHW"
    hwc = image[0].transpose(1, 2, 0) if nchw_in else image[0]
    height, width = hwc.shape[:2]
    threshold = np.float32(params["confidence_threshold"])
    label_filter = int(params.get("filter_label_id", "-1"))
    gray = params.get("convert_to_gray_scale") == "true"
    size = (int(params["target_image_width"]), int(params["target_image_height"]))
    crops, coords, confs, labels = [], [], [], []
    for row in detection[0, 0]:
        if int(row[0]) != 0 or not row[2] >= threshold or (label_filter != -1 and int(row[1]) != label_filter):
            continue
        x0, y0 = int(row[3] * np.float32(width)), int(row[4] * np.float32(height))
        x1, y1 = int(row[5] * np.float32(width)), int(row[6] * np.float32(height))
        x, y, w, h = min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)  # cv::Rect(Point, Point)
        x, y = max(x, 0), max(y, 0)
        w = width - x if x + w > width else w
        h = height - y if y + h > height else h
        crop = cv2.resize(np.ascontiguousarray(hwc[y : y + h, x : x + w]), size)
        if gray:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)[:, :, None]
        crops.append(crop.transpose(2, 0, 1) if params.get("target_image_layout", "NCHW") == "NCHW" else crop)
        coords.append(row[3:7])
        confs.append(row[2])
        labels.append(int(row[1]))
    cap = int(params.get("max_output_batch", "100"))
    channels = 1 if gray else 3
    nchw_out = params.get("target_image_layout", "NCHW") == "NCHW"
    empty = (0, channels, size[1], size[0]) if nchw_out else (0, size[1], size[0], channels)
    return {
        "images": (np.stack(crops) if crops else np.zeros(empty, np.float32))[:cap, None],
        "coordinates": np.array(coords, np.float32).reshape(-1, 1, 4)[:cap],
        "confidences": np.array(confs, np.float32).reshape(-1, 1, 1)[:cap],
        "label_ids": np.array(labels, np.int32).reshape(-1, 1, 1)[:cap],
    }
