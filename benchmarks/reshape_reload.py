#!/usr/bin/env python3
"""What `batch_size: "auto"` costs a client: the latency of a request whose batch size differs from
the loaded model's (it waits for the version to be loaded again with that batch size), next to a
request that fits, and the latency of requests of the old batch size sent during that reload
(the old servable keeps answering them). For a small model (a 3x3 convolution, (1,3,8,8)) and a
ResNet-50 (25.6 M parameters, (1,3,224,224); image_throughput.py), both saved with a static batch
of 1 and served by the real server with `--batch_size auto`; medians of `--rounds` reloads.

    .venv/bin/python benchmarks/reshape_reload.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops

sys.path.insert(0, str(Path(__file__).parent))
from dropin.testing.server import DropinServer  # noqa: E402


def small(version_dir: Path) -> tuple[int, ...]:
    x = ops.parameter([1, 3, 8, 8], ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = ops.relu(ops.convolution(x, ops.constant(w), [1, 1], [0, 0], [0, 0], [1, 1]))
    version_dir.mkdir(parents=True)
    ov.save_model(ov.Model([y], [x], "conv"), version_dir / "model.xml")
    return (1, 3, 8, 8)


def resnet(version_dir: Path) -> tuple[int, ...]:
    from image_throughput import resnet50

    raw = version_dir.parent.parent / "raw"
    resnet50(raw)
    model = ov.Core().read_model(raw / "model.xml")
    model.reshape([1, 3, 224, 224])  # a static batch, as exported models often have
    version_dir.mkdir(parents=True)
    ov.save_model(model, version_dir / "model.xml")
    return (1, 3, 224, 224)


def measure(name: str, make, rounds: int) -> None:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        shape = make(Path(tmp) / "m" / "1")
        server = DropinServer(["--model_name", "m", "--model_path", str(Path(tmp) / "m"), "--batch_size", "auto",
                               "--file_system_poll_wait_seconds", "0"])
        try:
            server.wait_for("m", 1, timeout=300)
            client = server.client
            inputs = {b: np.random.default_rng(b).uniform(0, 1, (b, *shape[1:])).astype(np.float32) for b in (1, 2)}

            def timed(batch: int) -> float:
                started = time.perf_counter()
                client.predict("m", {"x" if name == "small" else "image": inputs[batch]}, timeout=300)
                return (time.perf_counter() - started) * 1000

            fits, reloads, during = [], [], []
            key = "x" if name == "small" else "image"
            for _ in range(rounds):
                timed(1)
                fits.extend(timed(1) for _ in range(5))
                started = time.perf_counter()
                future = client.predict_future("m", {key: inputs[2]}, timeout=300)
                while not future.done():  # batch-1 requests answered by the old servable meanwhile
                    during.append(timed(1))
                future.result()
                reloads.append((time.perf_counter() - started) * 1000)
                timed(1)  # and back: reloaded with batch 1 (not counted)
            print(f"{name}: fitting request p50 {statistics.median(fits):.1f} ms; request that reloads p50 "
                  f"{statistics.median(reloads):.0f} ms (min {min(reloads):.0f}, max {max(reloads):.0f}); "
                  f"{len(during)} old-batch requests during the reloads, p50 {statistics.median(during or [0]):.1f} ms")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    measure("small", small, args.rounds)
    measure("resnet50", resnet, args.rounds)


if __name__ == "__main__":
    main()
