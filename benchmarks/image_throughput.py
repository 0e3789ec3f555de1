#!/usr/bin/env python3
"""Binary images versus tensors: Predict throughput on a ResNet-50 with random weights.

Builds ResNet-50 (the real architecture: 7x7 stem, bottleneck stages of 3, 4, 6 and 3 blocks,
25.6 M parameters, random weights, batch norm folded away) with the OpenVINO opset API, NCHW
f32 input [-1,3,224,224] like a torchvision export, serves it with `dropin serve`, and has
`--clients` threads send batch-1 Predict requests for `--seconds`:

- tensors: the decoded image as an f32 NCHW tensor (602 KB of tensor_content per request);
- jpeg: the same image as a 224x224 JPEG (DT_STRING, ~10 KB): the image plugin decodes it, casts
  it and transposes it to NCHW in the server.

The two phases alternate (tensor, jpeg, tensor, jpeg) in one run and the printed ratio is jpeg
requests/s over tensor requests/s; the goal is >= 0.9. Requests are serialized once and sent as
bytes. Both processes raise glibc's mmap/trim thresholds (see docs: image-sized buffers are
otherwise returned to the OS after every request, which slows the tensor path most).

    .venv/bin/python benchmarks/image_throughput.py [--seconds 10] [--clients 4]
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import threading
import time
from pathlib import Path

import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off; first)

# isort: split
import cv2
import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops

from dropin._proto.tensorflow.core.framework import tensor_pb2
from dropin._proto.tensorflow_serving.apis import predict_pb2
from dropin.tensor_proto import from_numpy
from dropin.testing.server import DropinServer

GLIBC_TUNABLES = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"


def raise_malloc_thresholds() -> None:
    """This process (the clients): what GLIBC_TUNABLES does for the server."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD


# -- ResNet-50 with random weights ------------------------------------------------------------


class Weights:
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def conv(self, x: ov.Output, out_ch: int, kernel: int, stride: int = 1, relu: bool = True) -> ov.Output:
        in_ch = x.get_partial_shape()[1].get_length()
        w = (
            self.rng.standard_normal((out_ch, in_ch, kernel, kernel)) * np.sqrt(2.0 / (in_ch * kernel * kernel))
        ).astype(np.float32)
        b = np.zeros((1, out_ch, 1, 1), np.float32)
        self.count += w.size + out_ch
        pad = kernel // 2
        y = ops.add(ops.convolution(x, ops.constant(w), [stride] * 2, [pad] * 2, [pad] * 2, [1, 1]), ops.constant(b))
        return ops.relu(y).output(0) if relu else y.output(0)


def resnet50(path: Path) -> int:
    """Write ResNet-50 (NCHW f32 [-1,3,224,224] -> softmax [-1,1000]) as IR; return the parameter count."""
    w = Weights()
    x = ops.parameter(ov.PartialShape([-1, 3, 224, 224]), ov.Type.f32, name="image")
    x.output(0).get_tensor().set_names({"image"})
    x.set_layout(ov.Layout("NCHW"))
    h = w.conv(x.output(0), 64, 7, 2)
    h = ops.max_pool(h, [2, 2], [1, 1], [1, 1], [1, 1], [3, 3]).output(0)
    in_ch = 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            shortcut = w.conv(h, width * 4, 1, s, relu=False) if i == 0 else h
            y = w.conv(h, width, 1)
            y = w.conv(y, width, 3, s)
            y = w.conv(y, width * 4, 1, relu=False)
            h = ops.relu(ops.add(y, shortcut)).output(0)
        in_ch = width * 4
    pooled = ops.reduce_mean(h, ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
    fc = (w.rng.standard_normal((in_ch, 1000)) * np.sqrt(1.0 / in_ch)).astype(np.float32)
    w.count += fc.size + 1000
    logits = ops.add(ops.matmul(pooled, ops.constant(fc), False, False), ops.constant(np.zeros(1000, np.float32)))
    probs = ops.softmax(logits, 1)
    probs.output(0).get_tensor().set_names({"probabilities"})
    model = ov.Model([ops.result(probs)], [x], "resnet50_random")
    path.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path / "model.xml"), compress_to_fp16=False)
    return w.count


