#!/usr/bin/env python3
"""Predict latency on the bundled demo model, next to OpenVINO run in-process on the same input.

Starts `dropin serve` on models/ as a user would, sends sequential gRPC Predict requests (each
serialized once, sent as bytes), and prints p50 / p99 of both and their difference: the serving
overhead. One run, side by side, because these machines are noisy.

    .venv/bin/python benchmarks/predict_latency.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off; first)

# isort: split
import numpy as np
import openvino as ov

from dropin._proto.tensorflow_serving.apis import predict_pb2
from dropin.tensor_proto import from_numpy
from dropin.testing.server import DropinServer

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "digits" / "1" / "model.xml"


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def in_process(image: np.ndarray, n: int) -> list[float]:
    core = ov.Core()
    compiled = core.compile_model(str(MODEL), "CPU")
    request = compiled.create_infer_request()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        request.infer({"image": image})
        times.append(time.perf_counter() - start)
    return times


def served(image: np.ndarray, n: int) -> list[float]:
    server = DropinServer(
        ["--config_path", str(ROOT / "models" / "config.json"), "--file_system_poll_wait_seconds", "0"]
    )
    try:
        server.wait_for("digits", 1)
        call = server.channel.unary_unary(
            "/tensorflow.serving.PredictionService/Predict",
            request_serializer=None,
            response_deserializer=predict_pb2.PredictResponse.FromString,
        )
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        request.inputs["image"].CopyFrom(from_numpy(image))
        payload = request.SerializeToString()
        for _ in range(200):  # warm up
            call(payload)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            call(payload)
            times.append(time.perf_counter() - start)
        return times
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    image = (np.random.default_rng(0).random((1, 8, 8, 1)) * 255).astype(np.float32)
    local = percentiles(in_process(image, args.requests))
    remote = percentiles(served(image, args.requests))
    print(f"demo model 'digits', batch 1, {args.requests} sequential requests")
    print(f"{'':24}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'OpenVINO in-process':24}{local[0] * 1e3:>10.3f}{local[1] * 1e3:>10.3f}")
    print(f"{'dropin gRPC Predict':24}{remote[0] * 1e3:>10.3f}{remote[1] * 1e3:>10.3f}")
    print(f"{'serving overhead':24}{(remote[0] - local[0]) * 1e3:>10.3f}{(remote[1] - local[1]) * 1e3:>10.3f}")


if __name__ == "__main__":
    main()
