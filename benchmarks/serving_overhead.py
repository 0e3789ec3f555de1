#!/usr/bin/env python3
"""Serving overhead against the physical limits, from one run, side by side.

Builds two models without downloads (a ResNet-50 with random weights, from image_throughput.py,
and a 1x10 model), starts `dropin serve` on both as a user would (a subprocess, no special
environment), and drives it with a multi-process gRPC load generator: every client process holds
one request serialized once and sends the bytes (no serializer, no deserializer), with
`concurrency / processes` calls in flight each (grpc.aio). It prints:

first, every goal with this run's figure: the 1x10 model at concurrency 16 against the thread-pool
echo, at concurrency 1 what dropin adds to the echo of the same bytes and to in-process inference,
ResNet-50 against in-process, and dropin's REST port against a bare aiohttp echo of the same body
and a minimal REST server (rest_overhead.py: the same client processes, aiohttp, concurrency 16,
p50 added at 16 and 1, and each server's CPU per request: the echo's rate is bound by the clients);
(a) ResNet-50 served req/s at concurrency 4 / OpenVINO AsyncInferQueue req/s in-process; and the
    ceiling of any server on this machine: the in-process rate while the same clients send the same
    bytes at concurrency 4 to a server that holds each call long enough to serve them at dropin's
    rate and answers nothing (the transport's work at that rate, without a model);
(b) the 1x10 model's served req/s at concurrency 16 / a bare Python gRPC echo server's req/s,
    same client and payload; grpc.aio echo servers on asyncio's loop and on uvloop (the loop dropin
    serves on) and a thread-pool echo server are measured and the fastest is the reference;
(c) p50 / p99 latency of both models at concurrency 1 (one synchronous client) next to
    in-process latency;
(d) the 1x10 model at concurrency 16 on every server side by side (dropin, the thread-pool and
    grpc.aio echoes, a minimal thread-pool and a minimal grpc.aio server): req/s, p50 and the ratio
    to the thread-pool echo, and at concurrency 1 what each server adds to the echo of the same bytes.

Clients model other machines: the load generator (and the concurrency-1 client) run on cores of
their own (`--client-cores`, default the last core). The servers and the in-process references
are not pinned (they may use every core, as a server whose clients are elsewhere would);
`--pin-servers` keeps them off the client cores instead. The run fails (exit 1) when the
thread-pool echo serves fewer than `--min-echo` req/s: the reference itself would then be starved
and every ratio flattering.

    .venv/bin/python benchmarks/serving_overhead.py [--seconds 8] [--markdown docs/performance.md]
        [--client-cores 1] [--pin-servers] [--min-echo 10000]

Internal modes: `--echo-server aio|uvloop|thread` runs an echo server and prints its port;
`--hold-server SECONDS` the server of (a)'s ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PREDICT = "/tensorflow.serving.PredictionService/Predict"
CLIENT_OPTIONS = [("grpc.max_send_message_length", 1 << 30), ("grpc.max_receive_message_length", 1 << 30)]


def raise_malloc_thresholds() -> None:
    """Clients too: image-sized buffers are otherwise returned to the OS after every call."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD


# -- load generator (runs in spawned processes) ------------------------------------------------


def _drive(
    port: int, payload: bytes, inflight: int, seconds: float, start_at: float, timed: bool = False
) -> tuple[int, float, list[float]]:
    """One client process: `inflight` concurrent calls, back to back; returns the completed calls,
    the CPU seconds this process spent on them and (`timed`) every call's latency."""
    import grpc

    raise_malloc_thresholds()

    async def run() -> tuple[int, float, list[float]]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
            call = channel.unary_unary(PREDICT)  # bytes in, bytes out
            await call(payload, timeout=60)
            while time.time() < start_at:
                await asyncio.sleep(0.001)
            stop = time.monotonic() + seconds
            started_cpu = time.process_time()
            done = 0
            times: list[float] = []

            async def loop() -> None:
                nonlocal done
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    await call(payload, timeout=60)
                    if timed:
                        times.append(time.perf_counter() - started)
                    done += 1

            await asyncio.gather(*(loop() for _ in range(inflight)))
            return done, time.process_time() - started_cpu, times

    return asyncio.run(run())


def split_cores(client_cores: str) -> tuple[set[int], set[int]]:
    """`--client-cores` ("1" or "2,3"): the clients' cores and the other cores of this process;
    exits with a message when they are not a subset leaving at least one core for the server."""
    available = set(os.sched_getaffinity(0))
    clients = {int(core) for core in client_cores.split(",")}
    others = available - clients
    if not clients <= available or not others:
        sys.exit(f"--client-cores {client_cores}: expected a subset of the cores {sorted(available)} that leaves "
                 "at least one core for the server")
    return clients, others


def pin(cores: set[int]) -> None:
    """Keeps this process, and the processes and threads it starts from now on, on `cores`."""
    os.sched_setaffinity(0, cores)


