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
(a) also the bound the transport puts on (a): grpc_floor.py's "parse" server (it only receives and
    parses the same request bytes and answers a response of the same shape) at concurrency 4, its
    CPU per request F; with one server core, the in-process chain's time per request t and
    F add up, so no Python gRPC server exceeds t / (t + F); printed with (a) / that bound;
(b) the pipeline's p50 and p99 at concurrency 1 (one synchronous client) next to the sum of the
    two models' in-process p50s (one infer request each, sequential calls), and the difference;
(c) what of that is the pipeline's own: the same two models fused into one OpenVINO model (same
    weights, same request bytes but the name, same response) served as a model, and run in-process
    as the chain is. OpenVINO infers the fused model faster than the two in turn (it keeps the
    intermediate in cache), so the pipeline is compared with the fused model on what serving adds
    to each one's own in-process run: served / in-process, the time per request serving adds at
    concurrency 4, the p50 it adds at concurrency 1; the difference is the pipeline's own cost.

The conventions of serving_overhead.py, whose load generator it uses: the clients run on cores of
their own (`--client-cores`, default the last core), the server and the in-process reference on the
others; every measure, latencies included, is split into `--rounds` rounds that alternate
(in-process, pipeline, fused model, floor, and again) so that drift on a shared machine hits every
side alike. On a 2-core machine the server has one core (the bound assumes it): its CPU per request
is its time per request.

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

