"""Assembles plugins, the model manager, the data plane and the gRPC server, and runs them."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from . import config as config_mod
from .config import ConfigError, ModelConfig, VersionPolicy
from .config_file import ConfigFile
from .dataplane import DataPlane
from .grpc_api import ModelService, PredictionService, add_services
from .health import GrpcHealth, add_reflection
from .manager import ModelManager
from .metrics import FAMILIES, Metrics
from .plugins import PluginHost
from .tls import TlsSettings
from .rest_api import RestApi

log = logging.getLogger("dropin.server")

GIB = 1 << 30

# tensorflow.error.Code values for ReloadConfigResponse.status
_OK, _INVALID_ARGUMENT = 0, 3


@dataclass
class ServerSettings:
    """Everything `dropin serve` was asked to do."""

    models: list[ModelConfig] = field(default_factory=list)
    config_path: Path | None = None
    port: int = 9000
    grpc_bind_address: str = "0.0.0.0"
    rest_port: int = 0
    rest_bind_address: str = "0.0.0.0"
    file_system_poll_wait_seconds: float = 1.0  # 0: no watching and no rescans
    version_settle_seconds: float = 0.5  # quiet time before a changed version directory loads
    file_system_watch: bool = True  # follow file-system events, not only rescans
    grpc_workers: int = 1
    grpc_max_message_bytes: int = GIB  # OVMS's limit, both directions
    max_elements: int = 0  # 0: no limit beyond the message size
    shutdown_grace_seconds: float = 30.0  # how long in-flight requests may finish after SIGTERM
    tls: TlsSettings | None = None  # TLS on both ports
    defaults: ModelConfig | None = None  # load options for models added by HandleReloadConfigRequest
    rest_max_body_bytes: int = GIB  # larger REST bodies are refused with 413
    metrics_enable: bool = False  # Prometheus /metrics on the REST port
    metrics_list: tuple[str, ...] = FAMILIES  # the metric families exposed


class Server:
    def __init__(self, settings: ServerSettings, plugins: PluginHost | None = None) -> None:
        self.settings = settings
        if plugins is None:
            plugins = PluginHost()
            plugins.load()
        self.plugins = plugins
        self.manager = ModelManager(plugins.registries(), settings.version_settle_seconds)
        self.dataplane = DataPlane(self.manager, settings.max_elements)
        self.grpc: grpc.aio.Server | None = None
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.port = settings.port
        self.metrics = Metrics(settings.metrics_list) if settings.metrics_enable else None
        self.health: GrpcHealth | None = None
        self.rest: RestApi | None = None
        self.rest_port = 0
        self.config_file = ConfigFile(settings.config_path, self.manager.apply) if settings.config_path else None

    def check_plugins(self) -> None:
        """A model that names its backend needs that backend: if its plugin is missing, blocked or
        broken, refuse to start and say which plugin and why."""
        problems = {p.name: p.error for p in self.plugins.plugins() if p.error}
        for model in self.settings.models:
            if model.backend and model.backend not in self.manager.registries.backends:
                why = problems.get(model.backend)
                raise ConfigError(
                    f"model {model.name!r} needs backend {model.backend!r}, "
                    + (f"but its plugin is not usable: {why}" if why else
                       f"which no installed plugin provides (installed: {', '.join(self.manager.registries.backends.names()) or 'none'})")
                )

    async def start(self) -> None:
        s = self.settings
        self.check_plugins()
        options = [
            ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
            ("grpc.max_send_message_length", s.grpc_max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.grpc = grpc.aio.server(options=options)
        add_services(
            self.grpc,
            PredictionService(self.dataplane, self.metrics),
            ModelService(self.dataplane, self.reload_config, self.metrics),
        )
        self.health = GrpcHealth(self.grpc)
        await self.health.set_serving(False)
        add_reflection(self.grpc)
        address = f"{_host(s.grpc_bind_address)}:{s.port}"
        if s.tls is not None:
            self.port = self.grpc.add_secure_port(address, s.tls.grpc_credentials())
        else:
            self.port = self.grpc.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        await self.grpc.start()
        log.info("gRPC server listening on %s", f"{_host(s.grpc_bind_address)}:{self.port}")
        if s.tls is not None:
            log.info("TLS on every port; client certificates %s", "required" if s.tls.client_ca else "not required")
        if s.grpc_workers > 1:
            log.warning("--grpc_workers %d: this server runs one gRPC event loop; the value is accepted for OVMS compatibility", s.grpc_workers)
        if s.rest_port:
            await self._start_rest()
        monitoring = s.file_system_poll_wait_seconds > 0
        self.manager.watching = monitoring and s.file_system_watch
        if self.config_file is not None:
            await self.config_file.reload()
            if self.manager.watching:
                self.config_file.watch()
        else:
            await self.manager.apply(s.models)
        self.ready.set()
        await self.health.set_serving(True)
        # Everything alive now (modules, models) lives as long as the server: keep it out of the
        # cyclic GC's full collections, which otherwise cost tens of ms on JSON-heavy requests.
        gc.freeze()
        log.info("initial model loading finished: server ready")
        if monitoring:
            self._tasks.append(asyncio.create_task(self._poll()))

    async def _poll(self) -> None:
        """Every file_system_poll_wait_seconds: check config.json and rescan every repository, the
        safety net for file systems that send no events."""
        while True:
            await asyncio.sleep(self.settings.file_system_poll_wait_seconds)
            try:
                if self.config_file is not None:
                    await self.config_file.check()
                await self.manager.sync_all()
            except Exception:
                log.exception("repository rescan failed")

    async def reload_config_file(self) -> bool:
        """Re-read --config_path and apply it now (POST /v1/config/reload). Raises ConfigError,
        changing nothing, when the file is invalid or there is none. True if anything changed."""
        if self.config_file is None:
            raise ConfigError("the server was started without --config_path")
        return await self.config_file.reload()

    async def _start_rest(self) -> None:
        s = self.settings
        self.rest = RestApi(
            self.dataplane,
            self.ready,
            s.rest_max_body_bytes,
            self.metrics,
            reload_config=self.reload_config_file if self.config_file is not None else None,
            rescan=self.manager.sync_all,
        )
        self.rest_port = await self.rest.start(
            s.rest_bind_address, s.rest_port, s.shutdown_grace_seconds, s.tls.ssl_context() if s.tls else None
        )
        log.info("REST server listening on %s", f"{_host(s.rest_bind_address)}:{self.rest_port}")
        if self.metrics is not None:
            log.info("metrics enabled on http://%s:%d/metrics", _host(s.rest_bind_address), self.rest_port)

    async def reload_config(self, server_config: Any) -> tuple[int, str]:
        """HandleReloadConfigRequest: serve exactly the models of the given ModelServerConfig."""
        try:
            models = self._models_from_proto(server_config)
        except ConfigError as exc:
            log.error("reload config request refused: %s", exc)
            return _INVALID_ARGUMENT, str(exc)
        await self.manager.apply(models)
        log.info("reload config request applied: %s", ", ".join(m.name for m in models) or "no models")
        return _OK, "OK"

    def _models_from_proto(self, server_config: Any) -> list[ModelConfig]:
        which = server_config.WhichOneof("config")
        if which != "model_config_list":
            raise ConfigError("only model_config_list is supported (custom_model_config is not)")
        models: list[ModelConfig] = []
        for entry in server_config.model_config_list.config:
            base = self.manager.table.models.get(entry.name)
            template = base.config if base is not None else self.settings.defaults
            model = config_mod.model_config({"name": entry.name, "base_path": entry.base_path})
            policy = _policy_from_proto(entry.model_version_policy)
            if template is not None:
                model = dataclasses.replace(template, name=model.name, base_path=model.base_path)
            models.append(dataclasses.replace(model, version_policy=policy))
        return models

    async def stop(self) -> None:
        """Graceful shutdown: report not ready, stop accepting requests, let the ones in flight
        finish (up to shutdown_grace_seconds), then unload every model."""
        for task in self._tasks:
            task.cancel()
        self.ready.clear()
        if self.config_file is not None:
            self.config_file.close()
        if self.health is not None:
            await self.health.shutdown()
        grace = self.settings.shutdown_grace_seconds
        await asyncio.gather(
            *([self.rest.stop()] if self.rest is not None else []),
            *([self.grpc.stop(grace)] if self.grpc is not None else []),
        )
        await self.manager.close()
        self.dataplane.close()

    async def serve(self) -> None:
        """Start, then run until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        await self.start()
        await stopping.wait()
        log.info("shutting down: finishing requests in flight (up to %g s)", self.settings.shutdown_grace_seconds)
        await self.stop()
        log.info("stopped")


def _policy_from_proto(policy: Any) -> VersionPolicy:
    which = policy.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        if not policy.specific.versions:
            raise ConfigError("model_version_policy.specific.versions must not be empty")
        return VersionPolicy("specific", versions=frozenset(policy.specific.versions))
    if which == "latest":
        return VersionPolicy("latest", num_versions=policy.latest.num_versions or 1)
    return VersionPolicy()


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address
