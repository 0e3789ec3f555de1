"""The test kit (dropin.testing) and the plugin host's parts it relies on: conformance-model
registration, the claim order of backends, the temporary repository, the clients."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dropin.backend import Backend, LoadedModel, LoadOptions
from dropin.dtypes import DType
from dropin.hookspecs import hookimpl
from dropin.plugins import PluginHost
from dropin.testing import ConformanceModels, ModelRepository


class Claims(Backend):
    @classmethod
    def claims(cls, version_dir: Path) -> bool:
        return True

    def load(self, version_dir: Path, options: LoadOptions) -> LoadedModel:
        raise NotImplementedError


def backend_class(name: str, priority: object = None) -> type[Backend]:
    attrs = {} if priority is None else {"priority": priority}
    return type(name, (Claims,), attrs)


class NoModels(ConformanceModels):
    dtypes = frozenset({DType.FP32})

    def scale(self, version_dir, factor, shape):  # type: ignore[no-untyped-def]
        raise NotImplementedError("no scale here")

    def identity(self, version_dir, dtype, shape):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def failing(self, version_dir):  # type: ignore[no-untyped-def]
        raise NotImplementedError


class KitPlugin:
    @hookimpl
    def dropin_register_backends(self, registry):  # type: ignore[no-untyped-def]
        registry.add("plain", backend_class("Plain"))
        registry.add("eager", backend_class("Eager", 100))
        registry.add("odd", backend_class("Odd", "high"))  # not an integer: counts as 0
        registry.add("shy", backend_class("Shy", -5))
        registry.add("keen", backend_class("Keen", 50))

    @hookimpl
    def dropin_register_conformance_models(self, registry):  # type: ignore[no-untyped-def]
        registry.add("plain", NoModels)


def test_backends_claim_in_priority_order_then_registration_order() -> None:
    host = PluginHost(blocked=set())
    host.register(KitPlugin(), "kit")
    assert host.registries().backends.names() == ["eager", "keen", "plain", "odd", "shy"]


def test_installed_backends_claim_in_priority_order() -> None:
    host = PluginHost(blocked=set())
    host.load()
    names = host.registries().backends.names()
    assert "numpy" in names, names
    priorities = [getattr(host.registries().backends.get(n), "priority", 0) for n in names]
    assert priorities == sorted(priorities, reverse=True)


def test_conformance_models_are_registered_by_backend_name() -> None:
    host = PluginHost(blocked=set())
    host.register(KitPlugin(), "kit")
    models = host.conformance_models()
    assert models.names() == ["plain"] and models.get("plain") is NoModels
    assert models.owner("plain") == "kit" and NoModels.name == "plain"
    info = {p.name: p for p in host.plugins()}["kit"]
    assert "dropin_register_conformance_models" in info.hooks
    assert info.registered["conformance model"] == ["plain"]


def test_conformance_models_must_subclass_the_contract() -> None:
    class Wrong:
        @hookimpl
        def dropin_register_conformance_models(self, registry):  # type: ignore[no-untyped-def]
            registry.add("wrong", dict)

    host = PluginHost(blocked=set())
    host.register(Wrong(), "wrong")
    assert len(host.conformance_models()) == 0
    assert "subclass of ConformanceModels" in (host.plugins()[-1].error or "")


def test_model_repository_adds_removes_and_configures(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "models")
    version = repo.add("m", 3, lambda d: (d / "model.txt").write_text("hello"))
    assert version == tmp_path / "models" / "m" / "3" and (version / "model.txt").read_text() == "hello"
    assert not repo.staging.is_relative_to(repo.path)  # staging never shows in the repository
    repo.remove("m", 3)
    assert not version.exists() and list(repo.staging.iterdir()) == []
    config = repo.write_config([{"name": "m", "base_path": "m"}])
    assert json.loads(config.read_text()) == {"model_config_list": [{"config": {"name": "m", "base_path": "m"}}]}


def test_the_kit_is_a_pytest_plugin_of_every_run() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], capture_output=True, text=True, check=True, cwd="/"
    ).stdout
    assert "--dropin-backend=NAME" in out


def test_conformance_suite_without_a_backend_skips_and_says_why(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "--pyargs",
            "dropin.testing.conformance",
            "-k",
            "dynamic_batch",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "needs --dropin-backend=NAME" in out.stdout


def test_conformance_suite_with_an_unknown_backend_fails_and_says_why(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--dropin-backend=nope", "--pyargs",
         "dropin.testing.conformance", "-k", "test_dynamic_batch and 1"],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert out.returncode != 0
    assert re.search(r"--dropin-backend=nope: no such backend is installed \(installed: [^)]*numpy", out.stdout), (
        out.stdout
    )


def test_grpc_and_rest_clients_against_a_server(
    dropin_server, dropin_repository, dropin_grpc_client, dropin_rest_client
) -> None:  # type: ignore[no-untyped-def]
    from dropin.testing import free_port, numpy_models

    dropin_repository.add("m", 1, lambda d: numpy_models.scale_model(d, shape=(-1, 2), factor=3.0))
    server = dropin_server(
        "--model_name", "m", "--model_path", str(dropin_repository.path / "m"), "--rest_port", str(free_port()),
    )
    server.wait_for("m", 1)
    x = np.array([[1.5, -2.0]], np.float32)
    grpc_client = dropin_grpc_client(server)
    assert grpc_client.metadata("m") == {
        "inputs": {"x": (DType.FP32, (-1, 2))},
        "outputs": {"y": (DType.FP32, (-1, 2))},
    }
    np.testing.assert_array_equal(grpc_client.predict("m", {"x": x})["y"], x * 3)
    rest = dropin_rest_client(server)
    np.testing.assert_array_equal(rest.predict("m", {"x": x})["y"], x * 3)  # the only output, named from metadata
    assert (
        rest.status("m")
        == {1: ("AVAILABLE", "OK", "OK")}
        == {k: (s, "OK", m) for k, (s, _, m) in grpc_client.status("m").items()}
    )
    from dropin.testing import RestError

    with pytest.raises(RestError) as info:
        rest.predict("nope", {"x": x})
    assert info.value.status == 404 and info.value.message == "Model with requested name is not found"
    dropin_repository.remove("m", 1)
    server.wait_for("m", 1, "END")
    assert grpc_client.status("m")[1][0] == "END"