from grpc_floor import start_step  # noqa: E402  (sibling scripts, not a package)
from serving_overhead import (  # noqa: E402
    LoadGenerator,
    Measured,
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
    """Models compiled in this process as dropin compiles them (CPU, no plugin config), called one
    after the other, each on the previous one's output (the fused model: a chain of one)."""

    def __init__(self, model_xmls: list[Path], image: Any) -> None:
        import openvino as ov

        core = ov.Core()
        self.models = [core.compile_model(str(xml), "CPU") for xml in model_xmls]
        self.image = image
        self.pools = [self._pool(compiled) for compiled in self.models]
        self.rate(0.5)  # warm up

    @staticmethod
    def _pool(compiled: Any) -> queue.SimpleQueue:
        pool: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))):
            pool.put(compiled.create_infer_request())
        return pool

    def _chain(self, stop_at: float, counts: list[int], index: int) -> None:
        while time.monotonic() < stop_at:
            data = self.image
            for pool in self.pools:
                data = self._infer(pool, {0: data})
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

    def latencies(self, n: int) -> list[list[float]]:
        """Each model's sequential synchronous infer() times, on one infer request each."""
        times: list[list[float]] = []
        data = self.image
        for compiled in self.models:
            request, feed = compiled.create_infer_request(), {0: data}
            data = request.infer(feed)[0].copy()
            out: list[float] = []
            times.append(out)
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
        alone = request_bytes("fused", "image", image)
        xml = {name: repo / name / "1" / "model.xml" for name in ("features", "classify", "fused")}
        proc, port, _ = start_dropin(repo / "config.json")
        # the fused model has the pipeline's input and output: the parse server answers its shape
        floor_proc, floor_port = start_step("parse", xml["fused"], CONCURRENCY)
        try:
            direct = InProcess([xml["features"], xml["classify"]], image)
            fused = InProcess([xml["fused"]], image)
            for p in (payload, alone):
                gen.sequential(port, p, 0, 50)  # warm up
                gen.rate(port, p, CONCURRENCY, 1.0)
            gen.rate(floor_port, payload, CONCURRENCY, 1.0)
            # every measure is split into rounds that alternate, so that drift hits every side alike
            n = max(args.latency_requests // args.rounds, 1)
            part = args.seconds / args.rounds
            chain_times: list[list[float]] = [[], []]
            fused_times: list[float] = []
            served_times: list[float] = []
            alone_times: list[float] = []
            direct_rate = fused_rate = 0.0
            served, alone_served, floor = Measured(proc.pid), Measured(proc.pid), Measured(floor_proc.pid)
            for _ in range(args.rounds):
                for times, more in zip(chain_times, direct.latencies(n), strict=True):
                    times += more
                fused_times += fused.latencies(n)[0]
                served_times += gen.sequential(port, payload, n, 5)
                alone_times += gen.sequential(port, alone, n, 5)
                direct_rate += direct.rate(part) / args.rounds
                served.run(gen, port, payload, CONCURRENCY, part)
                alone_served.run(gen, port, alone, CONCURRENCY, part)
                fused_rate += fused.rate(part) / args.rounds
                floor.run(gen, floor_port, payload, CONCURRENCY, part)
        finally:
            stop(floor_proc)
            stop(proc)
    gen.close()

    ms = lambda s: f"{s * 1e3:.3f}"  # noqa: E731
    diff = lambda s: f"{s * 1e3:+.3f} ms"  # noqa: E731
    us = lambda s: f"{s * 1e6:+.0f} us"  # noqa: E731
    first_p50, second_p50 = (percentiles(times)[0] for times in chain_times)
    fused_p50, _ = percentiles(fused_times)
    served_p50, served_p99 = percentiles(served_times)
    alone_p50, alone_p99 = percentiles(alone_times)
    ratio = served.rate / direct_rate
    # one server core: per request, the chain's time and the floor's CPU add up
    chain, fused_time, floor_time = 1 / direct_rate, 1 / fused_rate, floor.cpu_us * 1e-6
    bound = chain / (chain + floor_time)
    fused_bound = fused_time / (fused_time + floor_time)
    added, alone_added = 1 / served.rate - chain, 1 / alone_served.rate - fused_time
    cpu_added, alone_cpu_added = served.cpu_us * 1e-6 - chain, alone_served.cpu_us * 1e-6 - fused_time
    chain_p50, served_added = first_p50 + second_p50, served_p50 - first_p50 - second_p50
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
        f"| (a) req/s, concurrency {CONCURRENCY} | {served.rate:.1f} | {direct_rate:.1f} "
        f"(one after the other, {CONCURRENCY} threads) | **{ratio:.3f}** (goal >= 0.9) |",
        f"| (a) the transport's bound | floor: {floor.cpu_us:.0f} us CPU per request ({floor.rate:.1f} req/s; "
        f"grpc_floor.py parse server, same bytes, concurrency {CONCURRENCY}) | {chain * 1e6:.0f} us per chain "
        f"in-process | bound t / (t + floor) **{bound:.3f}**; (a) / bound **{ratio / bound:.3f}** |",
        f"| (b) p50 ms, concurrency 1 | {ms(served_p50)} (p99 {ms(served_p99)}) | "
        f"{ms(chain_p50)} ({ms(first_p50)} + {ms(second_p50)}) | {diff(served_added)} |",
        "",
        "(c) against the two models fused into one OpenVINO model (same weights, same request bytes but the name, "
        "same response), each side against its own in-process run; the last column is the pipeline's own cost:",
        "",
        "| measure | pipeline | fused model | pipeline - fused |",
        "|---|---|---|---|",
        f"| in-process req/s, concurrency {CONCURRENCY} ({CONCURRENCY} threads) | {direct_rate:.1f} "
        f"({chain * 1e6:.0f} us each) | {fused_rate:.1f} ({fused_time * 1e6:.0f} us each) | "
        f"{us(chain - fused_time)} (OpenVINO's, not the pipeline's) |",
        f"| served req/s, concurrency {CONCURRENCY} | {served.rate:.1f} | {alone_served.rate:.1f} | |",
        f"| served / in-process | **{ratio:.3f}** | **{alone_served.rate / fused_rate:.3f}** | |",
        f"| served / the transport's bound t / (t + floor) | {ratio / bound:.3f} (bound {bound:.3f}) | "
        f"{alone_served.rate / fused_rate / fused_bound:.3f} (bound {fused_bound:.3f}) | |",
        f"| time per request serving adds at concurrency {CONCURRENCY} (1 / served - 1 / in-process) | {us(added)} | "
        f"{us(alone_added)} | **{us(added - alone_added)}** |",
        f"| server CPU per request at concurrency {CONCURRENCY} (minus the in-process time) | {served.cpu_us:.0f} us "
        f"({us(cpu_added)}) | {alone_served.cpu_us:.0f} us ({us(alone_cpu_added)}) | "
        f"{us(cpu_added - alone_cpu_added)} |",
        f"| p50 ms, concurrency 1: served (in-process) | {ms(served_p50)} ({ms(chain_p50)}) | "
        f"{ms(alone_p50)} (p99 {ms(alone_p99)}; {ms(fused_p50)}) | |",
        f"| p50 serving adds at concurrency 1 | {diff(served_added)} | {diff(alone_p50 - fused_p50)} | "
        f"**{diff(served_added - (alone_p50 - fused_p50))}** |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