class LoadGenerator:
    def __init__(self, processes: int, cores: set[int] | None = None) -> None:
        self.processes = processes
        self.pool = ProcessPoolExecutor(
            processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=pin if cores else None,
            initargs=(cores,) if cores else (),
        )
        self.client_cpu = 0.0
        self.latencies: list[float] = []
        list(self.pool.map(int, range(processes)))  # start them now

    def rate(self, port: int, payload: bytes, concurrency: int, seconds: float, timed: bool = False) -> float:
        """Requests per second with `concurrency` calls in flight, spread over the processes.
        The clients' CPU seconds over the run are left in `client_cpu`, and with `timed` every
        call's latency in `latencies`."""
        return self.finish(self.start(port, payload, concurrency, seconds, timed), seconds)

    def start(self, port: int, payload: bytes, concurrency: int, seconds: float, timed: bool = False) -> list[Any]:
        """`rate`'s load, started a second from now and left running; `finish` waits for it."""
        procs = min(self.processes, concurrency)
        shares = [concurrency // procs + (i < concurrency % procs) for i in range(procs)]
        start_at = time.time() + 1.0
        return [self.pool.submit(_drive, port, payload, n, seconds, start_at, timed) for n in shares]

    def finish(self, futures: list[Any], seconds: float) -> float:
        """Waits for the load `start` began; returns its requests per second."""
        results = [f.result() for f in futures]
        self.client_cpu = sum(cpu for _, cpu, _ in results)
        self.latencies = [t for _, _, times in results for t in times]
        return sum(done for done, _, _ in results) / seconds

    def sequential(self, port: int, payload: bytes, n: int, warmup: int) -> list[float]:
        """Concurrency 1 from one of the client processes (on the clients' cores)."""
        return self.pool.submit(latencies, port, payload, n, warmup).result()

    def close(self) -> None:
        self.pool.shutdown()


def latencies(port: int, payload: bytes, n: int, warmup: int) -> list[float]:
    """Concurrency 1: one synchronous client, one call at a time."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=CLIENT_OPTIONS) as channel:
        call = channel.unary_unary(PREDICT)
        for _ in range(warmup):
            call(payload, timeout=60)
        times = []
        for _ in range(n):
            start = time.perf_counter()
            call(payload, timeout=60)
            times.append(time.perf_counter() - start)
    return times


def process_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, every thread (dropin serves gRPC in a thread pool)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Measured:
    """Requests and CPU of one server over the throughput phases."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.requests = 0.0
        self.seconds = 0.0
        self.cpu = 0.0
        self.latencies: list[float] = []

    def run(self, gen: LoadGenerator, port: int, payload: bytes, concurrency: int, seconds: float) -> None:
        before = process_seconds(self.pid)
        rate = gen.rate(port, payload, concurrency, seconds, timed=True)
        self.cpu += process_seconds(self.pid) - before
        self.latencies += gen.latencies
        self.requests += rate * seconds
        self.seconds += seconds

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def cpu_us(self) -> float:
        """Server CPU (every thread) per request, in microseconds."""
        return self.cpu / self.requests * 1e6


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.99) - 1, 0)]


# -- echo servers ------------------------------------------------------------------------------


ECHO_KINDS = ("aio", "uvloop", "thread")
ECHO_NAMES = {"aio": "grpc.aio", "uvloop": "grpc.aio on uvloop", "thread": "thread pool"}


def serve_aio(predict: Any, uvloop: bool) -> None:
    """A grpc.aio server whose Predict is `predict` (bytes in, bytes out), on asyncio's loop or
    uvloop; prints its port and runs until killed."""
    import grpc

    async def run() -> None:
        server = grpc.aio.server(options=CLIENT_OPTIONS)
        handler = grpc.unary_unary_rpc_method_handler(predict)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "tensorflow.serving.PredictionService", {"Predict": handler}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    if uvloop:
        import uvloop as loop_module

        loop_module.run(run())
    else:
        asyncio.run(run())


def echo_server(kind: str) -> None:
    """Answers every call with its request bytes; prints the port, runs until killed."""

    def echo(request: bytes, context: object) -> bytes:
        return request

    if kind in ("aio", "uvloop"):

        async def aecho(request: bytes, context: object) -> bytes:
            return request

        serve_aio(aecho, uvloop=kind == "uvloop")
    else:
        serve_thread_pool(echo, 32)


def hold_server(seconds: float) -> None:
    """Receives each call's bytes, holds the call `seconds` (as long as an inference would take, in
    a thread that sleeps) and answers nothing: the transport's work on the machine at a model's
    rate, without the model. Prints the port, runs until killed."""

    def hold(request: bytes, context: object) -> bytes:
        time.sleep(seconds)
        return b""

    serve_thread_pool(hold, 16)


