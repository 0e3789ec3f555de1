"""Start-up time saved by --cache_dir (OpenVINO's model cache) on ResNet-50.

Each start is a fresh `dropin serve` process, timed from its launch to the version AVAILABLE
(so the Python start-up and the imports are in every number): without a cache, with an empty
cache directory (cold: the first load compiles and writes the cache) and with the cache the cold
start wrote (warm: the load imports the compiled blob instead of compiling).

    .venv/bin/python benchmarks/cache_startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from image_throughput import resnet50

import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off; first)
from dropin.testing.server import DropinServer


def start_seconds(repo: Path, *flags: str) -> float:
    started = time.monotonic()
    server = DropinServer(["--model_name", "resnet", "--model_path", str(repo),
                           "--file_system_poll_wait_seconds", "0", *flags], start_timeout=300)
    try:
        server.wait_for("resnet", 1, timeout=300)
        return time.monotonic() - started
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "resnet"
        params = resnet50(repo / "1")
        cache = Path(tmp) / "cache"
        plain, cold, warm = [], [], []
        for _ in range(args.runs):
            plain.append(start_seconds(repo))
            shutil.rmtree(cache, ignore_errors=True)
            cold.append(start_seconds(repo, "--cache_dir", str(cache)))
            warm.append(start_seconds(repo, "--cache_dir", str(cache)))
        size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file())
    print(f"ResNet-50 ({params / 1e6:.1f} M parameters), median of {args.runs} fresh processes, launch to AVAILABLE:")
    print(f"  no cache          {statistics.median(plain):6.2f} s")
    print(f"  --cache_dir cold  {statistics.median(cold):6.2f} s  (compiles, writes {size / 2**20:.0f} MiB)")
    print(f"  --cache_dir warm  {statistics.median(warm):6.2f} s  "
          f"({statistics.median(plain) / statistics.median(warm):.2f}x faster than no cache)")


if __name__ == "__main__":
    main()
