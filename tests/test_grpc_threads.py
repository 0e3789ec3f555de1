"""gRPC calls served by grpc's thread-pool server: `--grpc_max_threads` sets its threads; a
Predict runs in its handler thread when the model offers `infer_now`, and on the event loop
otherwise (metrics on, a version still loading), with the same answers; a servable is taken and
released from any thread, and a version swap never fails a request nor closes a version in use."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from dropin.models import Servable
from dropin.testing import numpy_models
from dropin.testing.load import Hammer
from dropin.testing.server import DropinServer, free_port


def slow_scale(version_dir: Path, delay: float, factor: float = 2.0) -> None:
    numpy_models.scale_model(version_dir, shape=(-1, 2), factor=factor)
    spec = json.loads((version_dir / "numpy_model.json").read_text())
    spec["delay_seconds"] = delay
    (version_dir / "numpy_model.json").write_text(json.dumps(spec))


def timed_predicts(server: DropinServer, calls: int) -> float:
    x = np.ones((1, 2), np.float32)
    started = time.monotonic()
    with ThreadPoolExecutor(calls) as pool:
        results = list(pool.map(lambda _: server.client.predict("m", {"x": x}), range(calls)))
    assert all(np.array_equal(r["y"], x * 2) for r in results)
    return time.monotonic() - started


def test_grpc_max_threads_bounds_the_calls_served_at_once(start_server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    slow_scale(repo / "m" / "1", delay=0.4)
    server = start_server(*["--model_name", "m", "--model_path", str(repo / "m"), "--nireq", "8",
                           "--grpc_max_threads", "2"])
    server.wait_for("m", 1)
    assert "gRPC: 2 threads serve calls (--grpc_max_threads)" in server.log
    assert "grpc_max_threads" not in "".join(line for line in server.log_lines if "WARNING" in line)
    # 6 calls of 0.4 s on 2 threads: three rounds, although the model could run 8 at once
    assert timed_predicts(server, 6) >= 1.1


def test_grpc_max_threads_refuses_zero(start_server) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError, match="--grpc_max_threads: must be at least 1, got 0"):
        start_server(*["--grpc_max_threads", "0"])


def test_same_answers_in_the_handler_thread_and_on_the_loop(start_server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    numpy_models.scale_model(repo / "m" / "1", shape=(-1, 2), factor=3.0)
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    answers = []
    for extra in ([], ["--metrics_enable", "--rest_port", str(free_port())]):  # metrics on: on the loop
        server = start_server(*["--model_name", "m", "--model_path", str(repo / "m"), *extra])
        server.wait_for("m", 1)
        answers.append(server.client.predict("m", {"x": x}))
        with pytest.raises(grpc.RpcError) as error:
            server.client.predict("m", {"x": np.ones((1, 3), np.float32)})
        answers.append((error.value.code(), error.value.details()))
        with pytest.raises(grpc.RpcError) as error:
            server.client.predict("nope", {"x": x})
        answers.append((error.value.code(), error.value.details()))
    fast, loop = answers[:3], answers[3:]
    assert np.array_equal(fast[0]["y"], x * 3) and np.array_equal(loop[0]["y"], x * 3)
    assert fast[1:] == loop[1:]
    assert fast[1][0] == grpc.StatusCode.INVALID_ARGUMENT and fast[2][0] == grpc.StatusCode.NOT_FOUND


def test_predicts_in_threads_survive_version_swaps(start_server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    slow_scale(repo / "m" / "1", delay=0.02, factor=1.0)
    server = start_server(*["--model_name", "m", "--model_path", str(repo / "m"), "--nireq", "8",
                           "--file_system_poll_wait_seconds", "0.1"])
    server.wait_for("m", 1)
    x = np.ones((1, 2), np.float32)

    def predict() -> None:
        y = server.client.predict("m", {"x": x})["y"]
        assert y[0, 0] in (1.0, 2.0, 3.0, 4.0), y

    with Hammer(predict, threads=6) as load:
        for version in (2, 3, 4):
            time.sleep(0.3)
            slow_scale(repo / "m" / str(version), delay=0.02, factor=float(version))
            server.wait_for("m", version)
            server.wait_for("m", version - 1, "END")
        time.sleep(0.3)
    assert not load.failures, load.failures[:3]
    assert load.answered > 50
    assert "Traceback" not in server.log


def test_a_servable_is_taken_and_released_from_threads_and_retired_once_drained() -> None:
    servable = Servable("m", 1, object(), (), "numpy")  # type: ignore[arg-type]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        assert servable.take()  # one request in flight throughout

        def requests() -> None:  # handler threads: take and release until it is retired
            while servable.take():
                servable.release()

        threads = [threading.Thread(target=requests) for _ in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.sleep(0.05)
        drained = loop.create_task(servable.drained())
        await loop.run_in_executor(None, lambda: [t.join() for t in threads])  # they stop: retired
        assert servable.in_flight == 1 and not drained.done()  # no count lost, the request still holds it
        assert not servable.take()
        await loop.run_in_executor(None, servable.release)  # the last one, from another thread
        await asyncio.wait_for(drained, 5)

    asyncio.run(scenario())
    assert servable.in_flight == 0 and servable.retired


def test_metrics_count_every_request_of_handler_threads_and_the_loop(start_server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    numpy_models.scale_model(repo / "m" / "1", shape=(-1, 2), factor=2.0)
    server = start_server(*["--model_name", "m", "--model_path", str(repo / "m"), "--metrics_enable",
                            "--rest_port", str(free_port()), "--nireq", "4"])
    server.wait_for("m", 1)
    x = np.ones((1, 2), np.float32)
    calls = 300

    def grpc_call(_: int) -> None:
        server.client.predict("m", {"x": x})

    def rest_call(_: int) -> None:
        server.rest.predict("m", {"x": x})

    with ThreadPoolExecutor(12) as pool:  # gRPC in the server's threads, REST on its loop, at once
        list(pool.map(lambda i: (grpc_call if i % 2 else rest_call)(i), range(2 * calls)))
    status, text = server.rest.request("GET", "/metrics")
    assert status == 200 and isinstance(text, str)
    lines = text.splitlines()

    def value(prefix: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(prefix))

    assert value('ovms_requests_success{api="TensorFlowServing",interface="gRPC",method="Predict",name="m"') == calls
    assert value('ovms_requests_success{api="TensorFlowServing",interface="REST",method="Predict",name="m"') == calls
    assert any(line.startswith('ovms_current_requests{name="m"') for line in lines)
    assert value('ovms_current_requests{name="m"') == 0
    assert value('ovms_inference_time_us_count{name="m"') == 2 * calls


def test_a_call_that_ends_while_waiting_on_the_loop_frees_its_thread(start_server, repo: Path) -> None:  # type: ignore[no-untyped-def]
    numpy_models.scale_model(repo / "m" / "1", shape=(-1, 2), factor=2.0)
    gate = repo / "gate"
    spec = json.loads((repo / "m" / "1" / "numpy_model.json").read_text())
    spec["load_gate"] = str(gate)  # the version loads once this file exists
    (repo / "m" / "1" / "numpy_model.json").write_text(json.dumps(spec))
    server = start_server(*["--model_name", "m", "--model_path", str(repo / "m"), "--grpc_max_threads", "1"])
    server.wait_for("m", 1, "LOADING")
    x = np.ones((1, 2), np.float32)
    with pytest.raises(grpc.RpcError) as error:  # waits on the loop for the version being loaded
        server.client.predict("m", {"x": x}, version=1, timeout=0.5)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the only thread is free again at once, not after the 10 s the loop would have waited
    started = time.monotonic()
    assert server.client.status("m")[1][0] == "LOADING"
    assert time.monotonic() - started < 5
    gate.touch()
    server.wait_for("m", 1)
    np.testing.assert_array_equal(server.client.predict("m", {"x": x})["y"], x * 2)
    assert "Traceback" not in server.log
