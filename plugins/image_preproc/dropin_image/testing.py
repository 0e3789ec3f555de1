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
