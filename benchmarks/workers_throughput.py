#!/usr/bin/env python3
"""`dropin serve --workers N` against one process: the 1x10 model's served req/s at a given
concurrency, with serving_overhead.py's load generator (client processes, one connection each:
use several, the kernel spreads connections, not requests, over the workers). Runs alternate
between the worker counts, so that drift on a shared machine hits every count alike.

    .venv/bin/python benchmarks/workers_throughput.py [--workers 1 2] [--processes 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_overhead import LoadGenerator, request_bytes, tiny_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--processes", type=int, default=4, help="client processes (= connections)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import numpy as np

    import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)
    from dropin.testing.server import DropinServer

    gen = LoadGenerator(args.processes)
    rates: dict[int, list[float]] = {n: [] for n in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        tiny_model(repo / "tiny" / "1")
        config = repo / "config.json"
        config.write_text(
            json.dumps({"model_config_list": [{"config": {"name": "tiny", "base_path": str(repo / "tiny")}}]})
        )
        payload = request_bytes("tiny", "x", np.random.default_rng(0).random((1, 10), dtype=np.float32))
        for _ in range(args.rounds):
            for workers in args.workers:
                server = DropinServer(
                    ["--config_path", str(config), "--file_system_poll_wait_seconds", "0", "--workers", str(workers)]
                )
                try:
                    server.wait_for_log("server ready", timeout=300)
                    gen.rate(server.port, payload, args.concurrency, 1.0)  # warm up
                    rates[workers].append(gen.rate(server.port, payload, args.concurrency, args.seconds))
                finally:
                    server.stop()
    gen.close()
    print(f"1x10 model, concurrency {args.concurrency}, {args.processes} client processes, {args.seconds:g} s per run")
    for workers, values in rates.items():
        print(f"--workers {workers}: " + ", ".join(f"{v:.0f}" for v in values) + " req/s")


if __name__ == "__main__":
    main()
