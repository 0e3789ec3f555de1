"""The backend inside a real `dropin serve`: every model configured with `"backend": NAME`, so the
backend under test serves it whatever other backends are installed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
import pytest

from dropin.dtypes import DType
from dropin.testing.client import outputs_of
from dropin.testing.models import ConformanceModels
from dropin.testing.repository import ModelRepository
from dropin.testing.server import DropinServer, free_port

from .support import Models, sample

X = np.arange(10, dtype=np.float32).reshape(5, 2) - 3.5
F32 = np.float32


def identity_name(dtype: DType) -> str:
    return f"identity_{dtype.value.lower()}"


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    return ModelRepository(tmp_path_factory.mktemp("conformance-server") / "models")


@pytest.fixture(scope="module")
def server(
    repository: ModelRepository,
    conformance_models: Models,
    dropin_conformance_models: ConformanceModels,
    dropin_backend_name: str,
) -> Iterator[DropinServer]:
    provider = dropin_conformance_models
    models: dict[str, tuple[str, dict[str, Any]]] = {
        "scale": ("scale", {"factor": 2.0, "shape": (-1, 2)}),
        "dynamic": ("scale", {"factor": 3.0, "shape": (-1, -1)}),
        "failing": ("failing", {}),
        "swap": ("scale", {"factor": 1.0}),
        "lifecycle": ("scale", {"factor": 10.0}),
    }
    for dtype in sorted(provider.dtypes, key=lambda d: d.value):
        models[identity_name(dtype)] = ("identity", {"dtype": dtype, "shape": [-1, 3]})
    written = []
    for name, (kind, params) in models.items():
        try:
            repository.add(
                name, 1, lambda d, kind=kind, params=params: conformance_models.write_into(d, kind, **params)  # type: ignore[misc]
            )
        except NotImplementedError:
            continue
        written.append(name)
    repository.write_config(
        [
            {
                "name": name,
                "base_path": name,
                "backend": dropin_backend_name,
                "plugin_config": dict(provider.plugin_config),
            }
            for name in written
        ]
    )
    srv = DropinServer(
        [
            "--config_path",
            str(repository.path / "config.json"),
            "--rest_port",
            str(free_port()),
            "--version_settle_seconds",
            "0.2",
        ]
    )
    try:
        for name in written:
            srv.wait_for(name, 1)
        yield srv
    finally:
        srv.stop()


def need(server: DropinServer, name: str) -> None:
    try:
        server.client.status(name)
    except grpc.RpcError:
        pytest.skip(f"the backend's conformance models cannot build model {name}")


def test_every_model_is_served_by_the_backend_under_test(server: DropinServer, dropin_backend_name: str) -> None:
    assert f"model scale version 1: AVAILABLE (backend {dropin_backend_name})" in server.log
    assert server.client.status("scale") == {1: ("AVAILABLE", 0, "OK")}


def test_metadata_through_grpc_and_rest(server: DropinServer) -> None:
    assert server.client.metadata("scale") == {
        "inputs": {"x": (DType.FP32, (-1, 2))},
        "outputs": {"y": (DType.FP32, (-1, 2))},
    }
    assert server.client.metadata("dynamic") == {
        "inputs": {"x": (DType.FP32, (-1, -1))},
        "outputs": {"y": (DType.FP32, (-1, -1))},
    }
    assert server.rest is not None
    signature = server.rest.metadata("dynamic")["metadata"]["signature_def"]["signatureDef"]["serving_default"]
    x = signature["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and [int(d["size"]) for d in x["tensorShape"]["dim"]] == [-1, -1]


@pytest.mark.parametrize("shape", [(1, 2), (3, 2), (50, 2)])
def test_predict_with_dynamic_batch(server: DropinServer, shape: tuple[int, int]) -> None:
    x = np.random.default_rng(shape[0]).standard_normal(shape).astype(F32)
    np.testing.assert_array_equal(server.client.predict("scale", {"x": x})["y"], x * F32(2.0))


@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (7, 3)])
def test_predict_with_every_dim_dynamic(server: DropinServer, shape: tuple[int, int]) -> None:
    x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(F32)
    np.testing.assert_array_equal(server.client.predict("dynamic", {"x": x})["y"], x * F32(3.0))


@pytest.mark.parametrize("dtype", list(DType), ids=[d.value for d in DType])
def test_every_declared_dtype_round_trips(
    server: DropinServer, dropin_conformance_models: ConformanceModels, dtype: DType
) -> None:
    if dtype not in dropin_conformance_models.dtypes:
        pytest.skip(f"the backend does not declare {dtype.value}")
    name = identity_name(dtype)
    need(server, name)
    assert server.client.metadata(name)["inputs"]["x"] == (dtype, (-1, 3))
    x = sample(dtype, 5, seed=7)
    y = server.client.predict(name, {"x": x})["y"]
    if dtype is DType.STRING:
        assert y.reshape(-1).tolist() == x.reshape(-1).tolist() and y.shape == x.shape
    else:
        assert y.dtype == dtype.numpy
        np.testing.assert_array_equal(y, x)


def test_rest_predict_equals_grpc(server: DropinServer) -> None:
    assert server.rest is not None
    got = server.rest.predict("scale", {"x": X})
    np.testing.assert_array_equal(got["y"].astype(F32), server.client.predict("scale", {"x": X})["y"])


def test_failing_inference_is_internal_and_the_server_keeps_serving(
    server: DropinServer, dropin_backend_name: str
) -> None:
    need(server, "failing")
    with pytest.raises(grpc.RpcError) as info:
        server.client.predict("failing", {"x": np.ones(7, F32)})
    assert info.value.code() == grpc.StatusCode.INTERNAL, info.value.details()
    details = info.value.details() or ""
    assert details.startswith(f"Internal inference error - backend {dropin_backend_name}: "), (
        details
    )
    server.client.predict("failing", {"x": np.ones(6, F32)})
    assert server.rest is not None
    status, body = server.rest.request("POST", "/v1/models/failing:predict", {"inputs": {"x": [1.0] * 7}})
    assert status == 500 and body["error"].startswith("Internal inference error"), body
    assert server.proc.poll() is None
    np.testing.assert_array_equal(server.client.predict("scale", {"x": X})["y"], X * F32(2.0))


def test_many_requests_in_flight_are_all_exact(server: DropinServer) -> None:
    batches = [np.random.default_rng(i).standard_normal((1 + i % 13, 2)).astype(F32) for i in range(100)]
    futures = [server.client.predict_future("scale", {"x": b}) for b in batches]
    for future, batch in zip(futures, batches, strict=True):
        np.testing.assert_array_equal(outputs_of(future.result())["y"], batch * F32(2.0))


def test_versions_load_and_unload(
    server: DropinServer, repository: ModelRepository, conformance_models: Models
) -> None:
    client = server.client
    assert client.predict("lifecycle", {"x": X})["y"][0, 0] == X[0, 0] * 10
    repository.add("lifecycle", 2, lambda d: conformance_models.write_into(d, "scale", factor=20.0))
    server.wait_for("lifecycle", 2)
    server.wait_for("lifecycle", 1, "END")
    assert client.predict("lifecycle", {"x": X})["y"][0, 0] == X[0, 0] * 20
    repository.remove("lifecycle", 2)  # version 1 is the latest on disk again: it comes back
    server.wait_for("lifecycle", 2, "END")
    server.wait_for("lifecycle", 1)
    assert client.predict("lifecycle", {"x": X})["y"][0, 0] == X[0, 0] * 10
    assert "failed to close" not in server.log


def test_hot_swap_under_load_fails_no_request(
    server: DropinServer, repository: ModelRepository, conformance_models: Models
) -> None:
    x = np.random.default_rng(1).standard_normal((512, 2)).astype(F32)
    failures: list[str] = []
    seen: set[float] = set()
    stop = threading.Event()

    def client_loop() -> int:
        count = 0
        while not stop.is_set() and count < 20000:
            try:
                y = server.client.predict("swap", {"x": x})["y"]
            except grpc.RpcError as exc:
                failures.append(f"{exc.code()}: {exc.details()}")
                continue
            factors = {float(f) for f in np.unique(np.round(y / x, 3))}
            if len(factors) != 1:
                failures.append(f"mixed results: {sorted(factors)}")
            seen.update(factors)
            count += 1
        return count

    with ThreadPoolExecutor(4) as pool:
        loops = [pool.submit(client_loop) for _ in range(4)]
        try:
            for version, factor in ((2, 2.0), (3, 3.0), (4, 4.0)):
                time.sleep(0.15)
                repository.add(
                    "swap", version, lambda d, f=factor: conformance_models.write_into(d, "scale", factor=f)  # type: ignore[misc]
                )
                server.wait_for("swap", version)
                server.wait_for("swap", version - 1, "END")
            time.sleep(0.15)
        finally:
            stop.set()
        counts = [f.result() for f in loops]
    assert not failures, failures[:5]
    assert sum(counts) > 20 and seen <= {1.0, 2.0, 3.0, 4.0} and 4.0 in seen, (counts, seen)
    assert server.client.predict("swap", {"x": x})["y"][0, 0] == x[0, 0] * 4
