#!/usr/bin/env python3
"""Instructions per 1x10 Predict of a whole server process (every thread), under callgrind.

Starts the server under `valgrind --tool=callgrind` (slow: minutes), warms it up, zeroes the
counters (`callgrind_control -z`), sends N requests from 4 client threads, dumps the counters
and prints Ir / N. Unlike times on a shared machine, the count hardly moves between runs.

    python benchmarks/server_instructions.py LABEL TREE KIND [N] [dropin serve args...]

KIND: dropin (TREE/core and TREE/plugins/openvino_backend first on PYTHONPATH, e.g. an export of
main to compare), echo-thread, echo-uvloop, minimal-aio (serving_overhead.py's), minimal-pool (grpc_floor.py's minimal).
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving_overhead as so  # noqa: E402

label, tree, kind = sys.argv[1], sys.argv[2], sys.argv[3]
N = int(sys.argv[4]) if len(sys.argv) > 4 else 2000
workdir = tempfile.mkdtemp()
out = f"{workdir}/{label}.callgrind"
tmp = tempfile.mkdtemp()
so.tiny_model(Path(tmp) / "tiny" / "1")
config = Path(tmp) / "config.json"
config.write_text(json.dumps({"model_config_list": [{"config": {"name": "tiny", "base_path": f"{tmp}/tiny"}}]}))
env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": f"{tree}/core:{tree}/plugins/openvino_backend"}
vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
py = sys.executable
if kind == "dropin":
    cmd = [*vg, py, "-m", "dropin", "serve", "--config_path", str(config), "--port", "0",
           "--file_system_poll_wait_seconds", "0", *sys.argv[5:]]
else:
    script, args = {"echo-thread": ("serving_overhead.py", ["--echo-server", "thread"]),
                    "echo-uvloop": ("serving_overhead.py", ["--echo-server", "uvloop"]),
                    "minimal-pool": ("grpc_floor.py", ["--serve", "minimal", f"{tmp}/tiny/1/model.xml",
                                                       str(so.MINIMAL_THREADS)]),
                    "minimal-aio": ("serving_overhead.py", ["--minimal-server", f"{tmp}/tiny/1/model.xml"])}[kind]
    cmd = [*vg, py, str(HERE / script), *args]
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
assert proc.stdout is not None and proc.stderr is not None
port = 0
if kind == "dropin":
    for line in proc.stderr:
        m = re.search(r"gRPC server listening on .*:(\d+)$", line.strip())
        if m:
            port = int(m.group(1))
        if "server ready" in line:
            break
else:
    port = int(proc.stdout.readline())
payload = so.request_bytes("tiny", "x", np.random.default_rng(0).random((1, 10), dtype=np.float32))
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
call = ch.unary_unary(so.PREDICT)
for _ in range(300):
    call(payload, timeout=600)


def batch(n: int) -> None:
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: call(payload, timeout=600), range(n)))


batch(200)
subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
batch(N)
subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
time.sleep(1)
proc.terminate()
proc.wait(60)
total = 0
for line in Path(sorted(glob.glob(out + ".*"))[0]).read_text().splitlines():
    if line.startswith(("summary:", "totals:")):
        total = int(line.split()[1])
        break
print(f"{label} ({kind}): {total / N:,.0f} instructions per request ({N} requests, every thread)")
