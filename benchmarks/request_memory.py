#!/usr/bin/env python3
"""Peak memory of a dropin server answering one request, against what the client sent.

Builds a model with dynamic dims (x [-1,-1] f32 -> y = x + 1, total = sum over dim 1; no
downloads) and, for each case, starts a fresh `dropin serve` through the test kit, sends one
request and reads the server's VmRSS before, VmHWM (peak RSS) after, and VmRSS again 2 s later (what
it did not give back), from /proc:

- REST :predict bodies of three shapes (floats `0.1234`; small integers `1`; one-element rows
  `[1]`, a list object per number) of `--rest-mib` MiB each, with the body limit raised to fit;
- gRPC Predict with one `float_val` filling the shape `[rows, 10]`, for each of `--fill-rows`.

    .venv/bin/python benchmarks/request_memory.py [--rest-mib 8,32,64] [--fill-rows 10000000,1099511627776]
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
import time
from pathlib import Path

MIB = 1 << 20


def model(version_dir: Path) -> None:
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter(ov.PartialShape([-1, -1]), ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.add(x, ops.constant(np.float32(1.0)))
    y.output(0).get_tensor().set_names({"y"})
    total = ops.reduce_sum(x, ops.constant(np.array([1], dtype=np.int64)), keep_dims=False)
    total.output(0).get_tensor().set_names({"total"})
    version_dir.mkdir(parents=True)
    ov.save_model(
        ov.Model([ops.result(y, name="y"), ops.result(total, name="total")], [x], "m"), str(version_dir / "model.xml")
    )


def memory(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _held(pid: int, before: int) -> int:
    """RSS above `before` once the answer is out and the server idle again (memory not returned)."""
    time.sleep(2)
    return memory(pid, "VmRSS:") - before


def rest_body(kind: str, size: int) -> bytes:
    row = {
        "floats": "[" + ",".join(["0.1234"] * 1000) + "]",
        "small ints": "[" + ",".join(["1"] * 1000) + "]",
        "one-element rows": "[1]",
    }[kind]
    return ('{"inputs": {"x": [' + ",".join([row] * max(1, size // (len(row) + 1))) + "]}}").encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rest-mib", default="8,32,64")
    parser.add_argument("--fill-rows", default="10000000,1099511627776")
    args = parser.parse_args()
    from dropin.testing.server import DropinServer, free_port

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "m"
        model(base / "1")

        def start(*extra: str) -> DropinServer:
            srv = DropinServer(
                ["--model_name", "m", "--model_path", str(base), "--file_system_poll_wait_seconds", "0", *extra]
            )
            srv.wait_for("m", 1)
            return srv

        print("| REST body | size | status | peak RSS above idle | per body byte | held 2 s later |")
        print("|---|---|---|---|---|---|")
        for kind in ("floats", "small ints", "one-element rows"):
            for mib in (int(m) for m in args.rest_mib.split(",")):
                body = rest_body(kind, mib * MIB)
                srv = start("--rest_port", str(free_port()), "--rest_max_body_bytes", str(len(body)))
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", srv.rest_port, timeout=600)
                    conn.request("POST", "/v1/models/m:predict", body=b'{"inputs": {"x": [[1.0]]}}')
                    conn.getresponse().read()
                    time.sleep(0.5)
                    before = memory(srv.proc.pid, "VmRSS:")
                    conn.request("POST", "/v1/models/m:predict", body=body)
                    reply = conn.getresponse()
                    reply.read()
                    grown = memory(srv.proc.pid, "VmHWM:") - before
                    held = _held(srv.proc.pid, before)
                    row = f"| {kind} | {len(body) / MIB:.0f} MiB | {reply.status} | {grown / MIB:.0f} MiB"
                    print(f"{row} | {grown / len(body):.1f} | {held / MIB:.0f} MiB |", flush=True)
                    conn.close()
                finally:
                    srv.stop()

        import grpc

        from dropin._proto.tensorflow_serving.apis import predict_pb2

        print(
            "\n| gRPC float_val fill | request | answer | peak RSS above idle | held 2 s later |\n|---|---|---|---|---|"
        )
        for rows in (int(r) for r in args.fill_rows.split(",")):
            srv = start()
            try:
                request = predict_pb2.PredictRequest()
                request.model_spec.name = "m"
                x = request.inputs["x"]
                x.dtype = 1
                x.tensor_shape.dim.add().size = rows
                x.tensor_shape.dim.add().size = 10
                x.float_val.append(1.0)
                time.sleep(0.5)
                before = memory(srv.proc.pid, "VmRSS:")
                try:
                    answer = f"OK, {srv.predict.Predict(request, timeout=600).ByteSize() / MIB:.0f} MiB"
                except grpc.RpcError as exc:
                    answer = exc.code().name
                grown = memory(srv.proc.pid, "VmHWM:") - before
                held = _held(srv.proc.pid, before)
                row = f"| [{rows}, 10] | {request.ByteSize()} bytes | {answer} | {grown / MIB:.0f} MiB"
                print(f"{row} | {held / MIB:.0f} MiB |", flush=True)
            finally:
                srv.stop()


if __name__ == "__main__":
    main()
