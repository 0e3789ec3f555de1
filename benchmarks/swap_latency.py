#!/usr/bin/env python3
"""How long after a version directory is renamed into place does GetModelStatus show it AVAILABLE?

Measures, over repeated swaps (latest:1 policy, each new version renamed into the repository),
the time from the rename to AVAILABLE minus the model's own load time (taken from the server's
log line "AVAILABLE ... in N ms"), and prints p50 and max for:

- dropin as it runs by default: file-system events, with a rescan every second as a safety net;
- a 1-second polling loop, what OVMS and TF Serving do by default (dropin with events off,
  no settle wait, rescans every second).

    .venv/bin/python benchmarks/swap_latency.py [--swaps 20]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dropin_openvino  # noqa: F401  (imports openvino with its telemetry off)
import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops

from dropin._proto.tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

AVAILABLE = 30


def build_model(directory: Path, factor: float) -> None:
    x = ops.parameter([-1, 16], ov.Type.f32, name="x")
    y = ops.multiply(x, ops.constant(np.float32(factor)))
    directory.mkdir(parents=True)
    ov.save_model(ov.Model([y], [x], "m"), str(directory / "model.xml"))


class Server:
    def __init__(self, repo: Path, args: list[str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dropin", "serve", "--model_name", "m", "--model_path", str(repo), "--port", "0", *args],
            stderr=subprocess.PIPE, text=True, errors="replace",
        )
        self.port = 0
        started = threading.Event()

        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line)
                match = re.search(r"gRPC server listening on .*:(\d+)$", line.strip())
                if match:
                    self.port = int(match.group(1))
                if "server ready" in line:
                    started.set()

        threading.Thread(target=read, daemon=True).start()
        if not started.wait(60):
            raise RuntimeError("".join(self.lines))
        self.stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.port}"))

    def available(self, version: int) -> bool:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "m"
        request.model_spec.version.value = version
        try:
            status = self.stub.GetModelStatus(request, timeout=5)
        except grpc.RpcError:
            return False
        return status.model_version_status[0].state == AVAILABLE

    def load_ms(self, version: int) -> float:
        pattern = re.compile(rf"model m version {version}: AVAILABLE .* in (\d+) ms")
        for _ in range(200):
            for line in self.lines:
                match = pattern.search(line)
                if match:
                    return float(match.group(1))
            time.sleep(0.01)
        raise RuntimeError(f"no load time logged for version {version}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def measure(args: list[str], swaps: int, label: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        repo, staging = Path(tmp) / "m", Path(tmp) / "staging"
        repo.mkdir()
        build_model(repo / "1", 1.0)
        server = Server(repo, args)
        delays = []
        rng = random.Random(0)
        try:
            for version in range(2, swaps + 2):
                build_model(staging / str(version), float(version))
                # let the previous retirement finish, and land at random points of the polling cycle
                time.sleep(0.3 + rng.random())
                start = time.perf_counter()
                os.rename(staging / str(version), repo / str(version))
                while not server.available(version):
                    time.sleep(0.0005)
                elapsed_ms = (time.perf_counter() - start) * 1000
                delays.append(elapsed_ms - server.load_ms(version))
        finally:
            server.stop()
    print(f"{label:44}{statistics.median(delays):>10.1f}{max(delays):>10.1f}")
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swaps", type=int, default=20)
    options = parser.parse_args()
    print(f"rename -> AVAILABLE minus load time, {options.swaps} swaps each (ms)")
    print(f"{'':44}{'p50':>10}{'max':>10}")
    events = measure([], options.swaps, "dropin (events + 1 s rescans)")
    polling = measure(
        ["--file_system_watch", "off", "--version_settle_seconds", "0", "--file_system_poll_wait_seconds", "1"],
        max(options.swaps // 2, 5), "1 s polling loop (OVMS / TF Serving default)",
    )
    print(f"p50 ratio polling / events: {statistics.median(polling) / statistics.median(events):.1f}x")


if __name__ == "__main__":
    main()
