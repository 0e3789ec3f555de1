#!/usr/bin/env python3
"""What serving two models as a pipeline costs, from one run.

Builds two OpenVINO models without downloads, a feature extractor (by default a 1x3x224x224 image
-> 1x32x112x112 features: two 3x3 convolutions) and a classifier (features -> 1x10 probabilities: a
convolution, global pooling, a dense layer), and serves them with `dropin serve` (a subprocess, as a user
starts it) with a pipeline that runs one after the other. It prints:

(a) the pipeline's requests/s at concurrency 4 (gRPC clients) divided by the same two models
    called one after the other in-process by 4 threads, which share each model's OpenVINO optimal
    number of infer requests as dropin does (one each for these models on the CPU plugin's
    default latency hint: 4 threads on 4 requests of their own would fight over the cores)
    (goal >= 0.9);
(b) the pipeline's p50 and p99 at concurrency 1 (one synchronous client) next to the sum of the
    two models' in-process p50s (one infer request each, sequential calls), and the difference;
(c) what of that is the pipeline's own: the same two models fused into one OpenVINO model (same
    weights, same request bytes but the name, same response), served as a model, at concurrency 1
    (p50) and 4 (req/s), next to the pipeline.

The conventions of serving_overhead.py, whose load generator it uses: the clients run on cores of
their own (`--client-cores`, default the last core), the server and the in-process reference on the
others; every measure, latencies included, is split into `--rounds` rounds that alternate
(in-process, pipeline, fused model, and again) so that drift on a shared machine hits every side
alike.

    .venv/bin/python benchmarks/pipeline_overhead.py [--seconds 8] [--rounds 4] [--side 224] [--width 32]
        [--client-cores 1]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving_overhead import (  # noqa: E402  (a sibling script, not a package)
    LoadGenerator,
    percentiles,
    pin,
    raise_malloc_thresholds,
    request_bytes,
    split_cores,
    start_dropin,
    stop,
)

CONCURRENCY = 4


def models(repo: Path, side: int, width: int) -> None:
    """features: image [1,3,side,side] -> features [1,width,side/2,side/2] (two 3x3 convolutions, the
    second with stride 2); classify: features -> prob [1,10] (a 3x3 convolution with stride 2 to
    2*width channels, global average pooling, a dense layer, softmax); fused: both in one model,
    image -> prob, the same weights."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    weights = [(rng.standard_normal((cout, cin, 3, 3)) / (3 * cin)).astype(np.float32)
               for cin, cout in ((3, width), (width, width), (width, 2 * width))]
    dense_weights = rng.standard_normal((2 * width, 10)).astype(np.float32)

    def named(node: Any, name: str) -> Any:
        node.output(0).get_tensor().set_names({name})
        return node

    def conv(x: Any, layer: int, stride: int) -> Any:
        conv = ops.convolution(x, ops.constant(weights[layer]), [stride, stride], [1, 1], [1, 1], [1, 1])
        return ops.relu(conv)

    def extract(image: Any) -> Any:
        return conv(conv(image, 0, 1), 1, 2)

    def classify(features: Any) -> Any:
        pooled = ops.reduce_mean(conv(features, 2, 2), ops.constant(np.array([2, 3], np.int64)), keep_dims=False)
        return named(ops.softmax(ops.matmul(pooled, ops.constant(dense_weights), False, False), 1), "prob")

    def image() -> Any:
        return named(ops.parameter([1, 3, side, side], ov.Type.f32, name="image"), "image")

    first = image()
    save(ov.Model([ops.result(named(extract(first), "features"))], [first], "features"), repo / "features" / "1")
    x = named(ops.parameter([1, width, side // 2, side // 2], ov.Type.f32, name="features"), "features")
    save(ov.Model([ops.result(classify(x))], [x], "classify"), repo / "classify" / "1")
    whole = image()
    save(ov.Model([ops.result(classify(extract(whole)))], [whole], "fused"), repo / "fused" / "1")


def save(model: Any, version_dir: Path) -> None:
    import openvino as ov

    version_dir.mkdir(parents=True)
    ov.save_model(model, str(version_dir / "model.xml"), compress_to_fp16=False)


def config(repo: Path) -> dict[str, Any]:
    return {
        "model_config_list": [
            {"config": {"name": m, "base_path": str(repo / m)}} for m in ("features", "classify", "fused")
        ],
        "pipeline_config_list": [{
            "name": "two_models",
            "inputs": ["image"],
            "nodes": [
                {"name": "extract", "type": "DL model", "model_name": "features",
                 "inputs": [{"image": {"node_name": "request", "data_item": "image"}}],
                 "outputs": [{"data_item": "features", "alias": "features"}]},
                {"name": "classify", "type": "DL model", "model_name": "classify",
                 "inputs": [{"features": {"node_name": "extract", "data_item": "features"}}],
                 "outputs": [{"data_item": "prob", "alias": "prob"}]},
            ],
            "outputs": [{"prob": {"node_name": "classify", "data_item": "prob"}}],
        }],
    }


class InProcess:
    """The two models compiled in this process as dropin compiles them (CPU, no plugin config),
    called one after the other."""

    def __init__(self, repo: Path, image: Any) -> None:
        import openvino as ov

        core = ov.Core()
        self.first = core.compile_model(str(repo / "features" / "1" / "model.xml"), "CPU")
        self.second = core.compile_model(str(repo / "classify" / "1" / "model.xml"), "CPU")
        self.image = image
        self.first_pool, self.second_pool = self._pool(self.first), self._pool(self.second)
        self.rate(0.5)  # warm up

    @staticmethod
    def _pool(compiled: Any) -> queue.SimpleQueue:
        pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))):
            pool.put(compiled.create_infer_request())
        return pool

    def _chain(self, stop_at: float, counts: list[int], index: int) -> None:
        while time.monotonic() < stop_at:
            features = self._infer(self.first_pool, {0: self.image})
            self._infer(self.second_pool, {0: features})
            counts[index] += 1

    @staticmethod
    def _infer(pool: queue.SimpleQueue, feed: dict[int, Any]) -> Any:
        request = pool.get()  # waits for an idle one
        try:
            return request.infer(feed)[0]
        finally:
            pool.put(request)

    def rate(self, seconds: float) -> float:
        """Chains per second with CONCURRENCY threads chaining at once (OpenVINO releases the GIL),
        sharing each model's OpenVINO optimal number of infer requests, as dropin does."""
        counts = [0] * CONCURRENCY
        started = time.monotonic()
        threads = [threading.Thread(target=self._chain, args=(started + seconds, counts, i))
                   for i in range(CONCURRENCY)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.monotonic() - started)

    def latencies(self, n: int) -> tuple[list[float], list[float]]:
        """Each model's sequential synchronous infer() times, on one infer request each."""
        first, second = self.first.create_infer_request(), self.second.create_infer_request()
        features = first.infer({0: self.image})[0].copy()
        times: tuple[list[float], list[float]] = ([], [])
        for request, feed, out in ((first, {0: self.image}, times[0]), (second, {0: features}, times[1])):
            for _ in range(min(n // 10, 50) + 1):
                request.infer(feed)
            for _ in range(n):
                start = time.perf_counter()
                request.infer(feed)
                out.append(time.perf_counter() - start)
        return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput measure")
    parser.add_argument("--rounds", type=int, default=4,
                        help="alternating rounds each throughput measure is split into (drift hits all sides alike)")
    parser.add_argument("--processes", type=int, default=2, help="client processes of the load generator")
    parser.add_argument("--latency-requests", type=int, default=500, help="requests at concurrency 1")
    parser.add_argument("--side", type=int, default=224, help="the image's height and width")
    parser.add_argument("--width", type=int, default=32, help="channels of the features between the models")
    available = sorted(os.sched_getaffinity(0))
    parser.add_argument("--client-cores", default=str(available[-1]),
                        help="comma-separated cores of the clients; the server gets the others (default: the last)")
    args = parser.parse_args()
    client_cores, server_cores = split_cores(args.client_cores)
    pin(server_cores)
    print(f"clients on cores {sorted(client_cores)}, server and in-process reference on {sorted(server_cores)}",
          flush=True)

    import numpy as np

    import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)

    raise_malloc_thresholds()
    began = time.monotonic()
    image = np.random.default_rng(1).random((1, 3, args.side, args.side), dtype=np.float32)
    gen = LoadGenerator(args.processes, client_cores)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        models(repo, args.side, args.width)
        (repo / "config.json").write_text(json.dumps(config(repo)))
        payload = request_bytes("two_models", "image", image)
        proc, port, _ = start_dropin(repo / "config.json")
        try:
            direct = InProcess(repo, image)
            alone = request_bytes("fused", "image", image)
            for p in (payload, alone):
                gen.sequential(port, p, 0, 50)  # warm up
                gen.rate(port, p, CONCURRENCY, 1.0)
            # every measure is split into rounds that alternate, so that drift hits every side alike
            n = max(args.latency_requests // args.rounds, 1)
            part = args.seconds / args.rounds
            first_times: list[float] = []
            second_times: list[float] = []
            served_times: list[float] = []
            alone_times: list[float] = []
            direct_rate = served_rate = alone_rate = 0.0
            for _ in range(args.rounds):
                first, second = direct.latencies(n)
                first_times += first
                second_times += second
                served_times += gen.sequential(port, payload, n, 5)
                alone_times += gen.sequential(port, alone, n, 5)
                direct_rate += direct.rate(part) / args.rounds
                served_rate += gen.rate(port, payload, CONCURRENCY, part) / args.rounds
                alone_rate += gen.rate(port, alone, CONCURRENCY, part) / args.rounds
        finally:
            stop(proc)
    gen.close()

    ms = lambda s: f"{s * 1e3:.3f}"  # noqa: E731
    first_p50, _ = percentiles(first_times)
    second_p50, _ = percentiles(second_times)
    served_p50, served_p99 = percentiles(served_times)
    alone_p50, alone_p99 = percentiles(alone_times)
    ratio = served_rate / direct_rate
    lines = [
        f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} at the end), {args.processes} client "
        f"processes, {args.seconds:g} s per throughput measure ({args.rounds} alternating rounds); request "
        f"{len(payload)} B; whole run {time.monotonic() - began:.0f} s",
        "",
        f"models: features [1,3,{args.side},{args.side}] -> [1,{args.width},{args.side // 2},{args.side // 2}], "
        f"classify -> [1,10]",
        "",
        "| measure | pipeline (dropin) | reference | ratio / difference |",
        "|---|---|---|---|",
        f"| (a) req/s, concurrency {CONCURRENCY} | {served_rate:.1f} | {direct_rate:.1f} "
        f"(one after the other, {CONCURRENCY} threads) | **{ratio:.3f}** (goal >= 0.9) |",
        f"| (b) p50 ms, concurrency 1 | {ms(served_p50)} (p99 {ms(served_p99)}) | "
        f"{ms(first_p50 + second_p50)} ({ms(first_p50)} + {ms(second_p50)}) | "
        f"+{ms(served_p50 - first_p50 - second_p50)} ms |",
        f"| (c) p50 ms, concurrency 1 | {ms(served_p50)} | {ms(alone_p50)} (p99 {ms(alone_p99)}; the two models "
        f"fused into one, served) | +{ms(served_p50 - alone_p50)} ms: the pipeline's own |",
        f"| (c) req/s, concurrency {CONCURRENCY} | {served_rate:.1f} | {alone_rate:.1f} (the fused model, served) | "
        f"{served_rate / alone_rate:.3f} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
