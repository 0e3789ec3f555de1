"""`dropin serve --workers 2` as users run it: one port for two server processes, requests spread
over both, reloads and /metrics covering both, a killed worker restarted, a clean SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropin._proto.tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)
from dropin.dtypes import DType
from dropin.metrics import GRPC, PREDICT, Metrics
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.fake_plugins import SLOW_PLUGIN, install_fake_distribution
from dropin.testing.numpy_models import NumpyModelWriter
from dropin.testing.server import DropinServer, free_port
from dropin.workers.metrics_merge import WorkerCounters, merged, requests_total, snapshot

READY = r"initial model loading finished: server ready \(2 workers: pids (\d+), (\d+)\)"
AVAILABLE = 30


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model like the bundled digits one: image FP32 [-1, 8, 8, 1] -> probabilities FP32 [-1, 10]
    (a dense layer over the 64 pixels) and label I64 [-1], on the numpy backend."""
    base = tmp_path_factory.mktemp("workers") / "digits"
    rng = np.random.default_rng(0)
    model = NumpyModelWriter()
    pixels = model.node("reshape", model.input("image", DType.FP32, (-1, 8, 8, 1)), shape=[-1, 64])
    w = model.weight("w", rng.standard_normal((64, 10)).astype(np.float32) / 64)
    b = model.weight("b", rng.standard_normal(10).astype(np.float32))
    logits = model.node("dense", pixels, w, b)
    model.output(model.node("argmax", logits, axis=-1), "label", DType.I64, (-1,))
    model.output(logits, "probabilities", DType.FP32, (-1, 10))
    model.save(base / "1")
    return base


def start_workers(start_server, *args: str, env: dict[str, str] | None = None) -> tuple[DropinServer, list[int]]:
    """A `--workers 2` server, returned once every worker is ready, with the workers' pids."""
    server = start_server("--workers", "2", *args, env=env)
    match = server.wait_for_log(READY, timeout=60)
    return server, [int(match.group(1)), int(match.group(2))]


class Fresh:
    """A channel of its own (not shared with other channels to the same address, as gRPC does by
    default): a new TCP connection, which the kernel hands to any of the workers."""

    def __init__(self, port: int) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def __enter__(self) -> Fresh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()


def state_on_fresh_connection(port: int, name: str) -> int:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    with Fresh(port) as fresh:
        try:
            return fresh.models.GetModelStatus(request, timeout=10).model_version_status[0].state
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
            return -1


