#!/usr/bin/env python3
"""Dynamic batching off vs on, from one run: req/s and p50 / p99 latency at concurrency 16.

Builds two models with a dynamic batch dim (no downloads): a small one (x [-1,10] -> x * 2 + 1)
and a mid-sized one (three dense layers, [-1,512] -> 2048 -> 2048 -> 512). One `dropin serve`
(started as a user starts it, through the test kit) serves each model twice: as is, and with
`dynamic_batching` ({"max_batch_size": 16, "batch_timeout_micros": 500} unless told otherwise).
The load generator is serving_overhead.py's: client processes send one pre-serialized request
(bytes, no serializer) with `concurrency / processes` grpc.aio calls in flight each; here every
call is also timed. Phases alternate (off, on, off, on) so that drift on a shared machine hits
both sides alike.

    .venv/bin/python benchmarks/dynamic_batching.py [--seconds 6] [--max-batch-size 16] [--timeout-micros 500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving_overhead import (  # noqa: E402  (a sibling script)
    LoadGenerator,
    percentiles,
    raise_malloc_thresholds,
    request_bytes,
)


def small_model(path: Path) -> None:
    """x [-1,10] f32 -> y = x * 2 + 1."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter(ov.PartialShape([-1, 10]), ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.add(ops.multiply(x, ops.constant(np.float32(2))), ops.constant(np.float32(1)))
    y.output(0).get_tensor().set_names({"y"})
    path.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([ops.result(y)], [x], "small"), str(path / "model.xml"), compress_to_fp16=False)


def dense_model(path: Path, sizes: tuple[int, ...] = (512, 2048, 2048, 512)) -> None:
    """x [-1,sizes[0]] f32 -> dense layers (ReLU between them) -> y [-1,sizes[-1]]."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    x = ops.parameter(ov.PartialShape([-1, sizes[0]]), ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    node = x
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weights = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        node = ops.add(ops.matmul(node, ops.constant(weights), False, False), ops.constant(np.zeros(n_out, np.float32)))
        if i < len(sizes) - 2:
            node = ops.relu(node)
    node.output(0).get_tensor().set_names({"y"})
    path.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([ops.result(node)], [x], "dense"), str(path / "model.xml"), compress_to_fp16=False)


def batch_sizes(rest_port: int) -> dict[str, tuple[float, float]]:
    """dropin_batch_size per model name: (sum of rows, number of inferences) so far."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    body = urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=10).read().decode()
    sizes: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name in ("dropin_batch_size_sum", "dropin_batch_size_count"):
                sizes.setdefault(sample.labels["name"], [0.0, 0.0])[sample.name.endswith("_count")] += sample.value
    return {name: (total, count) for name, (total, count) in sizes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each measure (two alternating halves)")
    parser.add_argument("--processes", type=int, default=2, help="client processes of the load generator")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--timeout-micros", type=int, default=500)
    args = parser.parse_args()

    import numpy as np

    import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)

    raise_malloc_thresholds()
    began = time.monotonic()
    rng = np.random.default_rng(0)
    batching = {"max_batch_size": args.max_batch_size, "batch_timeout_micros": args.timeout_micros}
    cases = {"small [1,10]": ("small", rng.random((1, 10), dtype=np.float32)),
             "dense 512-2048-2048-512": ("dense", rng.random((1, 512), dtype=np.float32))}
    load = LoadGenerator(args.processes)
    results: dict[str, dict[str, tuple[float, list[float]]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        small_model(repo / "small" / "1")
        dense_model(repo / "dense" / "1")
        entries = []
        for name in ("small", "dense"):
            entries.append({"config": {"name": f"{name}_off", "base_path": str(repo / name)}})
            entries.append(
                {"config": {"name": f"{name}_on", "base_path": str(repo / name), "dynamic_batching": batching}}
            )
        config = repo / "config.json"
        config.write_text(json.dumps({"model_config_list": entries}))
        from dropin.testing.server import DropinServer, free_port

        server = DropinServer(
            [
                "--config_path",
                str(config),
                "--file_system_poll_wait_seconds",
                "0",
                "--rest_port",
                str(free_port()),
                "--metrics_enable",
            ]
        )
        server.wait_for_log("server ready", timeout=300)
        port = server.port
        mean_batch: dict[str, float] = {}
        try:
            for label, (name, array) in cases.items():
                payloads = {mode: request_bytes(f"{name}_{mode}", "x", array) for mode in ("off", "on")}
                for payload in payloads.values():
                    load.rate(port, payload, args.concurrency, 0.5)  # warm up
                results[label] = {"off": (0.0, []), "on": (0.0, [])}
                before = batch_sizes(server.rest_port).get(f"{name}_on", (0.0, 0.0))
                for _ in range(2):
                    for mode in ("off", "on"):
                        rate = load.rate(port, payloads[mode], args.concurrency, args.seconds / 2, timed=True)
                        times = load.latencies
                        old_rate, old_times = results[label][mode]
                        results[label][mode] = (old_rate + rate / 2, old_times + times)
                after = batch_sizes(server.rest_port)[f"{name}_on"]
                mean_batch[label] = (after[0] - before[0]) / max(after[1] - before[1], 1)
        finally:
            server.stop()
    load.close()

    ms = lambda s: f"{s * 1e3:.2f}"  # noqa: E731
    lines = [
        f"{os.cpu_count()} CPU cores, {args.processes} client processes, concurrency {args.concurrency}, "
        f"{args.seconds:g} s per measure (two alternating halves); dynamic_batching {json.dumps(batching)}; "
        f"whole run {time.monotonic() - began:.0f} s",
        "",
        "| model | batching | req/s | p50 ms | p99 ms | req/s on/off | p50 on/off | p99 on/off | mean batch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, modes in results.items():
        (off_rate, off_times), (on_rate, on_times) = modes["off"], modes["on"]
        off_p, on_p = percentiles(off_times), percentiles(on_times)
        lines.append(f"| {label} | off | {off_rate:.0f} | {ms(off_p[0])} | {ms(off_p[1])} | | | | 1 |")
        lines.append(
            f"| {label} | on | {on_rate:.0f} | {ms(on_p[0])} | {ms(on_p[1])} | **{on_rate / off_rate:.2f}** | "
            f"{on_p[0] / off_p[0]:.2f} | {on_p[1] / off_p[1]:.2f} | {mean_batch[label]:.1f} |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
