#!/usr/bin/env python3
"""What it costs to never read weights from the user's files: load time and memory of a ResNet-50
(25.6 M parameters, a 102 MB model.bin; see image_throughput.py) loaded by the OpenVINO backend:

- mapped: straight from the user's directory, weights memory-mapped (what dropin did before:
  a rewrite or truncation of model.bin changes the served model or kills the server with SIGBUS);
- private copy: what dropin does (dropin/private_copy.py): the version directory is copied into
  a private directory under TMPDIR, loaded from there, and the copy deleted right after the load,
  for every backend;
- in memory: the OpenVINO backend alone reads the weights into memory (`ENABLE_MMAP: false`),
  the alternative that protects only OpenVINO;
- in memory (tensor): `read_model(xml text, ov.Tensor(weights read with numpy))`, the same idea
  done by hand.

Each load runs in a fresh process (the files are in the page cache: warm loads) followed by one
inference, alternating the options for `--rounds` rounds; the medians are printed. Columns:
load ms (until the backend returns, copy included), first inference ms, peak RSS added by load
and inference (VmHWM minus VmRSS before the load), and after them the RSS split in anonymous
memory and file pages, and the bytes of deleted files still mapped (the private copy's space
under TMPDIR, held until the version retires).

    .venv/bin/python benchmarks/weights_loading.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

OPTIONS = ("mapped", "private copy", "in memory", "in memory (tensor)")

CHILD = r"""
import asyncio, json, os, sys, time
from pathlib import Path
import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)
import numpy as np
import openvino as ov
from dropin.backend import LoadOptions
from dropin.private_copy import private_copy
from dropin_openvino.backend import OpenVINOBackend
from dropin_openvino.serving import OpenVINOModel

def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) * 1024
    return fields

def deleted_mapped_bytes():
    total, seen = 0, set()
    for line in open("/proc/self/maps"):
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].strip().endswith("(deleted)") and parts[5] not in seen:
            seen.add(parts[5])
            mapped = f"/proc/self/map_files/{parts[0]}"
            total += os.stat(mapped).st_size if os.path.exists(mapped) else 0
    return total

option, version_dir = sys.argv[1], Path(sys.argv[2])
backend = OpenVINOBackend()
options = LoadOptions(plugin_config={"INFERENCE_PRECISION_HINT": "f32"}, nireq=1)
image = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
before = status()["VmRSS"]
started = time.perf_counter()
if option == "mapped":
    loaded = backend.load(version_dir, options)
elif option == "private copy":
    with private_copy(version_dir) as copy:
        loaded = backend.load(copy, options)
elif option == "in memory":
    in_memory = LoadOptions(plugin_config={**options.plugin_config, "ENABLE_MMAP": False}, nireq=1)
    loaded = backend.load(version_dir, in_memory)
else:
    xml = (version_dir / "model.xml").read_text()
    weights = ov.Tensor(np.fromfile(version_dir / "model.bin", dtype=np.uint8), shared_memory=True)
    model = backend.core.read_model(xml, weights)
    compiled = backend.core.compile_model(model, "CPU", dict(options.plugin_config))
    loaded = OpenVINOModel(model, compiled, 1)
load_ms = (time.perf_counter() - started) * 1000
started = time.perf_counter()
asyncio.run(loaded.infer({"image": image}))
infer_ms = (time.perf_counter() - started) * 1000
after = status()
print(json.dumps({"load_ms": load_ms, "infer_ms": infer_ms, "peak_added": after["VmHWM"] - before,
                  "anon": after["RssAnon"], "file": after["RssFile"], "deleted_mapped": deleted_mapped_bytes()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from image_throughput import resnet50

    with tempfile.TemporaryDirectory() as tmp:
        version_dir = Path(tmp) / "resnet" / "1"
        params = resnet50(version_dir)
        size = (version_dir / "model.bin").stat().st_size
        print(
            f"ResNet-50: {params / 1e6:.1f} M parameters, model.bin {size / 1e6:.0f} MB; {args.rounds} rounds, medians"
        )
        runs: dict[str, list[dict[str, float]]] = {o: [] for o in OPTIONS}
        for _ in range(args.rounds):
            for option in OPTIONS:
                child = subprocess.run(
                    [sys.executable, "-c", CHILD, option, str(version_dir)], capture_output=True, text=True
                )
                if child.returncode != 0:
                    sys.exit(f"{option}: {child.stderr}")
                runs[option].append(json.loads(child.stdout.strip().splitlines()[-1]))
    mb = 1e6
    print(
        f"{'option':<20} {'load ms':>8} {'1st infer ms':>12} {'peak +MB':>9} {'anon MB':>8} {'file MB':>8} "
        f"{'deleted mapped MB':>18}"
    )
    for option, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        print(
            f"{option:<20} {med['load_ms']:>8.0f} {med['infer_ms']:>12.0f} {med['peak_added'] / mb:>9.0f} "
            f"{med['anon'] / mb:>8.0f} {med['file'] / mb:>8.0f} {med['deleted_mapped'] / mb:>18.0f}"
        )


if __name__ == "__main__":
    main()
