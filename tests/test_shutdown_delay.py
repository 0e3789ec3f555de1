"""--shutdown_delay_seconds on a real server process: after SIGTERM the server reports not ready
(REST /v2/health/ready 503, gRPC health NOT_SERVING) but serves on for the delay, then stops as
without it (drain, exit 0)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.expect import expect
from dropin.testing.raw_http import get
from dropin.testing.server import DropinServer, free_port

X = np.arange(6, dtype=np.float32).reshape(3, 2)
DELAY = 3.0


def health(server: DropinServer) -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def predict(server: DropinServer) -> np.ndarray:
    return outputs_of(server.predict.Predict(predict_request("m", {"x": X}), timeout=5))["y"]


def test_sigterm_reports_not_ready_serves_through_the_delay_then_exits_0(start_server, repo: Path) -> None:
    version = modelgen.scale_model(repo / "1", shape=(-1, 2), factor=2.0)
    expected = modelgen.run_numpy(version, {"x": X})["y"]
    server = start_server("--model_name", "m", "--model_path", str(repo), "--rest_port", str(free_port()),
                          "--shutdown_delay_seconds", str(DELAY), "--shutdown_grace_seconds", "5")
    server.wait_for("m", 1)
    server.wait_for_log("server ready")
    assert get(server, "/v2/health/ready").status == 200
    assert health(server) == health_pb2.HealthCheckResponse.SERVING

    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for_log(r"not ready, still serving for 3 s \(--shutdown_delay_seconds\)", timeout=DELAY)
    checked = 0
    while time.monotonic() - signalled < DELAY - 0.5:  # all through the delay:
        not_ready = "Server is not ready - loading the initial models, or shutting down"
        expect(get(server, "/v2/health/ready"), 503, not_ready)
        assert health(server) == health_pb2.HealthCheckResponse.NOT_SERVING
        np.testing.assert_array_equal(predict(server), expected)  # ... and requests are still served
        assert get(server, "/v2/health/live").status == 200
        np.testing.assert_array_equal(server.rest.predict("m", {"x": X})["y"], expected)
        checked += 1
        time.sleep(0.1)
    assert checked >= 10
    assert server.proc.wait(DELAY + 10) == 0  # then the graceful stop, as without a delay
    assert time.monotonic() - signalled >= DELAY
    server._reader.join(10)
    assert "finishing requests in flight" in server.log and "stopped" in server.log


def test_without_a_delay_sigterm_stops_at_once(start_server, repo: Path) -> None:
    modelgen.scale_model(repo / "1", shape=(-1, 2), factor=2.0)
    server = start_server("--model_name", "m", "--model_path", str(repo))
    server.wait_for_log("server ready")
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    assert time.monotonic() - signalled < 2
    server._reader.join(10)
    assert "--shutdown_delay_seconds" not in server.log


def test_a_negative_delay_is_refused(repo: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dropin", "serve", "--model_name", "m", "--model_path", str(repo),
         "--shutdown_delay_seconds", "-1"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "argument --shutdown_delay_seconds: must be a number of seconds, 0 or more, got -1" in result.stderr


def test_with_workers_the_supervisor_waits_for_the_delay_and_the_drain(start_server, repo: Path) -> None:
    """--workers N: the supervisor gives its workers the delay plus the grace period (and its
    margin) before SIGKILL, not the grace period alone."""
    version = modelgen.scale_model(repo / "1", shape=(-1, 2), factor=2.0)
    expected = modelgen.run_numpy(version, {"x": X})["y"]
    delay = 11.0  # longer than the grace period plus the supervisor's 10 s margin before SIGKILL
    server = start_server("--model_name", "m", "--model_path", str(repo), "--rest_port", str(free_port()),
                          "--workers", "2", "--shutdown_delay_seconds", str(delay), "--shutdown_grace_seconds", "0.5")
    server.wait_for_log(r"\[dropin.workers\].*server ready")
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for_log("not ready, still serving for 11 s", timeout=5)
    time.sleep(1)
    assert get(server, "/v2/health/ready").status == 503
    np.testing.assert_array_equal(predict(server), expected)
    assert server.proc.wait(delay + 20) == 0
    assert time.monotonic() - signalled >= delay
    server._reader.join(10)
    assert "did not stop in time" not in server.log
    assert server.log.count("[dropin.server] stopped") == 2
