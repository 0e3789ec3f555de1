#!/usr/bin/env python3
"""Stateful model throughput: 8 concurrent sequences through the server against the same model
run in-process with 8 infer requests, from one run.

Builds a recurrent network with its hidden state in a variable (ReadValue/Assign, from
dropin_openvino.modelgen; no downloads), serves it with `dropin serve` as a user would (stateful,
nireq 8), and drives 8 sequences of 10 requests each (start, 8 middle, end, again) at once from a
client process of its own: one gRPC channel per sequence, every request serialized beforehand, so
the client's cost stays small. The reference runs the same model in this process on 8 infer
requests kept busy (AsyncInferQueue), each request with the state restore and save a sequence's
request needs (the bare model, without them, is printed too). Printed: both rates, their ratio
(goal >= 0.8) and the served p50 latency, and for comparison the same model served stateless (the
same requests without the special inputs: what the sequence handling costs on top of serving).
Then the transport's floor: grpc_floor.py's "parse" server (it only receives and parses the same
requests and answers a response of the output's shape) driven by the same client, its CPU per
request F; with the one server core, the in-process time per request t and F add up, so no
Python gRPC server exceeds t / (t + F) of in-process; printed with served / that bound (for the
model served stateless, t is the bare model's: it restores and saves no state).

All of it for two models by default (`--hidden 2048,4096`): with a 2048-wide state a step takes
about 0.8 ms on one core, and the floor alone bounds any served ratio near the goal; with 4096, a
step takes about 2.4 ms, as recurrent speech models' steps do, and the bound is about 0.92.

As serving_overhead.py, the client runs on cores of its own (`--client-cores`, default the last
core), the server and the in-process reference on the others.

    .venv/bin/python benchmarks/stateful_throughput.py [--seconds 8] [--hidden 2048,4096] [--client-cores 1]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from grpc_floor import start_step  # noqa: E402  (sibling scripts, not a package)
from serving_overhead import split_cores, stop  # noqa: E402

PREDICT = "/tensorflow.serving.PredictionService/Predict"
SEQUENCES = 8
LENGTH = 10  # requests per sequence: start, 8 middle, end


def payloads(inputs: int, sequence: int, stateful: bool = True) -> list[bytes]:
    """The 10 requests of one sequence, serialized: x random, the special inputs as OVMS's
    clients send them (uint64_val, uint32_val); none for the model served stateless."""
    import numpy as np

    from dropin._proto.tensorflow_serving.apis import predict_pb2
    from dropin.tensor_proto import from_numpy
    from dropin.testing.sequences import END, START, special

    rng = np.random.default_rng(sequence)
    out = []
    for i in range(LENGTH):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "recurrent"
        request.inputs["x"].CopyFrom(from_numpy(rng.standard_normal((1, inputs)).astype(np.float32)))
        control = START if i == 0 else END if i == LENGTH - 1 else None
        for name, proto in (special(1000 + sequence, control) if stateful else {}).items():
            request.inputs[name].CopyFrom(proto)
        out.append(request.SerializeToString())
    return out


def drive(port: int, inputs: int, seconds: float, cores: set[int], stateful: bool) -> tuple[int, list[float]]:
    """The client process: 8 threads, one sequence each, requests back to back."""
    import grpc

    os.sched_setaffinity(0, cores)
    done = [0] * SEQUENCES
    times: list[list[float]] = [[] for _ in range(SEQUENCES)]
    barrier = threading.Barrier(SEQUENCES)

    def one(k: int) -> None:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        call = channel.unary_unary(PREDICT)
        requests = payloads(inputs, k, stateful)
        for data in requests:  # warm up: one whole sequence
            call(data, timeout=60)
        barrier.wait()
        stop = time.monotonic() + seconds
        i = 0
        while time.monotonic() < stop or i % LENGTH:  # finish the sequence under way
            started = time.perf_counter()
            call(requests[i % LENGTH], timeout=60)
            times[k].append(time.perf_counter() - started)
            i += 1
        done[k] = i
        channel.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(SEQUENCES)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    return sum(done), [elapsed] + [t for ts in times for t in ts]


def in_process(model_xml: Path, inputs: int, seconds: float, with_state: bool = True) -> float:
    """The same model in this process on 8 infer requests kept busy (OpenVINO's AsyncInferQueue,
    as serving_overhead.py's reference). With `with_state` (the fair reference), each request
    does what serving a sequence's request must: the sequence's saved state set into the infer
    request before it, the new state copied out after it (8 sequences in turn, as served);
    without, the requests keep whatever state they hold (the bare model)."""
    import numpy as np
    import openvino as ov

    compiled = ov.Core().compile_model(str(model_xml), "CPU")
    queue = ov.AsyncInferQueue(compiled, SEQUENCES)
    feed = {0: np.random.default_rng(0).standard_normal((1, inputs)).astype(np.float32)}
    saved: list[dict[str, np.ndarray] | None] = [None] * SEQUENCES

    def keep(request: ov.InferRequest, k: int) -> None:  # in OpenVINO's callback thread
        saved[k] = {v.name: np.array(v.state.data, copy=True) for v in request.query_state()}

    if with_state:
        queue.set_callback(keep)

    def submit(k: int) -> None:
        if with_state:
            state = saved[k]
            for variable in queue[queue.get_idle_request_id()].query_state():  # waits for an idle request
                if state is None:
                    variable.reset()
                else:
                    variable.state = ov.Tensor(np.ascontiguousarray(state[variable.name]))
        queue.start_async(feed, k)  # waits for an idle request

    for k in range(2 * SEQUENCES):  # warm up
        submit(k % SEQUENCES)
    queue.wait_all()
    done = 0
    started = time.monotonic()
    stop = started + seconds
    while time.monotonic() < stop:
        for k in range(SEQUENCES):
            submit(k)
        done += SEQUENCES
    queue.wait_all()
    return done / (time.monotonic() - started)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system, every thread) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pid: int, port: int, inputs: int, seconds: float, cores: set[int], stateful: bool
            ) -> tuple[tuple[int, list[float]], float]:
    """drive() against the server `pid` listening on `port`: its result and the server's CPU seconds
    per request, warm-up included (less sensitive than a rate to a shared machine's load)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        cpu = cpu_seconds(pid)
        result = pool.submit(drive, port, inputs, seconds, cores, stateful).result()
        return result, (cpu_seconds(pid) - cpu) / (result[0] + SEQUENCES * LENGTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput phase")
    parser.add_argument("--inputs", type=int, default=512, help="input width of the recurrent network")
    parser.add_argument("--hidden", default="2048,4096",
                        help="hidden state widths (the state kept per sequence), comma-separated: one model each")
    available = sorted(os.sched_getaffinity(0))
    parser.add_argument("--client-cores", default=str(available[-1]),
                        help="comma-separated cores of the client; the server gets the others (default: the last core)")
    args = parser.parse_args()
    client_cores, server_cores = split_cores(args.client_cores)
    os.sched_setaffinity(0, server_cores)  # the server started below inherits it
    print(f"client on cores {sorted(client_cores)}, server and in-process reference on {sorted(server_cores)}",
          flush=True)
    for hidden in (int(h) for h in args.hidden.split(",")):
        run(args.inputs, hidden, args.seconds, client_cores)


def run(inputs: int, hidden: int, seconds: float, client_cores: set[int]) -> None:
    """One model (`hidden` wide): served stateful and stateless, in-process, the floor; printed."""
    import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)
    from dropin.testing.server import DropinServer
    from dropin_openvino.modelgen import recurrent_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        recurrent_model(root / "recurrent" / "1", inputs=inputs, hidden=hidden)
        model_xml = root / "recurrent" / "1" / "model.xml"
        bare = in_process(model_xml, inputs, seconds, with_state=False)
        before = in_process(model_xml, inputs, seconds)
        served = {}
        server_cpu = {}
        for stateful in (True, False):
            config = {"model_config_list": [{"config": {
                "name": "recurrent", "base_path": "recurrent", "stateful": stateful, "nireq": SEQUENCES}}]}
            (root / "config.json").write_text(json.dumps(config))
            server = DropinServer(["--config_path", str(root / "config.json"), "--file_system_poll_wait_seconds", "0"])
            try:
                server.wait_for("recurrent", 1, timeout=120)
                served[stateful], server_cpu[stateful] = measure(
                    server.proc.pid, server.port, inputs, seconds, client_cores, stateful)
            finally:
                server.stop()
        # the same stateful requests from the same client, received and parsed, nothing more
        floor_proc, floor_port = start_step("parse", model_xml, SEQUENCES)
        try:
            floor, floor_cpu = measure(floor_proc.pid, floor_port, inputs, seconds, client_cores, True)
        finally:
            stop(floor_proc)
        # measured before and after the servers, averaged: the machine's load may drift meanwhile
        after = in_process(model_xml, inputs, seconds)
        reference = (before + after) / 2
    print(f"\nrecurrent network, x [1,{inputs}], state [1,{hidden}] fp32, {SEQUENCES} sequences of {LENGTH}")
    for stateful, label in ((True, "served (8 concurrent sequences, gRPC)"),
                            (False, "served stateless (same requests, no sequence)")):
        count, samples = served[stateful]
        rate = count / samples[0]
        p50 = statistics.median(samples[1:]) * 1e3
        print(f"{label + ':':48s}{rate:9.1f} req/s  p50 {p50:.2f} ms  ({rate / reference:.2f} of in-process)  "
              f"server CPU {server_cpu[stateful] * 1e6:.0f} us/req")
    print(f"{'in-process, state restored and saved per request:':48s}{reference:9.1f} req/s  (before {before:.1f}, "
          f"after {after:.1f})")
    print(f"{'in-process, bare model (no state handling):':48s}{bare:9.1f} req/s  (served stateful: "
          f"{served[True][0] / served[True][1][0] / bare:.2f} of it)")
    print(f"{'transport floor (grpc_floor.py parse server):':48s}{floor[0] / floor[1][0]:9.1f} req/s  p50 "
          f"{statistics.median(floor[1][1:]) * 1e3:.2f} ms  server CPU {floor_cpu * 1e6:.0f} us/req (same requests)")
    # one server core: per request, the inference's time and the floor's CPU add up; served
    # stateless does no restore and save, so its in-process time is the bare model's
    rates = {stateful: count / samples[0] for stateful, (count, samples) in served.items()}
    for stateful, rate, local in ((True, rates[True], reference), (False, rates[False], bare)):
        t = 1 / local
        bound = t / (t + floor_cpu)
        print(f"{'bound t / (t + floor), ' + ('stateful' if stateful else 'stateless') + ':':48s}{bound:9.2f} of "
              f"{'in-process' if stateful else 'the bare model'} (t = {t * 1e6:.0f} us)  served / bound "
              f"{rate / local / bound:.2f}")
    print(f"ratio served stateful / in-process: {rates[True] / reference:.2f}  (goal >= 0.8)")




if __name__ == "__main__":
    main()
