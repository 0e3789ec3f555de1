"""The pytest plugin of dropin's test kit (entry point `pytest11`: loaded by every pytest run in an
environment where dropin is installed; `-p dropin.testing.plugin` loads it when autoloading is off).

It only adds the `--dropin-backend` option and fixtures; it imports nothing heavy until a fixture
is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .client import GrpcClient, RestClient
    from .models import ConformanceModels
    from .repository import ModelRepository
    from .server import DropinServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dropin", "dropin test kit")
    group.addoption(
        "--dropin-backend",
        metavar="NAME",
        default=None,
        help="backend the conformance suite (--pyargs dropin.testing.conformance) tests, by its registered name",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "dropin_conformance: a test of the dropin backend conformance suite")


@pytest.fixture
def dropin_repository(tmp_path: Path) -> ModelRepository:
    """An empty `ModelRepository` in a temporary directory (`.path` is the repository)."""
    from .repository import ModelRepository

    return ModelRepository(tmp_path / "models")


@pytest.fixture
def dropin_server() -> Iterator[Callable[..., DropinServer]]:
    """Start servers with `dropin_server("--model_name", "m", "--model_path", path, env={...})`;
    each returns once listening, and all are stopped after the test."""
    from .server import DropinServer

    servers: list[DropinServer] = []

    def start(*args: str, env: dict[str, str] | None = None, **kwargs: Any) -> DropinServer:
        server = DropinServer(list(args), env, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def dropin_grpc_client() -> Iterator[Callable[[Any], GrpcClient]]:
    """`dropin_grpc_client(server_or_address)`: a `GrpcClient`, closed after the test."""
    from .client import GrpcClient

    clients: list[GrpcClient] = []

    def make(target: Any) -> GrpcClient:
        address = target if isinstance(target, str) else f"127.0.0.1:{target.port}"
        clients.append(GrpcClient(address))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def dropin_rest_client() -> Callable[[Any], RestClient]:
    """`dropin_rest_client(server_or_url)`: a `RestClient` (the server needs --rest_port)."""
    from .client import RestClient

    def make(target: Any) -> RestClient:
        if isinstance(target, str):
            return RestClient(target)
        if not target.rest_port:
            raise ValueError("the server was started without --rest_port")
        return RestClient(f"http://127.0.0.1:{target.rest_port}")

    return make


@pytest.fixture(scope="session")
def dropin_backend_name(request: pytest.FixtureRequest) -> str:
    """The backend under test: `--dropin-backend`. Tests using it are skipped without the option."""
    name = request.config.getoption("dropin_backend")
    if not name:
        pytest.skip("the conformance suite needs --dropin-backend=NAME (the backend to test)")
    return str(name)


@pytest.fixture(scope="session")
def dropin_conformance_models(dropin_backend_name: str) -> ConformanceModels:
    """The `ConformanceModels` registered for the backend under test, through the installed
    plugins' `dropin_register_conformance_models` hooks. Override this fixture to provide the
    models another way."""
    from ..plugins import PluginHost

    host = PluginHost()
    host.load()
    backends = host.registries().backends
    if dropin_backend_name not in backends:
        raise pytest.UsageError(
            f"--dropin-backend={dropin_backend_name}: no such backend is installed "
            f"(installed: {', '.join(backends.names()) or 'none'}); see `dropin plugins`"
        )
    providers = host.conformance_models()
    if dropin_backend_name not in providers:
        raise pytest.UsageError(
            f"--dropin-backend={dropin_backend_name}: its plugin registers no conformance models "
            f"(the dropin_register_conformance_models hook; registered for: {', '.join(providers.names()) or 'none'})"
        )
    return providers.get(dropin_backend_name)()