def metrics(rest_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{rest_port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def predict_successes(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "ovms_requests_success":
            return sum(s.value for s in family.samples
                       if s.labels.get("method") == "Predict" and s.labels.get("interface") == "gRPC")
    return 0.0


def pids_gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        return False
    return True


def test_metrics_of_several_workers_add_up_but_streams_do_not() -> None:
    workers = [Metrics(), Metrics(), Metrics()]
    for n, m in enumerate(workers, 1):
        for _ in range(n):
            probe = m.probe(GRPC, PREDICT)
            probe.served("m", 1, streams=4).observe_inference(None, 0.001 * n)
            probe.done(True)
        m.model("m", 1).current_requests = n
    workers[2].probe(GRPC, PREDICT).served("only-here", 2).current_requests = 0
    snaps = [json.loads(json.dumps(snapshot(m))) for m in workers[1:]]  # as they cross the channel
    assert [s["requests"] for s in snaps] == [2, 3]
    total = {f.name: f for f in text_string_to_metric_families(merged(workers[0], snaps).render().decode())}
    value = lambda family, suffix="", **labels: next(s.value for s in total[family].samples  # noqa: E731
                                                     if s.name == family + suffix
                                                     and all(s.labels.get(k) == v for k, v in labels.items()))
    assert value("ovms_requests_success", "_total", method="Predict", name="m") == 6
    assert value("ovms_inference_time_us", "_count", name="m") == 6
    assert value("ovms_inference_time_us", "_sum", name="m") == pytest.approx(1000 + 2 * 2000 + 3 * 3000)
    assert value("ovms_current_requests", name="m") == 6
    assert value("ovms_streams", name="m") == 4
    assert value("ovms_current_requests", name="only-here") == 0
    assert requests_total(workers[0]) == 1  # the local counters are left as they were


def test_the_supervisor_keeps_the_latest_counters_of_a_worker_that_exited() -> None:
    worker = Metrics()
    snaps = []
    for seq in (1, 2):
        probe = worker.probe(GRPC, PREDICT)
        probe.served("m", 1, streams=4)
        probe.done(True)
        worker.model("m", 1).current_requests = 3
        snaps.append({"pid": 11, "seq": seq, **json.loads(json.dumps(snapshot(worker)))})
    counters = WorkerCounters()
    assert not counters.reported(snaps[0])  # a pid it never started
    counters.started(11)
    assert counters.reported(snaps[1]) and counters.reported(snaps[0])  # the older one arrives late
    assert counters.exited_snapshot() is None
    counters.exited(11)
    assert not counters.reported(snaps[1])  # gone: its counts are in the exited sum, not twice
    total = {
        f.name: f
        for f in text_string_to_metric_families(merged(Metrics(), [counters.exited_snapshot()]).render().decode())
    }
    assert [s.value for s in total["ovms_requests_success"].samples if s.labels.get("method") == "Predict"
            and s.labels["interface"] == "gRPC"] == [2]  # the latest snapshot, not the late older one
    assert [s.value for s in total["ovms_current_requests"].samples] == [0]  # gauges are not carried over
    assert "ovms_streams" not in total or not total["ovms_streams"].samples


def test_two_workers_share_the_port_and_metrics_count_both(start_server, digits: Path) -> None:
    rest_port = free_port()
    server, pids = start_workers(start_server, "--model_name", "digits", "--model_path", str(digits),
                                 "--rest_port", str(rest_port), "--metrics_enable")
    assert len(set(pids)) == 2 and server.proc.pid not in pids
    rng = np.random.default_rng(8)
    images = [rng.random((2, 8, 8, 1), dtype=np.float32) * 16 for _ in range(40)]

    def call(image: np.ndarray) -> dict[str, np.ndarray]:
        with Fresh(server.port) as fresh:
            return outputs_of(fresh.predict.Predict(predict_request("digits", {"image": image}), timeout=20))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, images))
    for image, outputs in zip(images, results, strict=True):
        expected = modelgen.run_numpy(digits / "1", {"image": image})["probabilities"]
        np.testing.assert_allclose(outputs["probabilities"], expected, rtol=1e-6)
    for _ in range(6):  # each scrape is a new connection: any worker answers, with everyone's counts
        text = metrics(rest_port)
        assert predict_successes(text) == len(images)
    served = {
        int(pid): int(n) for pid, n in re.findall(r"^# dropin worker \d \(pid (\d+)\): (\d+) requests$", text, re.M)
    }
    assert set(served) == set(pids) and all(served.values()) and sum(served.values()) == len(images), served
    # the port is shared by the workers only: an unrelated server (single or --workers) cannot join
    for workers in ("1", "2"):
        other = subprocess.run(
            [
                sys.executable,
                "-m",
                "dropin",
                "serve",
                "--workers",
                workers,
                "--port",
                str(server.port),
                "--model_name",
                "digits",
                "--model_path",
                str(digits),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert other.returncode == 1 and "Address already in use" in other.stderr, other.stderr


def test_a_taken_port_is_a_clear_error(digits: Path) -> None:
    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        for flags, what in ((["--port", str(port)], "gRPC"), (["--port", "0", "--rest_port", str(port)], "REST")):
            result = subprocess.run(
                [sys.executable, "-m", "dropin", "serve", "--workers", "2", *flags,
                 "--model_name", "digits", "--model_path", str(digits)],
                capture_output=True, text=True, timeout=60,
            )
            assert result.returncode == 1, result.stderr
            assert f"cannot listen for {what} on 0.0.0.0:{port}: Address already in use" in result.stderr
            assert "worker 1 started" not in result.stderr  # refused before starting any worker


def test_a_worker_that_cannot_start_stops_the_server_with_its_exit_code(digits: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dropin", "serve", "--workers", "2", "--port", "0",
         "--model_name", "digits", "--model_path", str(digits), "--backend", "nope"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "which no installed plugin provides" in result.stderr
    assert re.search(
        r"worker \d \(pid \d+\) exited with exit code 2 before the server was ready: stopping", result.stderr
    )


def test_reloads_reach_every_worker_and_a_killed_worker_comes_back(start_server, tmp_path: Path, digits: Path) -> None:
    modelgen.scale_model(tmp_path / "scale" / "1", shape=(-1, 2), factor=3.0)
    modelgen.scale_model(tmp_path / "later" / "1", shape=(-1, 2), factor=5.0)
    config = tmp_path / "config.json"
    entries = [{"config": {"name": "digits", "base_path": str(digits)}}]
    config.write_text(json.dumps({"model_config_list": entries}))
    rest_port = free_port()
    # no file watching: only the relays can make every worker agree
    server, pids = start_workers(start_server, "--config_path", str(config), "--file_system_poll_wait_seconds", "0",
                                 "--rest_port", str(rest_port),
                                 "--reload_config_enable", "--reload_config_roots", f"{tmp_path},{digits.parent}")

    request = model_management_pb2.ReloadConfigRequest()
    for name, path in (("digits", digits), ("scale", tmp_path / "scale")):
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path = name, str(path)
    response = server.models.HandleReloadConfigRequest(request, timeout=30)
    assert response.status.error_code == 0, response
    assert [state_on_fresh_connection(server.port, "scale") for _ in range(16)] == [AVAILABLE] * 16

    # SIGKILL a worker while requests keep coming: the other one answers them meanwhile
    stop, outcomes, errors = threading.Event(), [], []

    def load() -> None:
        while not stop.is_set():
            try:
                with Fresh(server.port) as fresh:
                    fresh.predict.Predict(predict_request("scale", {"x": np.ones((1, 2), np.float32)}), timeout=5)
                outcomes.append((time.monotonic(), True))
            except grpc.RpcError as exc:
                outcomes.append((time.monotonic(), False))
                errors.append(f"{exc.code()}: {exc.details()}")

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(0.3)
        killed = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        server.wait_for_log(rf"worker 1 \(pid {pids[0]}\) exited with signal SIGKILL; restarting it in")
        new_pid = int(server.wait_for_log(r"worker 1 \(pid (\d+)\) ready", timeout=60).group(1))
        back = time.monotonic()
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(30)
    assert new_pid not in pids and pids_gone([pids[0]])
    meanwhile = [ok for t, ok in outcomes if killed + 0.2 < t < back]
    assert meanwhile and all(meanwhile), errors
    assert sum(ok for _, ok in outcomes) >= len(outcomes) - 2  # at most the calls cut by the kill
    # the restarted worker got the reload replayed: every connection still sees "scale"
    assert [state_on_fresh_connection(server.port, "scale") for _ in range(16)] == [AVAILABLE] * 16

    # POST /v1/config/reload re-reads config.json on every worker
    entries.append({"config": {"name": "later", "base_path": str(tmp_path / "later")}})
    config.write_text(json.dumps({"model_config_list": entries}))
    reply = urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{rest_port}/v1/config/reload", method="POST"), timeout=30
    )
    assert reply.status == 201 and "later" in json.loads(reply.read())
    assert [state_on_fresh_connection(server.port, "later") for _ in range(16)] == [AVAILABLE] * 16
    config.write_text("{not json")  # refused as a single server refuses it, the models stay
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{rest_port}/v1/config/reload", method="POST"),
                               timeout=30)
    error = json.loads(info.value.read())["error"]
    assert info.value.code == 500 and error.startswith("Reloading config file failed - Invalid configuration - "), error
    assert error.count("Invalid configuration") == 1
    assert [state_on_fresh_connection(server.port, "later") for _ in range(4)] == [AVAILABLE] * 4


def test_reload_config_request_reaches_no_worker_unless_enabled_and_inside_the_roots(
    start_server, tmp_path: Path
) -> None:
    modelgen.scale_model(tmp_path / "scale" / "1", shape=(-1, 2), factor=3.0)
    procfs = model_management_pb2.ReloadConfigRequest()
    entry = procfs.config.model_config_list.config.add()
    entry.name, entry.base_path = "procfs", "/proc"
    for flags in ([], ["--reload_config_enable", "--reload_config_roots", str(tmp_path)]):
        server, _ = start_workers(
            start_server, "--model_name", "scale", "--model_path", str(tmp_path / "scale"), *flags
        )
        if flags:
            with pytest.raises(grpc.RpcError) as info:
                server.models.HandleReloadConfigRequest(procfs, timeout=30)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info.value.details() == (f"Invalid configuration - model 'procfs': base_path /proc is outside "
                                            f"--reload_config_roots ({tmp_path.resolve()})")
        else:  # off: OVMS's answer, OK and nothing changed
            assert not server.models.HandleReloadConfigRequest(procfs, timeout=30).HasField("status")
        # every worker still serves "scale" alone
        assert [state_on_fresh_connection(server.port, "scale") for _ in range(16)] == [AVAILABLE] * 16
        assert [state_on_fresh_connection(server.port, "procfs") for _ in range(16)] == [-1] * 16
        server.stop()


def test_sigterm_answers_requests_in_flight_and_leaves_no_process(start_server, tmp_path: Path) -> None:
    site = tmp_path / "site"
    install_fake_distribution(site, "dropin_slow", {"slow": "slow_plugin"}, {"slow_plugin": SLOW_PLUGIN})
    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "slow.txt").write_text("1.0")
    server, pids = start_workers(start_server, "--model_name", "m", "--model_path", str(tmp_path / "m"),
                                 "--shutdown_grace_seconds", "10", env={"PYTHONPATH": str(site)})
    x = np.ones((1, 2), np.float32)

    def call(i: int) -> np.ndarray:
        with Fresh(server.port) as fresh:
            return outputs_of(fresh.predict.Predict(predict_request("m", {"x": x * i}), timeout=30))["y"]

    with ThreadPoolExecutor(10) as pool:
        in_flight = [pool.submit(call, i) for i in range(10)]
        time.sleep(0.5)  # all inside the model now, on both workers
        server.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in in_flight]
    for i, y in enumerate(results):
        np.testing.assert_array_equal(y, x * i * 2)
    assert server.proc.wait(30) == 0
    server._reader.join(10)
    assert pids_gone(pids)
    assert server.log.count("[dropin.server] stopped") == 2 and server.log.rstrip().endswith("[dropin.workers] stopped")


