#!/usr/bin/env python3
"""The floor under any Python gRPC front end: what each step of serving a Predict costs the
server, measured server by server in one run on the same bytes.

Every server below runs on the server cores (by default every core but the last), the load
generator of serving_overhead.py on the client cores (the last), at one concurrency. They are
grpc thread-pool servers with `--threads` handler threads, each doing one step more than the last:

- echo: answers the request's bytes (grpc's own per-call work);
- sink: answers no bytes (what receiving the request costs);
- parse: parses the PredictRequest, takes its tensor as a numpy view and answers a PredictResponse
  with an output of the model's shape (what every TF Serving front end does except inference);
- minimal: parse, then OpenVINO on an infer request of the handler thread's own (the input copied
  into the request's own tensor, as dropin does) and the real output (the least a server of this
  model does; no validation, no model table, no errors);
- dropin: `dropin serve` of the same model, default flags.

Printed per server: req/s, server CPU per request (every thread, from /proc) and voluntary context
switches per request; `--perf` adds the share of the server's CPU samples spent in the kernel
(`perf record`; thread switches and wake-ups of grpc's handler threads). Then OpenVINO's time per
inference in-process (AsyncInferQueue, on the server cores), and the bound the parse step puts on
any served / in-process ratio when the server has one core: t / (t + parse CPU per request).
Measures alternate over `--rounds` rounds, as the other benchmarks do.

`--latency N` adds concurrency 1: N calls per server and round from one synchronous client on the
client cores, each server's p50 and what each step adds to the one before; next to it, OpenVINO's
inference in-process back to back and after a pause as long as the echo's round trip (as a
server's inference runs, after its thread slept). `--awake` runs a spinner at nice 19 on every
core for the whole run: the cores never idle, so the virtual machine's wake-ups from idle (which
every server pays at concurrency 1, the echo too) drop out of the figures.

    .venv/bin/python benchmarks/grpc_floor.py [--model tiny|resnet] [--concurrency 16]
        [--threads 8] [--seconds 4] [--rounds 3] [--perf] [--client-cores 1] [--latency N] [--awake]

Internal mode: `--serve KIND MODEL_XML THREADS` runs one of the servers and prints its port.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serving_overhead import (  # noqa: E402  (a sibling script, not a package)
    Compiled,
    LoadGenerator,
    Measured,
    pin,
    raise_malloc_thresholds,
    request_bytes,
    response_bytes,
    serve_thread_pool,
    split_cores,
    start_dropin,
    stop,
    tiny_model,
)

STEPS = ("echo", "sink", "parse", "minimal")
MODELS = {"tiny": ("x", (1, 10)), "resnet": ("image", (1, 3, 224, 224))}


def serve(kind: str, model_xml: str, threads: int) -> None:
    """One of the STEPS servers on grpc's thread pool; prints its port, runs until killed."""
    import numpy as np

    from dropin._proto.tensorflow_serving.apis import predict_pb2

    # OpenVINO quietly, with its numpy bridge set up (handler threads would race for it)
    from dropin_openvino.runtime import ov

    raise_malloc_thresholds()  # as dropin serve does at start-up
    compiled = ov.Core().compile_model(model_xml, "CPU")

    def batch_of_one(port: Any) -> list[int]:  # a dynamic dim (the batch) taken as 1
        return [d.get_length() if d.is_static else 1 for d in port.get_partial_shape()]

    # by name: a request may carry other inputs too (a stateful model's sequence_id)
    input_name = compiled.inputs[0].get_any_name()
    output = compiled.outputs[0]
    name = output.get_any_name()
    zeros = np.zeros(batch_of_one(output), np.float32)
    slots: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(threads):
        request = compiled.create_infer_request()
        tensor = ov.Tensor(compiled.inputs[0].get_element_type(), batch_of_one(compiled.inputs[0]))
        request.set_input_tensor(0, tensor)
        slots.put((request, tensor.data))

    def predict(data: bytes, context: object) -> bytes:
        if kind == "echo":
            return data
        if kind == "sink":
            return b""
        tensor = predict_pb2.PredictRequest.FromString(data).inputs[input_name]
        array = np.frombuffer(tensor.tensor_content, np.float32).reshape([d.size for d in tensor.tensor_shape.dim])
        if kind == "parse":
            return response_bytes(name, zeros)
        request, view = slots.get()
        try:
            view[...] = array
            request.infer()
            result = request.get_output_tensor(0).data.copy()
        finally:
            slots.put((request, view))
        return response_bytes(name, result)

    serve_thread_pool(predict, threads)