# -- the run ----------------------------------------------------------------------------------


def photo(size: int = 224) -> np.ndarray:
    """A photo-like BGR image: smooth gradients with mild noise (JPEG ~10-20 KB at quality 90)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    rng = np.random.default_rng(1)
    planes = [
        127 + 100 * np.sin(x / (13 + 7 * c) + y / (19 + 5 * c) + c) + rng.normal(0, 6, (size, size)) for c in range(3)
    ]
    return np.clip(np.stack(planes, axis=-1), 0, 255).astype(np.uint8)


def start_server(repo: Path) -> DropinServer:
    server = DropinServer(
        ["--model_name", "resnet", "--model_path", str(repo), "--file_system_poll_wait_seconds", "0"],
        env={"GLIBC_TUNABLES": GLIBC_TUNABLES},
    )
    server.wait_for("resnet", 1, timeout=300)
    return server


def request_bytes(proto: tensor_pb2.TensorProto) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["image"].CopyFrom(proto)
    return request.SerializeToString()


def measure(call, payload: bytes, clients: int, seconds: float) -> float:
    """Requests per second with `clients` threads sending `payload` back to back."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop:
            call(payload, timeout=60)
            counts[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each of the four phases")
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    raise_malloc_thresholds()

    image = photo()
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    jpeg_bytes = jpeg.tobytes()
    decoded = cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)
    tensor = np.ascontiguousarray(decoded.astype(np.float32).transpose(2, 0, 1)[None])  # what the server builds
    string = tensor_pb2.TensorProto(dtype=7, string_val=[jpeg_bytes])
    string.tensor_shape.dim.add().size = 1
    payloads = {"tensor": request_bytes(from_numpy(tensor)), "jpeg": request_bytes(string)}

    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        params = resnet50(Path(tmp) / "resnet" / "1")
        built = time.monotonic() - started
        server = start_server(Path(tmp) / "resnet")
        port = server.port
        try:
            channel = grpc.insecure_channel(
                f"127.0.0.1:{port}",
                options=[("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)],
            )
            call = channel.unary_unary(
                "/tensorflow.serving.PredictionService/Predict",
                request_serializer=None,
                response_deserializer=predict_pb2.PredictResponse.FromString,
            )
            same = [call(payloads[kind], timeout=120).outputs["probabilities"] for kind in ("tensor", "jpeg")]
            assert same[0] == same[1], "the JPEG path must give the same result as the tensor path"
            measure(call, payloads["jpeg"], args.clients, 2.0)  # warm up
            measure(call, payloads["tensor"], args.clients, 2.0)
            rates: dict[str, list[float]] = {"tensor": [], "jpeg": []}
            for kind in ("tensor", "jpeg", "tensor", "jpeg"):
                rates[kind].append(measure(call, payloads[kind], args.clients, args.seconds / 2))
            channel.close()
        finally:
            server.stop()

    tensor_rps = sum(rates["tensor"]) / 2
    jpeg_rps = sum(rates["jpeg"]) / 2
    print(
        f"ResNet-50, random weights ({params / 1e6:.1f} M parameters, built in {built:.1f} s), NCHW f32 [1,3,224,224]"
    )
    print(f"{args.clients} client threads, batch 1, {args.seconds:.0f} s per path, alternating phases")
    print(f"request size: tensor {len(payloads['tensor'])} bytes, JPEG {len(payloads['jpeg'])} bytes")
    print(f"{'tensor_content f32':24}{tensor_rps:>10.1f} req/s   ({', '.join(f'{r:.1f}' for r in rates['tensor'])})")
    print(f"{'JPEG (decoded in server)':24}{jpeg_rps:>10.1f} req/s   ({', '.join(f'{r:.1f}' for r in rates['jpeg'])})")
    print(f"ratio JPEG / tensor: {jpeg_rps / tensor_rps:.3f}  (goal >= 0.9)")


if __name__ == "__main__":
    main()
