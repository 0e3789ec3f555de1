"""End to end: the data plane's request scope records each request's outcome in the metrics once,
for Predict, GetModelMetadata and GetModelStatus on gRPC and REST alike, counting what OVMS
counts: a request is counted once its model (Predict, GetModelMetadata: its version) is known."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dropin._proto.tensorflow_serving.apis import get_model_metadata_pb2
from dropin.testing import numpy_models
from dropin.testing.server import DropinServer, free_port

SUCCESS, FAIL = "ovms_requests_success_total", "ovms_requests_fail_total"  # prometheus_client's names


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> DropinServer:
    root = tmp_path_factory.mktemp("scope")
    numpy_models.scale_model(root / "m" / "1", shape=(-1, 2), factor=2.0)  # y = 2 * x
    (root / "m" / "2").mkdir()
    (root / "m" / "2" / "numpy_model.json").write_text("corrupt")  # its load fails: LOADING with an error
    config = {"model_config_list": [{"config": {"name": "m", "base_path": "m", "model_version_policy": {"all": {}}}}]}
    (root / "config.json").write_text(json.dumps(config))
    srv = DropinServer(
        ["--config_path", str(root / "config.json"), "--file_system_poll_wait_seconds", "0",
         "--rest_port", str(free_port()), "--metrics_enable"],
    )
    try:
        srv.wait_for("m", 1)
        srv.client.wait_for("m", 2, "LOADING")
        assert srv.client.status("m")[2][1] != 0, srv.log  # version 2's load has failed
        yield srv
    finally:
        srv.stop()


def scrape(server: DropinServer) -> dict[tuple[str, frozenset], float]:
    status, text = server.rest.request("GET", "/metrics")
    assert status == 200 and isinstance(text, str), text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def labels(interface: str, method: str, version: str | None = None, name: str = "m") -> frozenset:
    found = {"api": "TensorFlowServing", "interface": interface, "method": method, "name": name}
    if version is not None:
        found["version"] = version
    return frozenset(found.items())


def grpc_metadata(server: DropinServer, name: str, version: int) -> grpc.StatusCode:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = name
    if version:
        request.model_spec.version.value = version
    try:
        server.predict.GetModelMetadata(request, timeout=10)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_metadata_failures_are_counted_as_ovms_counts_them(server: DropinServer) -> None:
    before = scrape(server)
    # a registered version that is not AVAILABLE: a failure of that version
    assert grpc_metadata(server, "m", 2) == grpc.StatusCode.UNAVAILABLE
    status, body = server.rest.request("GET", "/v1/models/m/versions/2/metadata")
    assert (status, body) == (404, {"error": "Model with requested version is not loaded yet"})
    # unknown name or version, malformed request: not counted
    assert grpc_metadata(server, "m", 3) == grpc.StatusCode.NOT_FOUND
    assert grpc_metadata(server, "nope", 0) == grpc.StatusCode.NOT_FOUND
    assert server.rest.request("GET", "/v1/models/m/versions/3/metadata")[0] == 404
    assert server.rest.request("GET", "/v1/models/nope/metadata")[0] == 404
    with pytest.raises(grpc.RpcError) as caught:
        server.predict.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # successes: the default version (1, the only AVAILABLE one) and version 1 by number
    assert grpc_metadata(server, "m", 0) == grpc.StatusCode.OK
    assert server.rest.request("GET", "/v1/models/m/versions/1/metadata")[0] == 200
    after = scrape(server)

    def delta(metric: str, key: frozenset) -> float:
        return after.get((metric, key), 0.0) - before.get((metric, key), 0.0)

    for interface in ("gRPC", "REST"):
        assert delta(FAIL, labels(interface, "GetModelMetadata", "2")) == 1, interface
        assert delta(SUCCESS, labels(interface, "GetModelMetadata", "2")) == 0, interface
        assert delta(SUCCESS, labels(interface, "GetModelMetadata", "1")) == 1, interface
        assert delta(FAIL, labels(interface, "GetModelMetadata", "1")) == 0, interface
    assert not any(dict(key).get("version") == "3" or dict(key).get("name") == "nope" for _, key in after)


def test_each_request_is_counted_once_on_both_protocols(server: DropinServer) -> None:
    before = scrape(server)
    x = np.array([[1, 2]], np.float32)
    np.testing.assert_array_equal(server.client.predict("m", {"x": x})["y"], x * 2)
    answer = server.rest.request("POST", "/v1/models/m/versions/1:predict", {"instances": x.tolist()})
    assert answer == (200, {"predictions": [[2.0, 4.0]]})
    assert server.rest.request("POST", "/v1/models/m:predict", {"instances": [[1, 2, 3]]})[0] == 400  # after resolving
    assert server.rest.request("POST", "/v1/models/m/versions/2:predict", {"instances": [[1, 2]]})[0] == 404
    with pytest.raises(grpc.RpcError):
        server.client.predict("m", {"x": np.ones((1, 3), np.float32)})
    server.client.status("m")
    assert server.rest.request("GET", "/v1/models/m/versions/1")[0] == 200
    assert server.rest.request("GET", "/v1/models/m/versions/7")[0] == 404  # a model's failure, without a version
    with pytest.raises(grpc.RpcError):
        server.client.status("m", 7)
    after = scrape(server)

    def delta(metric: str, key: frozenset) -> float:
        return after.get((metric, key), 0.0) - before.get((metric, key), 0.0)

    for interface in ("gRPC", "REST"):
        assert delta(SUCCESS, labels(interface, "Predict", "1")) == 1, interface
        assert delta(FAIL, labels(interface, "Predict", "1")) == 1, interface
        assert delta(SUCCESS, labels(interface, "GetModelStatus")) == 1, interface
        assert delta(FAIL, labels(interface, "GetModelStatus")) == 1, interface
        request_time = frozenset({"interface": interface, "name": "m", "version": "1"}.items())
        assert delta("ovms_request_time_us_count", request_time) == 1, interface  # successes only
    assert after[("ovms_current_requests", frozenset({"name": "m", "version": "1"}.items()))] == 0