def serve_thread_pool(predict: Any, threads: int) -> None:
    """A grpc thread-pool server of `threads` threads whose Predict is `predict` (bytes in, bytes
    out); prints its port and runs until killed."""
    import grpc

    server = grpc.server(ThreadPoolExecutor(threads), options=CLIENT_OPTIONS)
    handler = grpc.unary_unary_rpc_method_handler(predict)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "tensorflow.serving.PredictionService", {"Predict": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def minimal_server(model_xml: str, threaded: bool) -> None:
    """The least a Python TF Serving front end can do per request, with nothing general about it:
    parse the PredictRequest, copy its one input into an OpenVINO request, infer (on the loop, or
    `threaded`: in OpenVINO's optimal number of threads, each with its own infer request), answer
    the first output. No validation, no model table, no errors; grpc.aio on uvloop. Prints the
    port, runs until killed."""
    import queue

    import numpy as np

    # OpenVINO quietly, with its numpy bridge set up (handler threads would race for it)
    from dropin_openvino.runtime import ov

    compiled = ov.Core().compile_model(model_xml, "CPU")
    nireq = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")) if threaded else 1
    requests: queue.SimpleQueue = queue.SimpleQueue()
    for _ in range(nireq):
        requests.put(compiled.create_infer_request())
    pool = ThreadPoolExecutor(nireq)
    output = compiled.outputs[0].get_any_name()

    def infer(array: np.ndarray) -> np.ndarray:
        request = requests.get()
        try:
            tensor = request.get_input_tensor(0)
            tensor.shape = array.shape
            tensor.data[...] = array
            return request.infer(None, share_outputs=False).to_tuple()[0]
        finally:
            requests.put(request)

    async def predict(data: bytes, context: object) -> bytes:
        array = _parse_input(data)
        if threaded:
            result = await asyncio.get_running_loop().run_in_executor(pool, infer, array)
        else:
            result = infer(array)
        return response_bytes(output, result)

    serve_aio(predict, uvloop=True)


def _parse_input(data: bytes) -> Any:
    """The minimal servers' request parsing: the one f32 input of a PredictRequest, zero-copy."""
    import numpy as np

    from dropin._proto.tensorflow_serving.apis import predict_pb2

    tensor = next(iter(predict_pb2.PredictRequest.FromString(data).inputs.values()))
    return np.frombuffer(tensor.tensor_content, np.float32).reshape([d.size for d in tensor.tensor_shape.dim])


def response_bytes(output: str, result: Any) -> bytes:
    """The minimal servers' answer: `result` as the f32 tensor_content of output `output`."""
    from dropin._proto.tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    out = response.outputs[output]
    out.dtype = 1  # DT_FLOAT
    for size in result.shape:
        out.tensor_shape.dim.add().size = size
    out.tensor_content = result.tobytes()
    return response.SerializeToString()


#: handler threads of the minimal thread-pool server (grpc_floor.py's "minimal" step)
MINIMAL_THREADS = 4


def start_minimal(model_xml: Path, threaded: bool = False, thread_pool: bool = False) -> tuple[subprocess.Popen, int]:
    """The minimal grpc.aio server (`threaded`: OpenVINO in threads), or with `thread_pool` the
    minimal server of grpc_floor.py on grpc's thread pool (OpenVINO in the handler thread, on an
    infer request and input tensor of the thread's own)."""
    if thread_pool:
        command = [sys.executable, str(HERE / "grpc_floor.py"), "--serve", "minimal", str(model_xml),
                   str(MINIMAL_THREADS)]
    else:
        command = [sys.executable, __file__, "--minimal-server", str(model_xml)]
        command += ["--minimal-threaded"] if threaded else []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def start_echo(kind: str) -> tuple[subprocess.Popen, int]:
    """The bare echo server of `kind` (ECHO_NAMES)."""
    return _start_server("--echo-server", kind)


def start_hold(seconds: float) -> tuple[subprocess.Popen, int]:
    """The hold server of (a)'s ceiling, holding each call `seconds`."""
    return _start_server("--hold-server", str(seconds))


def _start_server(*mode: str) -> tuple[subprocess.Popen, int]:
    """This script in one of its internal server modes; the process and the port it prints."""
    proc = subprocess.Popen([sys.executable, __file__, *mode], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


# -- models ------------------------------------------------------------------------------------


def tiny_model(path: Path) -> None:
    """[1,10] f32 -> [1,10] f32 (x * 2 + 1)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 10], ov.Type.f32, name="x")
    x.output(0).get_tensor().set_names({"x"})
    y = ops.add(
        ops.multiply(x, ops.constant(np.full((1, 10), 2, np.float32))), ops.constant(np.ones((1, 10), np.float32))
    )
    y.output(0).get_tensor().set_names({"y"})
    path.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.Model([ops.result(y)], [x], "tiny"), str(path / "model.xml"), compress_to_fp16=False)


def start_dropin(config: Path, extra_args: Sequence[str] = ()) -> tuple[subprocess.Popen, int, int]:
    """`dropin serve` as a user starts it (through the test kit, which drains its log), with a REST
    port; returns the process, the gRPC port and the REST port."""
    from dropin.testing.server import DropinServer, free_port

    server = DropinServer(["--config_path", str(config), "--file_system_poll_wait_seconds", "0",
                           "--rest_port", str(free_port()), *extra_args])
    server.wait_for_log("server ready", timeout=300)
    return server.proc, server.port, server.rest_port


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- in-process references ---------------------------------------------------------------------


class Compiled:
    """The model compiled in this process as dropin compiles it (CPU, no plugin config)."""

    def __init__(self, model_xml: Path, array) -> None:
        import openvino as ov

        self.compiled = ov.Core().compile_model(str(model_xml), "CPU")
        self.queue = ov.AsyncInferQueue(self.compiled)  # OpenVINO's optimal number of requests
        self.array = array
        self.rate(0.5)  # warm up

    def rate(self, seconds: float) -> float:
        """AsyncInferQueue throughput, every request kept busy."""
        queue, feed = self.queue, {0: self.array}
        done = 0
        started = time.monotonic()
        stop_at = started + seconds
        while time.monotonic() < stop_at:
            for _ in range(len(queue)):
                queue.start_async(feed)  # waits for an idle request
            done += len(queue)
        queue.wait_all()
        return done / (time.monotonic() - started)

    def latencies(self, n: int, pause: float = 0.0) -> list[float]:
        """Sequential synchronous inferences on one request, each the minimal servers' inference
        step (the input copied into the request's own tensor, `infer`, the output copied), after
        sleeping `pause` seconds (none: back to back, as in-process inference runs at its best)."""
        request, array = self.compiled.create_infer_request(), self.array
        tensor = request.get_input_tensor(0)
        tensor.shape = array.shape  # a dynamic batch has none yet
        view = tensor.data
        for _ in range(min(n // 10, 50) + 1):
            view[...] = array
            request.infer()
        times = []
        for _ in range(n):
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            view[...] = array
            request.infer()
            request.get_output_tensor(0).data.copy()
            times.append(time.perf_counter() - start)
        return times


def request_bytes(model: str, name: str, array) -> bytes:
    from dropin._proto.tensorflow_serving.apis import predict_pb2
    from dropin.tensor_proto import from_numpy

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs[name].CopyFrom(from_numpy(array))
    return request.SerializeToString()


# -- the run -----------------------------------------------------------------------------------


# dropin's optional server-side batching, as a user would turn it on for a small model
BATCHING = {"max_batch_size": 16, "batch_timeout_micros": 2000}
# the 1x10 model over REST: ten floats as TF Serving's row format
REST_PATH = "/v1/models/tiny:predict"
REST_BODY = b'{"instances": [[0.5, 0.25, 0.125, 1.5, 2.5, 3.5, 0.75, 0.0625, 4.0, 8.0]]}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each throughput phase")
    parser.add_argument("--processes", type=int, default=2, help="client processes of the load generator")
    parser.add_argument(
        "--latency-requests", type=int, default=3000, help="1x10 requests at concurrency 1 (ResNet: a tenth)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the results table to this file")
    parser.add_argument(
        "--dropin-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for dropin serve, e.g. --dropin-arg=--event_loop --dropin-arg=asyncio",
    )
    available = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--client-cores",
        default=str(available[-1]),
        help="comma-separated cores of the load generator (clients); servers get the others (default: the last core)",
    )
    parser.add_argument(
        "--pin-servers",
        action="store_true",
        help="keep the servers and in-process references off the client cores (default: not pinned)",
    )
    parser.add_argument(
        "--min-echo",
        type=float,
        default=10_000.0,
        help="fail when the thread-pool echo serves fewer 1x10 req/s at concurrency 16 (a starved reference)",
    )
    parser.add_argument("--echo-server", choices=ECHO_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--hold-server", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--minimal-server", help=argparse.SUPPRESS)
    parser.add_argument("--minimal-threaded", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        echo_server(args.echo_server)
        return
    if args.hold_server is not None:
        hold_server(args.hold_server)
        return
    if args.minimal_server:
        minimal_server(args.minimal_server, args.minimal_threaded)
        return
    client_cores, server_cores = split_cores(args.client_cores)
    if args.pin_servers:
        pin(server_cores)  # every server started below inherits it; the clients pin themselves
    else:
        server_cores = set(available)
    pinned = "" if args.pin_servers else " (not pinned)"
    print(f"clients on cores {sorted(client_cores)}, servers and in-process references on "
          f"{sorted(server_cores)}{pinned}", flush=True)

    import numpy as np

    import dropin_openvino.runtime  # noqa: F401  (imports openvino with its telemetry off)

    sys.path.insert(0, str(HERE))
    import rest_overhead
    from image_throughput import resnet50

    raise_malloc_thresholds()
    began = time.monotonic()
    rng = np.random.default_rng(0)
    image = rng.random((1, 3, 224, 224), dtype=np.float32)
    vector = rng.random((1, 10), dtype=np.float32)
    n_tiny, n_resnet = args.latency_requests, max(args.latency_requests // 10, 50)
    gen = LoadGenerator(args.processes, client_cores)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        resnet50(repo / "resnet" / "1")
        tiny_model(repo / "tiny" / "1")
        config = repo / "config.json"
        config.write_text(
            json.dumps(
                {
                    "model_config_list": [
                        {"config": {"name": "resnet", "base_path": str(repo / "resnet")}},
                        {"config": {"name": "tiny", "base_path": str(repo / "tiny")}},
                        # the same files with a dynamic batch and dropin's optional server-side batching
                        {
                            "config": {
                                "name": "tiny_batched",
                                "base_path": str(repo / "tiny"),
                                "batch_size": "-1",
                                "dynamic_batching": BATCHING,
                            }
                        },
                    ]
                }
            )
        )
        resnet_payload = request_bytes("resnet", "image", image)
        tiny_payload = request_bytes("tiny", "x", vector)
        batched_payload = request_bytes("tiny_batched", "x", vector)

        # Every server runs for the whole measurement and the phases alternate (reference,
        # dropin, reference, dropin), so that drift on a shared machine hits both sides alike.
        echoes = {kind: start_echo(kind) for kind in ECHO_KINDS}
        echo_ports = {kind: port for kind, (_, port) in echoes.items()}
        minimal = start_minimal(repo / "tiny" / "1" / "model.xml")
        minimal_pool = start_minimal(repo / "tiny" / "1" / "model.xml", thread_pool=True)
        minimal_resnet = start_minimal(repo / "resnet" / "1" / "model.xml", threaded=True)
        dropin_proc, port, rest_port = start_dropin(config, args.dropin_arg)
        rest_echo = rest_overhead.start_echo()
        rest_minimal = rest_overhead.start_minimal(str(repo / "tiny" / "1" / "model.xml"))
        servers = [*echoes.values(), minimal, minimal_pool, minimal_resnet, rest_echo, rest_minimal,
                   (dropin_proc, port)]
        try:
            minimal_port = minimal[1]
            ov_resnet = Compiled(repo / "resnet" / "1" / "model.xml", image)
            ov_tiny = Compiled(repo / "tiny" / "1" / "model.xml", vector)
            ov_tiny_times = ov_tiny.latencies(n_tiny)
            # concurrency 1 on the 1x10 model, servers and echoes in turn, a third of the calls each
            # time: the machine's drift between minutes moves a p50 by more than the goal
            c1_ports = {"dropin": port, "minimal": minimal_port, "minimal pool": minimal_pool[1],
                        **{f"echo {kind}": p for kind, p in echo_ports.items()}}
            c1_times: dict[str, list[float]] = {name: [] for name in c1_ports}
            for _ in range(3):
                for name, p in c1_ports.items():
                    c1_times[name] += gen.sequential(p, tiny_payload, n_tiny // 3, 100)
            tiny_times, minimal_times = c1_times["dropin"], c1_times["minimal"]
            minimal_pool_times = c1_times["minimal pool"]
            batched_times = gen.sequential(port, batched_payload, n_tiny // 10, 30)  # each waits the whole timeout
            # the transport's floor at concurrency 1: a bare echo of the same bytes
            echo_times = {kind: percentiles(c1_times[f"echo {kind}"]) for kind in echo_ports}
            fastest = min(echo_times, key=lambda k: echo_times[k][0])
            echo_tiny = echo_times[fastest]
            echo_name = ECHO_NAMES[fastest]
            # ResNet-50 at concurrency 1 in turn too: its inference alone drifts by 0.5 ms between minutes
            ov_resnet_times, resnet_times, resnet_minimal_times, resnet_echo_times = [], [], [], []
            ov_resnet_paused: list[float] = []  # each after a pause as long as the echo's round trip
            for _ in range(3):
                resnet_echo_times += gen.sequential(echo_ports[fastest], resnet_payload, n_resnet // 3, 10)
                ov_resnet_times += ov_resnet.latencies(n_resnet // 3)
                ov_resnet_paused += ov_resnet.latencies(n_resnet // 3, pause=percentiles(resnet_echo_times)[0])
                resnet_times += gen.sequential(port, resnet_payload, n_resnet // 3, 10)
                resnet_minimal_times += gen.sequential(minimal_resnet[1], resnet_payload, n_resnet // 3, 10)
            echo_resnet = percentiles(resnet_echo_times)
            rest_echo_time = percentiles(gen.pool.submit(
                rest_overhead.sequential, rest_echo[1], REST_PATH, REST_BODY, n_tiny).result())
            rest_time = percentiles(gen.pool.submit(
                rest_overhead.sequential, rest_port, REST_PATH, REST_BODY, n_tiny).result())
            rest_measured, rest_echo_measured = rest_overhead.RestMeasured(), rest_overhead.RestMeasured()
            rest_minimal_measured = rest_overhead.RestMeasured()
            # server CPU per REST request: the echo's rate is bound by the clients, not by its CPU
            rest_cpu = dict.fromkeys((rest_measured, rest_echo_measured, rest_minimal_measured), 0.0)
            for p in (*echo_ports.values(), minimal_port, minimal_pool[1], port):
                gen.rate(p, tiny_payload, 16, 0.5)  # warm up
            # ResNet-50's ceiling: the same clients send the same bytes at concurrency 4 to a server
            # that holds each call long enough to serve dropin's rate, while OpenVINO infers here
            hold_seconds = 4 / gen.rate(port, resnet_payload, 4, 1.0)
            hold = start_hold(hold_seconds)
            servers.append(hold)
            gen.rate(minimal_resnet[1], resnet_payload, 4, 1.0)
            half = args.seconds / 2
            echoes_measured = {kind: Measured(proc.pid) for kind, (proc, _) in echoes.items()}
            minimal_measured, tiny_measured = Measured(minimal[0].pid), Measured(dropin_proc.pid)
            minimal_pool_measured = Measured(minimal_pool[0].pid)
            batched_measured = Measured(dropin_proc.pid)
            gen.rate(port, batched_payload, 16, 0.5)  # warm up
            resnet_rate = ov_resnet_rate = ceiling_rate = traffic_rate = 0.0
            resnet_measured = Measured(dropin_proc.pid)
            resnet_minimal = Measured(minimal_resnet[0].pid)
            for _ in range(2):
                ov_resnet_rate += ov_resnet.rate(half) / 2
                # the load starts a second after `start`; inference is measured well inside it
                inside = max(half - 1.0, 0.5)
                traffic = gen.start(hold[1], resnet_payload, 4, inside + 2.0)
                time.sleep(1.5)
                ceiling_rate += ov_resnet.rate(inside) / 2
                traffic_rate += gen.finish(traffic, inside + 2.0) / 2
                resnet_measured.run(gen, port, resnet_payload, 4, half)
                resnet_minimal.run(gen, minimal_resnet[1], resnet_payload, 4, half)
                for kind, p in echo_ports.items():
                    echoes_measured[kind].run(gen, p, tiny_payload, 16, half)
                minimal_measured.run(gen, minimal_port, tiny_payload, 16, half)
                minimal_pool_measured.run(gen, minimal_pool[1], tiny_payload, 16, half)
                batched_measured.run(gen, port, batched_payload, 16, half)
                tiny_measured.run(gen, port, tiny_payload, 16, half)
                rest_servers = ((rest_echo, rest_echo_measured), ((dropin_proc, rest_port), rest_measured),
                                (rest_minimal, rest_minimal_measured))
                for rest_server, measured in rest_servers:
                    before = process_seconds(rest_server[0].pid)
                    measured.run(gen.pool, args.processes, rest_server[1], REST_PATH, REST_BODY, 16, half)
                    rest_cpu[measured] += process_seconds(rest_server[0].pid) - before
            echo_rates = {kind: m.rate for kind, m in echoes_measured.items()}
            minimal_rate, tiny_rate = minimal_measured.rate, tiny_measured.rate
            resnet_rate = resnet_measured.rate
        finally:
            for proc, _ in servers:
                stop(proc)
    gen.close()

    best = max(echo_rates, key=echo_rates.__getitem__)
    ratio_a = resnet_rate / ov_resnet_rate
    ratio_b = tiny_rate / echo_rates[best]
    lat = {
        "tiny in-process": percentiles(ov_tiny_times),
        "tiny dropin": percentiles(tiny_times),
        "tiny minimal": percentiles(minimal_times),
        "tiny minimal pool": percentiles(minimal_pool_times),
        "tiny batched": percentiles(batched_times),
        "resnet minimal": percentiles(resnet_minimal_times),
        "resnet in-process": percentiles(ov_resnet_times),
        "resnet in-process paused": percentiles(ov_resnet_paused),
        "resnet dropin": percentiles(resnet_times),
    }
    ms = lambda s: f"{s * 1e3:.3f}"  # noqa: E731
    diff = lambda s: f"{s * 1e3:+.3f}"  # noqa: E731
    lines = goals(
        tiny=tiny_measured.rate / echoes_measured["thread"].rate,
        tiny_c1=(lat["tiny dropin"][0] - echo_times["thread"][0], lat["tiny dropin"][0] - lat["tiny in-process"][0]),
        resnet=(ratio_a, ceiling_rate / ov_resnet_rate, resnet_minimal.rate / ov_resnet_rate),
        resnet_c1=(
            lat["resnet dropin"][0] - lat["resnet in-process"][0] - echo_resnet[0],
            lat["resnet minimal"][0] - lat["resnet in-process"][0] - echo_resnet[0],
            lat["resnet in-process paused"][0] - lat["resnet in-process"][0],
        ),
        rest=(rest_measured, rest_echo_measured, rest_time[0] - rest_echo_time[0], rest_minimal_measured,
              {m: seconds / m.requests * 1e6 for m, seconds in rest_cpu.items()}),
    )
    lines += [
        f"{os.cpu_count()} CPU cores, {args.processes} client processes, {args.seconds:g} s per throughput measure "
        f"(two alternating halves); "
        f"request sizes: ResNet-50 {len(resnet_payload)} B, 1x10 {len(tiny_payload)} B; whole run "
        f"{time.monotonic() - began:.0f} s"
        + (f"; dropin serve {' '.join(args.dropin_arg)}" if args.dropin_arg else ""),
        "",
        "| measure | dropin | reference | ratio / difference | goal | bare gRPC echo of the same bytes |",
        "|---|---|---|---|---|---|",
        f"| (a) ResNet-50 req/s, concurrency 4 | {resnet_rate:.1f} | {ov_resnet_rate:.1f} (AsyncInferQueue in-process) "
        f"| **{ratio_a:.3f}** | >= 0.97 | |",
        f"| (a) in-process ResNet-50 req/s while the same clients send the same bytes at concurrency 4 to a server "
        f"that holds each call {hold_seconds * 1e3:.0f} ms and answers nothing ({traffic_rate:.1f} req/s) | | "
        f"{ceiling_rate:.1f} | "
        f"**{ceiling_rate / ov_resnet_rate:.3f}** of in-process alone | | |",
        f"| (b) 1x10 req/s, concurrency 16 | {tiny_rate:.0f} | {echo_rates[best]:.0f} ({ECHO_NAMES[best]} echo; "
        + ", ".join(f"{ECHO_NAMES[k]} {r:.0f}" for k, r in echo_rates.items())
        + f") | **{ratio_b:.3f}** | >= 0.6 of the thread-pool echo | |",
        f"| (b) the same with dynamic batching (batch_size -1, max_batch_size {BATCHING['max_batch_size']}, "
        f"batch_timeout_micros {BATCHING['batch_timeout_micros']}) | {batched_measured.rate:.0f} | "
        f"{echo_rates[best]:.0f} | "
        f"**{batched_measured.rate / echo_rates[best]:.3f}** | | p50 / p99 at concurrency 1: "
        f"{ms(lat['tiny batched'][0])} / {ms(lat['tiny batched'][1])} ms (every request waits the timeout); "
        f"server CPU {batched_measured.cpu_us:.0f} us per request |",
        f"| (c) 1x10 p50 / p99 ms, concurrency 1 | {ms(lat['tiny dropin'][0])} / {ms(lat['tiny dropin'][1])} | "
        f"{ms(lat['tiny in-process'][0])} / {ms(lat['tiny in-process'][1])} (in-process infer) | "
        f"{diff(lat['tiny dropin'][0] - lat['tiny in-process'][0])} / "
        f"{diff(lat['tiny dropin'][1] - lat['tiny in-process'][1])} | p50 +0.050 over the echo | {ms(echo_tiny[0])} / "
        f"{ms(echo_tiny[1])} ({echo_name}) |",
        f"| (c) ResNet-50 p50 / p99 ms, concurrency 1 | {ms(lat['resnet dropin'][0])} / {ms(lat['resnet dropin'][1])} "
        f"| "
        f"{ms(lat['resnet in-process'][0])} / {ms(lat['resnet in-process'][1])} (in-process infer) | "
        f"{diff(lat['resnet dropin'][0] - lat['resnet in-process'][0])} / "
        f"{diff(lat['resnet dropin'][1] - lat['resnet in-process'][1])} | p50 +0.300 over in-process + echo | "
        f"{ms(echo_resnet[0])} / "
        f"{ms(echo_resnet[1])} |",
        "",
        f"A minimal server (parse, OpenVINO in a thread, serialize) serves {resnet_minimal.rate:.1f} req/s: "
        f"minimal / in-process {resnet_minimal.rate / ov_resnet_rate:.3f}, dropin / minimal "
        f"{resnet_rate / resnet_minimal.rate:.3f}; "
        f"its p50 / p99 at concurrency 1 "
        f"{ms(lat['resnet minimal'][0])} / {ms(lat['resnet minimal'][1])} ms.",
        "",
        "The floor of any Python front end, for comparison: a minimal grpc.aio server on uvloop that only parses the",
        "request, runs OpenVINO on the loop and serializes the output (no validation, no model table, no errors):",
        "",
        "| 1x10 model | dropin | minimal server | dropin / minimal | bare echo |",
        "|---|---|---|---|---|",
        f"| req/s, concurrency 16 | {tiny_rate:.0f} | {minimal_rate:.0f} | {tiny_rate / minimal_rate:.3f} | "
        f"{echo_rates[best]:.0f} (minimal / echo {minimal_rate / echo_rates[best]:.3f}) |",
        f"| server CPU per request (every thread), concurrency 16 | {tiny_measured.cpu_us:.0f} us | "
        f"{minimal_measured.cpu_us:.0f} us | "
        f"{tiny_measured.cpu_us - minimal_measured.cpu_us:+.0f} us | {echoes_measured['uvloop'].cpu_us:.0f} us "
        f"(grpc.aio on uvloop; {echoes_measured['aio'].cpu_us:.0f} us on asyncio's loop) |",
        f"| p50 / p99 ms, concurrency 1 | {ms(lat['tiny dropin'][0])} / {ms(lat['tiny dropin'][1])} | "
        f"{ms(lat['tiny minimal'][0])} / {ms(lat['tiny minimal'][1])} | "
        f"{diff(lat['tiny dropin'][0] - lat['tiny minimal'][0])} ms at p50 | {ms(echo_tiny[0])} / {ms(echo_tiny[1])} |",
    ]
    lines += side_by_side(
        {
            "dropin": (tiny_measured, lat["tiny dropin"][0]),
            "thread-pool gRPC echo": (echoes_measured["thread"], echo_times["thread"][0]),
            "grpc.aio echo on uvloop": (echoes_measured["uvloop"], echo_times["uvloop"][0]),
            f"minimal thread-pool server ({MINIMAL_THREADS} threads, OpenVINO in the handler thread)": (
                minimal_pool_measured,
                lat["tiny minimal pool"][0],
            ),
            "minimal grpc.aio server on uvloop (OpenVINO on the loop)": (minimal_measured, lat["tiny minimal"][0]),
        },
        echo_times,
    )
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if echoes_measured["thread"].rate < args.min_echo:
        sys.exit(
            f"FAILED: the thread-pool echo served {echoes_measured['thread'].rate:.0f} req/s, below --min-echo "
            f"{args.min_echo:.0f}: the reference is starved (clients on cores {sorted(client_cores)}, servers on "
            f"{sorted(server_cores)}; is the machine busy?), every ratio above flatters the servers"
        )


def goals(
    tiny: float, tiny_c1: tuple[float, float], resnet: tuple[float, float, float],
    resnet_c1: tuple[float, float, float], rest: Any,
) -> list[str]:
    """The issue's goals, each with this run's figure. `resnet`: dropin, the ceiling and the minimal
    server, each / in-process; `resnet_c1`: what dropin and the minimal server add at concurrency 1
    to in-process inference plus the echo, and what a pause as long as the echo adds in-process."""
    rest_measured, rest_echo, rest_c1, rest_minimal, rest_cpu_us = rest
    resnet_ratio, ceiling, resnet_minimal = resnet
    resnet_added, resnet_minimal_added, resnet_paused = resnet_c1
    rest_ratio = rest_measured.rate / rest_echo.rate
    rows = [
        ("1x10 req/s at concurrency 16 / thread-pool echo", f"{tiny:.3f}", ">= 0.6 (aim 0.8)", tiny >= 0.6),
        ("1x10 p50 at concurrency 1, added to the thread-pool echo of the same bytes", f"{tiny_c1[0] * 1e3:+.3f} ms",
         "<= +0.050 ms", tiny_c1[0] <= 50e-6),
        ("1x10 p50 at concurrency 1, added to in-process inference", f"{tiny_c1[1] * 1e3:+.3f} ms", "(reported)", None),
        ("ResNet-50 req/s at concurrency 4 / in-process", f"{resnet_ratio:.3f}", ">= 0.97", resnet_ratio >= 0.97),
        ("ResNet-50: in-process while the same clients send the same bytes to a server that only holds "
         f"them (the ceiling of any server on this machine); the minimal server {resnet_minimal:.3f}",
         f"{ceiling:.3f} (dropin / ceiling {resnet_ratio / ceiling:.3f})", "(reported)", None),
        ("ResNet-50 p50 at concurrency 1, added to in-process inference plus the echo of its bytes; the "
         f"minimal server {resnet_minimal_added * 1e3:+.3f} ms",
         f"{resnet_added * 1e3:+.3f} ms", "<= +0.300 ms", resnet_added <= 300e-6),
        ("ResNet-50 in-process inference after a pause as long as the echo's round trip, as a server's "
         "inference at concurrency 1 comes, over in-process back to back", f"{resnet_paused * 1e3:+.3f} ms",
         "(reported)", None),
        (f"REST 1x10 req/s at concurrency 16 ({rest_measured.rate:.0f}) / bare aiohttp echo of the same body "
         f"({rest_echo.rate:.0f}); a minimal REST server (parse, infer on the loop, answer) "
         f"{rest_minimal.rate / rest_echo.rate:.3f}", f"{rest_ratio:.3f}", ">= 0.95", rest_ratio >= 0.95),
        ("REST 1x10 p50 added to the aiohttp echo, at concurrency 16 / 1",
         f"{(rest_measured.p50 - rest_echo.p50) * 1e3:+.3f} / {rest_c1 * 1e3:+.3f} ms", "(reported)", None),
        ("REST server CPU per request: dropin / minimal REST server / aiohttp echo",
         " / ".join(f"{rest_cpu_us[m]:.0f} us" for m in (rest_measured, rest_minimal, rest_echo)), "(reported)", None),
    ]
    lines = ["| goal | this run | target | met |", "|---|---|---|---|"]
    for name, figure, target, met in rows:
        lines.append(f"| {name} | **{figure}** | {target} | {'' if met is None else ('yes' if met else 'NO')} |")
    return [*lines, ""]


def side_by_side(servers: dict[str, tuple[Measured, float]], echo_c1: dict[str, tuple[float, float]]) -> list[str]:
    """(d): every server on the 1x10 model at concurrency 16, and at concurrency 1 what each adds to
    the echo of the same bytes (same client process, same payload)."""
    reference = servers["thread-pool gRPC echo"][0].rate
    lines = [
        "",
        "(d) 1x10 f32 model, the same pinned clients and bytes for every server; ratio to the thread-pool echo; "
        "at concurrency 1 (one synchronous client) the p50 each server adds to each echo's p50:",
        "",
        "| server | req/s, conc. 16 | p50 ms, conc. 16 | / thread-pool echo | p50 ms, conc. 1 "
        "| + over thread-pool echo | + over grpc.aio uvloop echo |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (measured, p50_c1) in servers.items():
        lines.append(
            f"| {name} | {measured.rate:.0f} | {measured.p50 * 1e3:.3f} | **{measured.rate / reference:.3f}** | "
            f"{p50_c1 * 1e3:.3f} | {(p50_c1 - echo_c1['thread'][0]) * 1e3:+.3f} | "
            f"{(p50_c1 - echo_c1['uvloop'][0]) * 1e3:+.3f} |"
        )
    return lines


if __name__ == "__main__":
    main()
