"""End to end: liveness and readiness (REST /v2/health/*, /v2/models/.../ready, grpc.health.v1),
gRPC server reflection, and the Prometheus /metrics of --metrics_enable, read with
prometheus_client's parser after real requests over both protocols."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client.parser import text_string_to_metric_families

from dropin.testing import numpy_models as modelgen
from dropin.testing.client import predict_request
from dropin.testing.expect import expect, expect_prefix
from dropin.testing.raw_http import get, http, post
from dropin.testing.server import DropinServer, free_port

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(server: DropinServer, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(server.channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def wait_ready(server: DropinServer, timeout: float = 30) -> None:
    """Until /v2/health/ready says 200: the initial loading has finished (versions can be
    AVAILABLE a little before that)."""
    deadline = time.monotonic() + timeout
    while get(server, "/v2/health/ready").status != 200:
        assert time.monotonic() < deadline, server.log
        time.sleep(0.02)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("health")
    modelgen.scale_model(root / "scale" / "1", shape=(-1, 2), factor=2.0)
    modelgen.scale_model(root / "scale" / "2", shape=(-1, 2), factor=3.0)
    modelgen.scale_model(root / "broken" / "1", shape=(-1, 2), factor=5.0)
    (root / "broken" / "2").mkdir(parents=True)
    (root / "broken" / "2" / "numpy_model.json").write_text("this is not a graph")
    config = {"model_config_list": [
        {"config": {"name": "scale", "base_path": "scale", "model_version_policy": {"all": {}}}},
        {"config": {"name": "broken", "base_path": "broken", "model_version_policy": {"all": {}}}},
    ]}
    (root / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> DropinServer:
    srv = DropinServer([
        "--config_path", str(repo / "config.json"), "--file_system_poll_wait_seconds", "0",
        "--rest_port", str(free_port()), "--metrics_enable",
    ])
    try:
        srv.wait_for("scale", 2)
        srv.wait_for("broken", 1)
        wait_ready(srv)
        yield srv
    finally:
        srv.stop()


# -- health ----------------------------------------------------------------------------------


def test_rest_health(server: DropinServer) -> None:
    for path in ("/v2/health/live", "/v2/health/ready", "/v2/models/scale/ready", "/v2/models/scale/versions/1/ready",
                 "/v2/models/scale/versions/0/ready", "/v2/models/broken/ready"):
        reply = get(server, path)
        assert (reply.status, reply.body) == (200, b""), path
    expect(get(server, "/v2/models/nope/ready"), 404, "Model with requested name is not found")
    expect(get(server, "/v2/models/scale/versions/3/ready"), 404, "Model with requested version is not found")
    expect(get(server, "/v2/models/broken/versions/2/ready"), 503, "Model with requested version is not loaded yet")
    expect_prefix(http(server.rest_port, "POST", "/v2/health/ready", b""), 406, "Unsupported method")


def test_grpc_health_service(server: DropinServer) -> None:
    assert health_status(server) == SERVING
    assert health_status(server, "tensorflow.serving.PredictionService") == SERVING
    assert health_status(server, "tensorflow.serving.ModelService") == SERVING
    with pytest.raises(grpc.RpcError) as info:
        health_status(server, "no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_reflection_lists_the_services(server: DropinServer) -> None:
    database = ProtoReflectionDescriptorDatabase(server.channel)
    assert set(database.get_services()) == {
        "tensorflow.serving.PredictionService",
        "tensorflow.serving.ModelService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    predict = database.FindFileContainingSymbol("tensorflow.serving.PredictionService")
    assert predict.name == "tensorflow_serving/apis/prediction_service.proto"


def test_not_ready_until_the_initial_loading_is_done(start_server, tmp_path: Path) -> None:
    # the numpy backend's load waits for the file "release" (outside the version directory: the
    # backend loads a private copy of it): the server stays not-ready for as long as the test wants
    modelgen.scale_model(tmp_path / "slow" / "1", shape=(-1, 2), factor=2.0, load_gate=str(tmp_path / "release"))
    srv = start_server(
        "--model_name", "slow", "--model_path", str(tmp_path / "slow"), "--file_system_poll_wait_seconds", "0",
        "--rest_port", str(free_port()),
    )
    assert get(srv, "/v2/health/live").status == 200
    expect_prefix(get(srv, "/v2/health/ready"), 503, "Server is not ready")
    # the ports open before the repository is read: until then the model is not known at all
    srv.wait_for("slow", 1, "LOADING")
    expect_prefix(get(srv, "/v2/health/ready"), 503, "Server is not ready")
    expect(get(srv, "/v2/models/slow/ready"), 503, "Model with requested version is not loaded yet")
    assert health_status(srv) == NOT_SERVING
    assert health_status(srv, "tensorflow.serving.PredictionService") == NOT_SERVING
    (tmp_path / "release").write_text("")
    wait_ready(srv)
    assert get(srv, "/v2/models/slow/ready").status == 200
    assert health_status(srv) == SERVING
    assert post(srv, "/v1/models/slow:predict", {"instances": [[1, 2]]}).json == {"predictions": [[2.0, 4.0]]}


# -- metrics ---------------------------------------------------------------------------------


def scrape(server: DropinServer) -> dict[tuple[str, frozenset], float]:
    reply = get(server, "/metrics")
    assert reply.status == 200 and reply.content_type.startswith("text/plain"), reply.body
    samples = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def requests(interface: str, method: str, name: str, version: str | None = None) -> dict[str, str]:
    labels = {"api": "TensorFlowServing", "interface": interface, "method": method, "name": name}
    if version is not None:
        labels["version"] = version
    return labels


def test_metrics_count_requests_on_both_protocols(server: DropinServer) -> None:
    before = scrape(server)
    x = np.ones((1, 2), np.float32)
    for _ in range(3):
        server.predict.Predict(predict_request("scale", {"x": x}), timeout=10)
    for _ in range(2):
        assert post(server, "/v1/models/scale/versions/1:predict", {"instances": [[1, 2]]}).status == 200
    assert post(server, "/v1/models/scale:predict", {"instances": [[1, 2, 3]]}).status == 400  # a validation failure
    with pytest.raises(grpc.RpcError):
        server.predict.Predict(predict_request("scale", {"x": np.ones((1, 3), np.float32)}), timeout=10)
    assert post(server, "/v1/models/nope:predict", {"instances": [[1, 2]]}).status == 404  # never resolved: not counted
    assert get(server, "/v1/models/scale/metadata").status == 200
    assert get(server, "/v1/models/scale").status == 200
    server.status("scale")
    after = scrape(server)

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    # counters are named as OVMS names them: ovms_requests_success, without a _total suffix
    assert "ovms_requests_success{" in get(server, "/metrics").body.decode()
    success, fail = "ovms_requests_success_total", "ovms_requests_fail_total"  # the parser's names
    assert delta(success, **requests("gRPC", "Predict", "scale", "2")) == 3
    assert delta(success, **requests("REST", "Predict", "scale", "1")) == 2
    assert delta(fail, **requests("REST", "Predict", "scale", "2")) == 1
    assert delta(fail, **requests("gRPC", "Predict", "scale", "2")) == 1
    assert delta(success, **requests("REST", "GetModelMetadata", "scale", "2")) == 1
    assert delta(success, **requests("REST", "GetModelStatus", "scale")) == 1  # no version label
    assert delta(success, **requests("gRPC", "GetModelStatus", "scale")) == 1
    assert not any(dict(labels).get("name") == "nope" for _, labels in after)
    assert delta("ovms_request_time_us_count", interface="gRPC", name="scale", version="2") == 3
    assert delta("ovms_request_time_us_count", interface="REST", name="scale", version="1") == 2
    assert delta("ovms_inference_time_us_count", name="scale", version="2") == 3
    assert delta("ovms_wait_for_infer_req_time_us_count", name="scale", version="2") == 3
    assert value(after, "ovms_inference_time_us_sum", name="scale", version="2") > 0
    assert value(after, "ovms_current_requests", name="scale", version="2") == 0
    assert value(after, "ovms_streams", name="scale", version="2") >= 1


def test_metrics_histogram_buckets_are_ovms_ones(server: DropinServer) -> None:
    server.predict.Predict(predict_request("scale", {"x": np.ones((1, 2), np.float32)}), timeout=10)
    samples = scrape(server)
    les = sorted(
        (float(dict(labels)["le"]) for name, labels in samples
         if name == "ovms_inference_time_us_bucket" and dict(labels)["version"] == "2"),
    )
    assert les == [float(int(10 * 1.8**i)) for i in range(33)] + [float("inf")]


def test_metrics_need_a_rest_port() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dropin",
            "serve",
            "--model_name",
            "m",
            "--model_path",
            "/nonexistent",
            "--metrics_enable",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Missing rest_port parameter in server CLI" in result.stderr


def test_metrics_list_selects_families(start_server, repo: Path) -> None:
    srv = start_server(
        "--model_name", "scale", "--model_path", str(repo / "scale"), "--file_system_poll_wait_seconds", "0",
        "--rest_port", str(free_port()), "--metrics_enable", "--metrics_list", "ovms_requests_success",
    )
    srv.wait_for("scale", 2)
    srv.predict.Predict(predict_request("scale", {"x": np.ones((1, 2), np.float32)}), timeout=10)
    families = {f.name for f in text_string_to_metric_families(get(srv, "/metrics").body.decode())}
    assert families == {"ovms_requests_success"}
