#!/usr/bin/env python3
"""The REST side of serving_overhead.py: dropin's REST :predict against a bare aiohttp echo of the
same body, and against the least a REST front end does, with the same clients.

The echo server (aiohttp on uvloop, what dropin's REST port runs on) answers every POST with the
bytes it received. The minimal server parses the row-format body with orjson (as dropin does),
copies the one input into an OpenVINO request's own tensor, infers on the loop and answers
`{"predictions": ...}`: no validation, no model table, no errors. The load generator's processes
(serving_overhead.LoadGenerator's pool, pinned to the client cores) each keep `concurrency /
processes` aiohttp requests in flight, the JSON body encoded once; concurrency 1 is one keep-alive
http.client connection, one request at a time.

    python benchmarks/rest_overhead.py --echo            # runs the echo server, prints its port
    python benchmarks/rest_overhead.py --minimal X.xml   # runs the minimal server, prints its port
"""

from __future__ import annotations

import asyncio
import http.client
import subprocess
import sys
import time
from typing import Any

HEADERS = {"Content-Type": "application/json"}


def echo_server() -> None:
    """A bare aiohttp server on uvloop answering every POST with its body; prints the port."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/json")

    serve(echo)


def minimal_server(model_xml: str) -> None:
    """The least a REST predict does: parse, infer on the loop, answer; prints the port."""
    from aiohttp import web

    from dropin_openvino.runtime import ov  # OpenVINO quietly, with its numpy bridge set up

    compiled = ov.Core().compile_model(model_xml, "CPU")
    request = compiled.create_infer_request()
    tensor = ov.Tensor(compiled.inputs[0].get_element_type(), compiled.inputs[0].get_shape())
    request.set_input_tensor(0, tensor)
    view = tensor.data

    async def predict(http: web.Request) -> web.Response:
        return web.Response(body=minimal_answer(request, view, await http.read()), content_type="application/json")

    serve(predict)


def minimal_answer(request: Any, view: Any, body: bytes) -> bytes:
    """The minimal server's work on one body: the row format's one input copied into the OpenVINO
    request's input tensor (`view`, a numpy view of it), inferred, answered as `predictions`."""
    import numpy as np
    import orjson

    view[...] = np.asarray(orjson.loads(body)["instances"], np.float32)
    result = request.infer(share_outputs=False).to_tuple()[0]
    return orjson.dumps({"predictions": result}, option=orjson.OPT_SERIALIZE_NUMPY)


def serve(handler: Any) -> None:
    """An aiohttp server on uvloop with `handler` for every POST; prints its port."""
    import uvloop
    from aiohttp import web

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
        await asyncio.Event().wait()

    uvloop.run(main())


def start_echo() -> tuple[subprocess.Popen[str], int]:
    return _start("--echo")


def start_minimal(model_xml: str) -> tuple[subprocess.Popen[str], int]:
    return _start("--minimal", model_xml)


def _start(*args: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def drive(port: int, path: str, body: bytes, inflight: int, seconds: float, start_at: float) -> tuple[int, list[float]]:
    """One client process: `inflight` concurrent POSTs, back to back; the completed requests and
    every request's latency."""
    import aiohttp

    async def run() -> tuple[int, list[float]]:
        connector = aiohttp.TCPConnector(limit=inflight)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", connector=connector) as session:
            async def once() -> None:
                async with session.post(path, data=body, headers=HEADERS) as response:
                    await response.read()
                    assert response.status == 200, response.status

            await asyncio.gather(*(once() for _ in range(inflight)))
            while time.time() < start_at:
                await asyncio.sleep(0.001)
            stop = time.monotonic() + seconds
            times: list[float] = []

            async def loop() -> None:
                while time.monotonic() < stop:
                    started = time.perf_counter()
                    await once()
                    times.append(time.perf_counter() - started)

            await asyncio.gather(*(loop() for _ in range(inflight)))
            return len(times), times

    return asyncio.run(run())


class RestMeasured:
    """Requests and latencies of one REST server over the throughput phases."""

    def __init__(self) -> None:
        self.requests = 0
        self.seconds = 0.0
        self.latencies: list[float] = []

    def run(self, pool: Any, processes: int, port: int, path: str, body: bytes, concurrency: int,
            seconds: float) -> None:
        shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
        start_at = time.time() + 1.0
        futures = [pool.submit(drive, port, path, body, n, seconds, start_at) for n in shares]
        for future in futures:
            done, times = future.result()
            self.requests += done
            self.latencies += times
        self.seconds += seconds

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def p50(self) -> float:
        return sorted(self.latencies)[len(self.latencies) // 2]


def sequential(port: int, path: str, body: bytes, n: int, warmup: int = 200) -> list[float]:
    """Concurrency 1: one keep-alive connection, one request at a time (run in a client process)."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    times = []
    for i in range(warmup + n):
        started = time.perf_counter()
        conn.request("POST", path, body=body, headers=HEADERS)
        response = conn.getresponse()
        data = response.read()
        assert response.status == 200, data
        if i >= warmup:
            times.append(time.perf_counter() - started)
    conn.close()
    return times


if __name__ == "__main__":
    if sys.argv[1:] == ["--echo"]:
        echo_server()
    elif sys.argv[1:2] == ["--minimal"] and len(sys.argv) == 3:
        minimal_server(sys.argv[2])
    else:
        sys.exit(__doc__)
