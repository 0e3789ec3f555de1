#!/usr/bin/env python3
"""REST :predict latency on the bundled demo model, beside gRPC Predict to the same server, and
with --metrics_enable, in one run (these machines are noisy: compare within a run).

Starts `dropin serve` on models/ with a REST port, sends sequential requests over one keep-alive
HTTP connection (http.client; the JSON body is encoded once), and prints p50 / p99.

    .venv/bin/python benchmarks/rest_latency.py [--requests 3000] [--batch 1]
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np

from dropin._proto.tensorflow_serving.apis import predict_pb2
from dropin.tensor_proto import from_numpy

ROOT = Path(__file__).resolve().parent.parent


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*extra: str) -> tuple[subprocess.Popen, int, int]:
    rest_port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dropin", "serve", "--config_path", str(ROOT / "models" / "config.json"),
         "--port", "0", "--rest_port", str(rest_port), "--rest_bind_address", "127.0.0.1",
         "--file_system_poll_wait_seconds", "0", *extra],
        stderr=subprocess.PIPE, text=True, errors="replace",
    )
    assert proc.stderr is not None
    grpc_port = 0
    for line in proc.stderr:
        match = re.search(r"gRPC server listening on .*:(\d+)$", line.strip())
        if match:
            grpc_port = int(match.group(1))
        if "server ready" in line:
            break
    return proc, grpc_port, rest_port


def rest_times(port: int, body: bytes, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}

    def once() -> None:
        conn.request("POST", "/v1/models/digits:predict", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, data

    for _ in range(200):  # warm up
        once()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    conn.close()
    return times


def grpc_times(port: int, images: np.ndarray, n: int) -> list[float]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        "/tensorflow.serving.PredictionService/Predict",
        request_serializer=None, response_deserializer=predict_pb2.PredictResponse.FromString,
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(from_numpy(images))
    payload = request.SerializeToString()
    for _ in range(200):
        call(payload)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call(payload)
        times.append(time.perf_counter() - started)
    channel.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    samples = json.loads((ROOT / "examples" / "digits" / "samples.json").read_text())
    pixels = [samples[i % len(samples)]["pixels"] for i in range(args.batch)]
    images = np.array(pixels, np.float32)[..., None]
    body = json.dumps({"instances": images.tolist()}).encode()

    results: dict[str, tuple[float, float]] = {}
    proc, grpc_port, rest_port = start()
    try:
        results["dropin REST :predict"] = percentiles(rest_times(rest_port, body, args.requests))
        results["dropin gRPC Predict"] = percentiles(grpc_times(grpc_port, images, args.requests))
    finally:
        proc.terminate()
        proc.wait(30)
    proc, grpc_port, rest_port = start("--metrics_enable")
    try:
        results["REST, --metrics_enable"] = percentiles(rest_times(rest_port, body, args.requests))
        results["gRPC, --metrics_enable"] = percentiles(grpc_times(grpc_port, images, args.requests))
    finally:
        proc.terminate()
        proc.wait(30)

    print(f"demo model 'digits', batch {args.batch} (REST body {len(body)} bytes), {args.requests} sequential requests")
    print(f"{'':26}{'p50 ms':>10}{'p99 ms':>10}")
    for name, (p50, p99) in results.items():
        print(f"{name:26}{p50 * 1e3:>10.3f}{p99 * 1e3:>10.3f}")
    rest, grpc_ = results["dropin REST :predict"], results["dropin gRPC Predict"]
    print(f"REST / gRPC p50: {rest[0] / grpc_[0]:.2f}x")


if __name__ == "__main__":
    main()