def start_step(kind: str, model_xml: Path, threads: int) -> tuple[subprocess.Popen[str], int]:
    """One of the STEPS servers in a process of its own, on this process's cores; returns it and
    its port (other benchmarks measure their floor with it)."""
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(model_xml), str(threads)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def voluntary_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended
            continue
        total += int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])
    return total


def kernel_share(pid: int, seconds: float) -> subprocess.Popen[str]:
    """`perf record` of the server for `seconds`; `kernel_percent` reads the result."""
    data = Path(tempfile.gettempdir()) / f"grpc_floor-{pid}.data"
    return subprocess.Popen(["perf", "record", "-F", "999", "-o", str(data), "-p", str(pid), "--", "sleep",
                             str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def kernel_percent(pid: int) -> float:
    data = Path(tempfile.gettempdir()) / f"grpc_floor-{pid}.data"
    report = subprocess.run(["perf", "report", "-i", str(data), "--sort", "dso", "--stdio"],
                            capture_output=True, text=True).stdout
    data.unlink(missing_ok=True)
    for line in report.splitlines():
        if "[kernel" in line:
            return float(line.split("%")[0])
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="tiny")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8, help="handler threads of the STEPS servers")
    parser.add_argument("--seconds", type=float, default=4.0, help="per server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--perf", action="store_true", help="also the kernel's share of each server's CPU")
    available = sorted(os.sched_getaffinity(0))
    parser.add_argument("--client-cores", default=str(available[-1]))
    parser.add_argument("--latency", type=int, default=0, metavar="N", help="also concurrency 1: N calls per round")
    parser.add_argument("--awake", action="store_true", help="a spinner at nice 19 on every core for the run")
    parser.add_argument("--serve", nargs=3, metavar=("KIND", "MODEL_XML", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return
    client_cores, server_cores = split_cores(args.client_cores)
    pin(server_cores)

    import numpy as np
    from image_throughput import resnet50

    import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)

    raise_malloc_thresholds()
    input_name, shape = MODELS[args.model]
    array = np.random.default_rng(0).random(shape, dtype=np.float32)
    gen = LoadGenerator(args.processes, client_cores)
    spinners = [spin_at_nice_19(core) for core in available] if args.awake else []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (tiny_model if args.model == "tiny" else resnet50)(repo / args.model / "1")
        xml = repo / args.model / "1" / "model.xml"
        (repo / "config.json").write_text(json.dumps(
            {"model_config_list": [{"config": {"name": args.model, "base_path": str(repo / args.model)}}]}))
        payload = request_bytes(args.model, input_name, array)
        servers: dict[str, tuple[subprocess.Popen, int]] = {}
        try:
            for kind in STEPS:
                servers[kind] = start_step(kind, xml, args.threads)
            dropin_proc, dropin_port, _ = start_dropin(repo / "config.json")
            servers["dropin"] = (dropin_proc, dropin_port)
            in_process = Compiled(xml, array)
            for _, port in servers.values():
                gen.rate(port, payload, args.concurrency, 1.0)  # warm up
            measured = {kind: Measured(proc.pid) for kind, (proc, _) in servers.items()}
            switches = dict.fromkeys(servers, 0)
            kernel = dict.fromkeys(servers, 0.0)
            ov_rate = 0.0
            c1: dict[str, list[float]] = {kind: [] for kind in servers}
            for _ in range(args.rounds if args.latency else 0):
                for kind, (_, port) in servers.items():
                    c1[kind] += gen.sequential(port, payload, args.latency, 50)
            for _ in range(args.rounds):
                ov_rate += in_process.rate(args.seconds) / args.rounds
                for kind, (proc, port) in servers.items():
                    before = voluntary_switches(proc.pid)
                    recorder = kernel_share(proc.pid, args.seconds) if args.perf else None
                    measured[kind].run(gen, port, payload, args.concurrency, args.seconds)
                    switches[kind] += voluntary_switches(proc.pid) - before
                    if recorder is not None:
                        recorder.wait()
                        kernel[kind] += kernel_percent(proc.pid) / args.rounds
        finally:
            for proc, _ in [*servers.values(), *spinners]:
                stop(proc)
    gen.close()

    print(f"{args.model} model, request {len(payload)} B, concurrency {args.concurrency}, clients on cores "
          f"{sorted(client_cores)}, servers on {sorted(server_cores)}, {args.threads} handler threads, "
          f"{args.rounds} x {args.seconds:g} s per server")
    print()
    print("| server | req/s | / echo | server CPU per request | voluntary switches per request"
          + (" | kernel share of the server's CPU |" if args.perf else " |"))
    print("|---|---|---|---|---|" + ("---|" if args.perf else ""))
    for kind, m in measured.items():
        print(f"| {kind} | {m.rate:.0f} | {m.rate / measured['echo'].rate:.3f} | {m.cpu_us:.0f} us | "
              f"{switches[kind] / m.requests:.1f}" + (f" | {kernel[kind]:.0f} % |" if args.perf else " |"))
    inference = 1e6 / ov_rate
    parse = measured["parse"].cpu_us
    print()
    print(f"In-process: {ov_rate:.0f} inferences/s ({inference:.0f} us each). With one server core, "
          f"the parse step alone bounds served / in-process at {inference / (inference + parse):.3f}; "
          f"dropin serves {measured['dropin'].rate / ov_rate:.3f} of in-process, the minimal server "
          f"{measured['minimal'].rate / ov_rate:.3f}.")
    if args.latency:
        print_latency(c1, in_process, 2000 if args.model == "tiny" else 100)


def print_latency(c1: dict[str, list[float]], in_process: Compiled, inferences: int) -> None:
    """The concurrency-1 table: each server's p50, over the echo and over the step before it; and
    `inferences` of the inference step in-process, back to back and after pauses."""
    p50 = {kind: statistics.median(times) for kind, times in c1.items()}
    echo = p50["echo"]
    hot = statistics.median(in_process.latencies(inferences))
    cold = statistics.median(in_process.latencies(inferences, pause=echo))
    print()
    print(f"Concurrency 1, {len(c1['echo'])} calls per server:")
    print()
    print("| server | p50 | over the echo | over the step before |")
    print("|---|---|---|---|")
    before = echo
    for kind, value in p50.items():
        print(f"| {kind} | {value * 1e3:.3f} ms | {(value - echo) * 1e3:+.3f} ms | {(value - before) * 1e3:+.3f} ms |")
        before = value
    print()
    print(f"OpenVINO's inference in-process: {hot * 1e6:.1f} us back to back, {cold * 1e6:.1f} us after a pause "
          f"of the echo's p50 ({echo * 1e3:.3f} ms), as a server's thread infers after waiting for its request.")


def spin_at_nice_19(core: int) -> tuple[subprocess.Popen, int]:
    """A busy loop on `core` at the lowest priority: the core never idles, yet yields to any other
    thread at once. Returns it as `start_step` does (the port 0)."""
    code = f"import os; os.sched_setaffinity(0, {{{core}}}); os.nice(19)\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code]), 0


if __name__ == "__main__":
    main()
