"""Replicas behind load balancing: three dropin processes on one model directory.

- gRPC, balanced by the client as docs/deploy.md configures it: one channel over the three (an
  `ipv4:` target with the addresses a headless Service's DNS name resolves to), round_robin,
  client-side health checking and the retry policy, in gRPC's service-config form. One replica
  is killed (SIGKILL) or stopped (SIGTERM) while clients send requests: no request fails as the
  client sees it (without the retry policy, the killed replica's calls in flight would).
- REST, balanced as a Kubernetes Service does: requests go to the replicas whose readiness probe
  last passed, probed every PROBE_PERIOD, and clients do not retry. A replica stopped with
  --shutdown_delay_seconds longer than that period loses no request; without the delay, the
  requests sent to it before the next probe fail."""

from __future__ import annotations

import http.client
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropin._proto.tensorflow_serving.apis import prediction_service_pb2_grpc
from dropin.testing import numpy_models as modelgen
from dropin.testing.client import outputs_of, predict_request
from dropin.testing.raw_http import get
from dropin.testing.server import DropinServer, free_port

# The service config docs/deploy.md gives: round_robin over every address, each one watched with
# the standard health service (a replica that reports NOT_SERVING gets no new calls), and calls
# that fail UNAVAILABLE (a replica gone mid-call, or refusing) retried on another replica.
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [{
        "name": [{"service": "tensorflow.serving.PredictionService"}],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.05s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}
X = np.arange(8, dtype=np.float32).reshape(4, 2)
PROBE_PERIOD = 0.5  # the REST balancer's readiness probes (a kubelet's periodSeconds)
CLIENTS = 6
INFER_SECONDS = 0.02  # each inference takes this long: requests are in flight when a replica goes


def start_replicas(start_server, repo: Path, delay: float) -> tuple[list[DropinServer], np.ndarray]:
    version = modelgen.scale_model(repo / "1", shape=(-1, 2), factor=2.0, offset=0.5, delay_seconds=INFER_SECONDS)
    expected = modelgen.run_numpy(version, {"x": X})["y"]
    servers = [
        start_server("--model_name", "m", "--model_path", str(repo), "--rest_port", str(free_port()),
                     "--metrics_enable", "--shutdown_delay_seconds", str(delay), "--shutdown_grace_seconds", "5")
        for _ in range(3)
    ]
    for server in servers:
        server.wait_for_log("server ready")
    return servers, expected


@pytest.fixture
def replicas(start_server, repo: Path) -> Iterator[tuple[list[DropinServer], np.ndarray]]:
    yield start_replicas(start_server, repo, 1.5)


def served(server: DropinServer) -> float:
    """Predict calls this replica answered (its ovms_requests_success)."""
    families = text_string_to_metric_families(get(server, "/metrics").body.decode())
    return sum(s.value for f in families if f.name == "ovms_requests_success"
               for s in f.samples if s.labels.get("method") == "Predict" and s.name.endswith("_total"))


class Load:
    """CLIENTS threads sending Predict over one round-robin channel until stopped; every answer
    is checked, every failure kept."""

    def __init__(self, servers: list[DropinServer], expected: np.ndarray) -> None:
        target = "ipv4:" + ",".join(f"127.0.0.1:{s.port}" for s in servers)
        self.channel = grpc.insecure_channel(target, options=[("grpc.service_config", json.dumps(SERVICE_CONFIG))])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.expected = expected
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        request = predict_request("m", {"x": X})
        while not self._stop.is_set():
            try:
                y = outputs_of(self.stub.Predict(request, timeout=20))["y"]
                np.testing.assert_array_equal(y, self.expected)
                with self._lock:
                    self.ok += 1
            except (grpc.RpcError, AssertionError) as exc:
                with self._lock:
                    failure = f"{exc.code()}: {exc.details()}" if isinstance(exc, grpc.RpcError) else str(exc)
                    self.failures.append(failure)

    def __enter__(self) -> Load:
        grpc.channel_ready_future(self.channel).result(timeout=10)
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        self.channel.close()

    def count(self) -> int:
        with self._lock:
            return self.ok


def wait_for_requests(load: Load | ProbingBalancer, more: int, timeout: float = 30) -> None:
    target = load.count() + more
    deadline = time.monotonic() + timeout
    while load.count() < target:
        assert time.monotonic() < deadline, f"{load.count()} answers, wanted {target}; failures: {load.failures[:5]}"
        time.sleep(0.02)


def test_a_replica_killed_mid_load_loses_no_request(replicas) -> None:
    servers, expected = replicas
    with Load(servers, expected) as load:
        wait_for_requests(load, 150)
        before = [served(s) for s in servers]
        assert all(n > 0 for n in before), before  # round robin: every replica answers
        servers[0].proc.kill()  # SIGKILL: the calls it was running fail UNAVAILABLE, and are retried
        servers[0].proc.wait(10)
        wait_for_requests(load, 150)
    assert load.failures == []
    after = [served(s) for s in servers[1:]]
    assert all(a > b for a, b in zip(after, before[1:], strict=True)), (before, after)  # the two left share the load


def test_a_replica_stopped_with_sigterm_and_a_delay_loses_no_request(replicas) -> None:
    servers, expected = replicas
    with Load(servers, expected) as load:
        wait_for_requests(load, 150)
        started = time.monotonic()
        servers[0].proc.terminate()  # not ready at once, serving for 1.5 s, then drained and stopped
        assert servers[0].proc.wait(20) == 0
        assert time.monotonic() - started >= 1.5
        wait_for_requests(load, 150)
    assert load.failures == []
    servers[0]._reader.join(10)
    assert "not ready, still serving for 1.5 s" in servers[0].log


class ProbingBalancer:
    """A Service's view of the replicas: those whose /v2/health/ready answered 200 at the last
    probe, every PROBE_PERIOD, take the requests, in turn. Clients send REST Predict through it
    on fresh connections, without retries; every answer is checked, every failure kept."""

    def __init__(self, servers: list[DropinServer], expected: np.ndarray) -> None:
        self.servers = servers
        self.expected = expected
        self.ready = list(servers)
        self.ok = 0
        self.failures: list[str] = []
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._probe, daemon=True)]
        self._threads += [threading.Thread(target=self._send, daemon=True) for _ in range(CLIENTS)]

    def _probe(self) -> None:
        while not self._stop.wait(PROBE_PERIOD):
            self.ready = [s for s in self.servers if _status(s.rest_port, "GET", "/v2/health/ready")[0] == 200]

    def _send(self) -> None:
        body = json.dumps({"inputs": {"x": X.tolist()}})
        while not self._stop.is_set():
            ready = self.ready
            server = ready[next(self._turn) % len(ready)]
            status, answer = _status(server.rest_port, "POST", "/v1/models/m:predict", body)
            with self._lock:
                if status == 200 and np.array_equal(np.asarray(json.loads(answer)["outputs"]), self.expected):
                    self.ok += 1
                else:
                    self.failures.append(f"{status}: {answer[:200]!r}")

    def __enter__(self) -> ProbingBalancer:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self) -> int:
        with self._lock:
            return self.ok


def _status(port: int, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection; status 0 when the connection fails (refused, reset)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request(method, path, body=body)
        reply = connection.getresponse()
        return reply.status, reply.read()
    except OSError as exc:
        return 0, str(exc).encode()
    finally:
        connection.close()


@pytest.mark.parametrize("delay", [1.5, 0.0])
def test_the_shutdown_delay_lets_a_probing_balancer_stop_first(start_server, repo: Path, delay: float) -> None:
    servers, expected = start_replicas(start_server, repo, delay)
    with ProbingBalancer(servers, expected) as balancer:
        wait_for_requests(balancer, 100)
        servers[0].proc.terminate()
        assert servers[0].proc.wait(20) == 0
        wait_for_requests(balancer, 100)
    assert servers[0] not in balancer.ready
    if delay > PROBE_PERIOD:  # readiness failed while it still served: nothing was sent to a closed port
        assert balancer.failures == []
    else:  # the control: what the delay prevents, requests sent to it after it stopped listening
        assert balancer.failures and all(f.startswith("0: ") for f in balancer.failures), balancer.failures
    print(f"delay {delay} s: {balancer.ok} answers, {len(balancer.failures)} failures {balancer.failures[:2]}")
