#!/usr/bin/env python3
"""Memory under sustained load: does the server's RSS stay bounded over many requests?

Starts `dropin serve` on the bundled models/, sends --requests Predict calls from several client
threads (valid requests, plus a share of invalid ones so that error paths are soaked too), and
prints the server's resident memory after warm-up and at every tenth of the run, with the
growth from warm-up to the end.

    .venv/bin/python benchmarks/soak.py [--requests 100000] [--threads 4]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from dropin._proto.tensorflow_serving.apis import predict_pb2
from dropin.tensor_proto import from_numpy
from dropin.testing.server import DropinServer

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def payloads() -> tuple[bytes, bytes]:
    samples = json.loads((ROOT / "examples" / "digits" / "samples.json").read_text())
    good = predict_pb2.PredictRequest()
    good.model_spec.name = "digits"
    good.inputs["image"].CopyFrom(from_numpy(np.array([s["pixels"] for s in samples], np.float32)[..., None]))
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = "digits"
    bad.inputs["image"].CopyFrom(from_numpy(np.ones((1, 64), np.float32)))  # wrong rank
    return good.SerializeToString(), bad.SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=4)
    options = parser.parse_args()
    server = DropinServer(
        ["--config_path", str(ROOT / "models" / "config.json"), "--file_system_poll_wait_seconds", "0"]
    )
    server.wait_for("digits", 1)
    proc = server.proc
    good, bad = payloads()
    predict = server.channel.unary_unary("/tensorflow.serving.PredictionService/Predict")

    counter = {"sent": 0, "ok": 0, "invalid": 0, "other": 0}
    lock = threading.Lock()
    per_thread = options.requests // options.threads

    def client(seed: int) -> None:
        for i in range(per_thread):
            invalid = (i + seed) % 10 == 0
            try:
                predict(bad if invalid else good, timeout=30)
                outcome = "ok"
            except grpc.RpcError as exc:
                outcome = "invalid" if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else "other"
            with lock:
                counter["sent"] += 1
                counter[outcome] += 1

    warmup = threading.Thread(target=lambda: [predict(good) for _ in range(2000)])
    warmup.start()
    warmup.join()
    baseline = rss_mib(proc.pid)
    print(f"RSS after 2000 warm-up requests: {baseline:.1f} MiB")
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(options.threads)]
    for t in threads:
        t.start()
    total = per_thread * options.threads
    next_mark = total // 10
    samples = []
    while any(t.is_alive() for t in threads):
        time.sleep(0.2)
        if counter["sent"] >= next_mark:
            samples.append((counter["sent"], rss_mib(proc.pid)))
            print(f"{counter['sent']:>8} requests  RSS {samples[-1][1]:.1f} MiB")
            next_mark += total // 10
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    final = rss_mib(proc.pid)
    server.stop()
    print(
        f"{counter['sent']} requests in {elapsed:.0f} s ({counter['sent'] / elapsed:.0f}/s): "
        f"{counter['ok']} ok, {counter['invalid']} invalid (expected), {counter['other']} other errors"
    )
    print(f"RSS growth from warm-up to end: {final - baseline:+.1f} MiB ({baseline:.1f} -> {final:.1f} MiB)")


if __name__ == "__main__":
    main()
