#!/usr/bin/env python3
"""A/B of gRPC front ends on the 1x10 model, phases alternating in one run (this shared machine
drifts between minutes, so only side-by-side figures from the same run compare).

Every server runs the same model with serving_overhead.py's load generator (clients pinned to the
last core, servers not pinned) at concurrency 16 and at concurrency 1; a server is a label and a
`dropin serve` variant: extra arguments, and optionally another source tree for dropin (`--tree
LABEL=DIR`: DIR/core and DIR/plugins/openvino_backend come first on PYTHONPATH, e.g. an export of
main). It prints req/s, p50, the server process's CPU per request (every thread) and, at
concurrency 1, the p50 added to the thread-pool echo of the same bytes.

`--rest` measures dropin's REST port instead (`{"instances": [[...10 floats...]]}` to `:predict`,
rest_overhead.py's aiohttp clients), against the bare aiohttp echo of the same body and, with
`--minimal`, the minimal REST server; each round starts with the next server, so that no server
always follows the same one. The echo's rate is bound by the clients, so the CPU per request says
more than the rate.

    .venv/bin/python benchmarks/frontend_ab.py --tree main=/tmp/main \\
        --server main= --server threads8=--grpc_max_threads=8 --server threads4=--grpc_max_threads=4
    .venv/bin/python benchmarks/frontend_ab.py --rest --minimal --tree before=/tmp/main --server before= --server after=
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import serving_overhead as so  # noqa: E402


def process_seconds(pid: int) -> float:
    """CPU time (user + system) of every thread of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(config: Path, args: list[str], tree: str | None, rest: bool = False) -> tuple[object, int]:
    """A dropin variant; the process and its gRPC port (`rest`: its REST port)."""
    from dropin.testing.server import DropinServer, free_port

    env = {}
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([f"{tree}/core", f"{tree}/plugins/openvino_backend"])
    rest_args = ["--rest_port", str(free_port())] if rest else []
    server = DropinServer(["--config_path", str(config), "--file_system_poll_wait_seconds", "0", *rest_args, *args],
                          env=env)
    server.wait_for_log("server ready", timeout=300)
    return server.proc, server.rest_port if rest else server.port


def rest_ab(servers: dict[str, tuple[object, int]], gen: so.LoadGenerator, rounds: int, seconds: float,
            latency_requests: int) -> None:
    """`--rest`: every server's REST rate, CPU per request and p50 at concurrency 16 and 1."""
    import rest_overhead

    measured = {label: rest_overhead.RestMeasured() for label in servers}
    cpu = dict.fromkeys(servers, 0.0)
    labels = list(servers)
    for _, port in servers.values():  # warm up
        rest_overhead.RestMeasured().run(gen.pool, gen.processes, port, so.REST_PATH, so.REST_BODY, 16, 1.0)
    for turn in range(rounds):
        for label in labels[turn % len(labels):] + labels[: turn % len(labels)]:
            proc, port = servers[label]
            before = process_seconds(proc.pid)  # type: ignore[attr-defined]
            measured[label].run(gen.pool, gen.processes, port, so.REST_PATH, so.REST_BODY, 16, seconds)
            cpu[label] += process_seconds(proc.pid) - before  # type: ignore[attr-defined]
    c1 = {label: statistics.median(gen.pool.submit(rest_overhead.sequential, port, so.REST_PATH, so.REST_BODY,
                                                   latency_requests).result()) * 1e3
          for label, (_, port) in servers.items()}
    echo = measured["aiohttp echo"]
    print(f"{'server':<18} {'req/s c16':>10} {'/ echo':>7} {'p50 c16':>8} {'CPU us/req':>10} {'p50 c1':>7}",
          f"{'+echo':>7}")
    for label, m in measured.items():
        print(f"{label:<18} {m.rate:>10.0f} {m.rate / echo.rate:>7.3f} {m.p50 * 1e3:>8.3f} "
              f"{cpu[label] / m.requests * 1e6:>10.1f} {c1[label]:>7.3f} {c1[label] - c1['aiohttp echo']:>+7.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", action="append", required=True, metavar="LABEL=ARGS",
                        help="a dropin variant: label=comma-separated serve arguments")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR")
    parser.add_argument("--minimal", action="store_true",
                        help="also measure grpc_floor.py's minimal thread-pool server (the floor to reach)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--latency-requests", type=int, default=2000)
    parser.add_argument("--rest", action="store_true", help="measure the REST port (against an aiohttp echo)")
    args = parser.parse_args()
    trees = dict(item.split("=", 1) for item in args.tree)
    variants = [(label, [a for a in rest.split(",") if a]) for label, rest in (s.split("=", 1) for s in args.server)]
    available = sorted(os.sched_getaffinity(0))
    gen = so.LoadGenerator(2, {available[-1]})
    import numpy as np

    vector = np.random.default_rng(0).random((1, 10), dtype=np.float32)
    payload = so.request_bytes("tiny", "x", vector)
    with tempfile.TemporaryDirectory() as tmp:
        so.tiny_model(Path(tmp) / "tiny" / "1")
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({"model_config_list": [{"config": {"name": "tiny", "base_path": f"{tmp}/tiny"}}]}))
        servers = {label: start(config, extra, trees.get(label), args.rest) for label, extra in variants}
        if args.rest:
            import rest_overhead

            if args.minimal:
                servers["minimal REST"] = rest_overhead.start_minimal(str(Path(tmp) / "tiny" / "1" / "model.xml"))
            servers["aiohttp echo"] = rest_overhead.start_echo()
            try:
                rest_ab(servers, gen, args.rounds, args.seconds, args.latency_requests)
            finally:
                for proc, _ in servers.values():
                    so.stop(proc)  # type: ignore[arg-type]
            gen.close()
            return
        if args.minimal:
            servers["minimal thread-pool"] = so.start_minimal(Path(tmp) / "tiny" / "1" / "model.xml", thread_pool=True)
        echo = so.start_echo("thread")
        servers["thread-pool echo"] = echo
        done = {label: [0.0, 0.0, []] for label in servers}  # requests, cpu seconds, latencies
        try:
            for _ in range(args.rounds):
                for label, (proc, port) in servers.items():
                    before = process_seconds(proc.pid)  # type: ignore[attr-defined]
                    rate = gen.rate(port, payload, 16, args.seconds, timed=True)
                    done[label][0] += rate * args.seconds
                    done[label][1] += process_seconds(proc.pid) - before  # type: ignore[attr-defined]
                    done[label][2] += gen.latencies
            c1 = {label: statistics.median(gen.sequential(port, payload, args.latency_requests, 200)) * 1e3
                  for label, (_, port) in servers.items()}
        finally:
            for proc, _ in servers.values():
                so.stop(proc)  # type: ignore[arg-type]
    gen.close()
    echo_rate = done["thread-pool echo"][0] / (args.rounds * args.seconds)
    print(f"{'server':<18} {'req/s c16':>10} {'/ echo':>7} {'p50 c16':>8} {'CPU us/req':>10} {'p50 c1':>7}",
          f"{'+echo':>7}")
    for label, (requests, cpu, latencies) in done.items():
        rate = requests / (args.rounds * args.seconds)
        print(f"{label:<18} {rate:>10.0f} {rate / echo_rate:>7.3f} {statistics.median(latencies) * 1e3:>8.3f} "
              f"{cpu / requests * 1e6:>10.1f} {c1[label]:>7.3f} {c1[label] - c1['thread-pool echo']:>+7.3f}")


if __name__ == "__main__":
    main()
