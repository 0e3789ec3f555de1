#!/usr/bin/env python3
"""How long after a version directory is added or removed does GetModelStatus show it?

Adds: over repeated swaps (latest:1 policy, each new version renamed into the repository), the
time from the rename to AVAILABLE minus the model's own load time (taken from the server's log
line "AVAILABLE ... in N ms"). Removals: a version served next to others (all policy) is renamed
out of the base path, or deleted with `rm -r`; the time until GetModelStatus shows it END.
Prints p50 and max for:

- dropin as it runs by default: file-system events, with a rescan every second as a safety net;
- a 1-second polling loop, what OVMS and TF Serving do by default (dropin with events off,
  no settle wait, rescans every second).

    .venv/bin/python benchmarks/swap_latency.py [--swaps 20]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off; first)

# isort: split
import grpc
import numpy as np
import openvino as ov
import openvino.opset13 as ops

from dropin.testing.server import DropinServer

AVAILABLE, END = 30, 50


def build_model(directory: Path, factor: float) -> None:
    x = ops.parameter([-1, 16], ov.Type.f32, name="x")
    y = ops.multiply(x, ops.constant(np.float32(factor)))
    directory.mkdir(parents=True)
    ov.save_model(ov.Model([y], [x], "m"), str(directory / "model.xml"))


def in_state(server: DropinServer, version: int, state: int) -> bool:
    try:
        status = server.status("m", version)
    except grpc.RpcError:
        return False
    return status.model_version_status[0].state == state


def available(server: DropinServer, version: int) -> bool:
    return in_state(server, version, AVAILABLE)


def load_ms(server: DropinServer, version: int) -> float:
    return float(server.wait_for_log(rf"model m version {version}: AVAILABLE .* in (\d+) ms", timeout=5).group(1))


def measure(args: list[str], swaps: int, label: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        repo, staging = Path(tmp) / "m", Path(tmp) / "staging"
        repo.mkdir()
        build_model(repo / "1", 1.0)
        server = DropinServer(["--model_name", "m", "--model_path", str(repo), *args])
        server.wait_for("m", 1)
        delays = []
        rng = random.Random(0)
        try:
            for version in range(2, swaps + 2):
                build_model(staging / str(version), float(version))
                # let the previous retirement finish, and land at random points of the polling cycle
                time.sleep(0.3 + rng.random())
                start = time.perf_counter()
                os.rename(staging / str(version), repo / str(version))
                while not available(server, version):
                    time.sleep(0.0005)
                elapsed_ms = (time.perf_counter() - start) * 1000
                delays.append(elapsed_ms - load_ms(server, version))
        finally:
            server.stop()
    report(label, delays)
    return delays


def report(label: str, delays: list[float]) -> None:
    print(f"{label:44}{statistics.median(delays):>10.1f}{max(delays):>10.1f}")


def measure_removals(args: list[str], removals: int, label: str) -> dict[str, list[float]]:
    """Version 1 stays; versions 2, 3, ... are added, then renamed out or deleted in turn."""
    delays: dict[str, list[float]] = {"renamed out": [], "rm -r": []}
    with tempfile.TemporaryDirectory() as tmp:
        repo, staging, gone = Path(tmp) / "m", Path(tmp) / "staging", Path(tmp) / "gone"
        repo.mkdir()
        gone.mkdir()
        build_model(repo / "1", 1.0)
        server = DropinServer(
            ["--model_name", "m", "--model_path", str(repo), "--model_version_policy", '{"all":{}}', *args]
        )
        server.wait_for("m", 1)
        rng = random.Random(0)
        try:
            for version in range(2, removals + 2):
                build_model(staging / str(version), float(version))
                os.rename(staging / str(version), repo / str(version))
                server.wait_for("m", version)
                how = "renamed out" if version % 2 == 0 else "rm -r"
                time.sleep(0.3 + rng.random())  # land at random points of the polling cycle
                start = time.perf_counter()
                if how == "renamed out":
                    os.rename(repo / str(version), gone / str(version))
                else:
                    shutil.rmtree(repo / str(version))
                while not in_state(server, version, END):
                    time.sleep(0.0005)
                delays[how].append((time.perf_counter() - start) * 1000)
        finally:
            server.stop()
    for how, values in delays.items():
        report(f"{label}, {how}", values)
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
        max(options.swaps // 2, 5),
        "1 s polling loop (OVMS / TF Serving default)",
    )
    print(f"p50 ratio polling / events: {statistics.median(polling) / statistics.median(events):.1f}x")
    print(f"\nremoval -> END, {options.swaps} removals each (ms)")
    print(f"{'':44}{'p50':>10}{'max':>10}")
    measure_removals([], options.swaps, "dropin")
    measure_removals(
        ["--file_system_watch", "off", "--version_settle_seconds", "0", "--file_system_poll_wait_seconds", "1"],
        max(options.swaps // 2, 5),
        "1 s polling loop",
    )


if __name__ == "__main__":
    main()