def cumulative_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the counters and histograms (not the gauges), by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) if family.type in ("counter", "histogram")
        for sample in family.samples
    }


def test_counters_never_go_down_when_a_worker_is_killed_and_restarts(start_server, digits: Path) -> None:
    rest_port = free_port()
    server, pids = start_workers(start_server, "--model_name", "digits", "--model_path", str(digits),
                                 "--rest_port", str(rest_port), "--metrics_enable")
    good = np.ones((1, 8, 8, 1), np.float32)
    bad = np.ones((1, 8, 8, 2), np.float32)  # a failed request: ovms_requests_fail counts too

    def call(image: np.ndarray) -> bool:
        with Fresh(server.port) as fresh:
            try:
                fresh.predict.Predict(predict_request("digits", {"image": image}), timeout=20)
                return True
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc
                return False

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(call, [good] * 40 + [bad] * 10)) == 40
    text = metrics(rest_port)
    assert predict_successes(text) == 40
    served = {
        int(pid): int(n) for pid, n in re.findall(r"^# dropin worker \d \(pid (\d+)\): (\d+) requests$", text, re.M)
    }
    assert set(served) == set(pids) and all(served.values()), served  # both workers hold counts
    before = cumulative_samples(text)
    assert before

    victim = max(served, key=lambda pid: served[pid])
    os.kill(victim, signal.SIGKILL)
    index = int(server.wait_for_log(rf"worker (\d) \(pid {victim}\) exited with signal SIGKILL").group(1))
    server.wait_for_log(rf"worker {index} \(pid \d+\) ready", timeout=60)

    def never_below(text: str) -> None:
        now = cumulative_samples(text)
        lower = {key: (value, now.get(key)) for key, value in before.items() if now.get(key, -1) < value}
        assert not lower, f"{len(lower)} samples went down, e.g. {list(lower.items())[:3]}"

    for _ in range(8):  # each scrape is a new connection: either worker answers
        text = metrics(rest_port)
        never_below(text)
        assert predict_successes(text) == 40
    assert re.search(r"^# dropin workers that exited: \d+ requests, still counted$", text, re.M), text
    with ThreadPoolExecutor(8) as pool:  # and they count on from there
        assert sum(pool.map(call, [good] * 20)) == 20
    for _ in range(4):
        text = metrics(rest_port)
        never_below(text)
        assert predict_successes(text) == 60
