"""Assembles plugins, the model manager, the data plane and the gRPC server, and runs them."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from . import batching_now
from .config import ConfigError, ModelConfig
from .config_file import ConfigFile
from .config_proto import models_from_proto
from .dataplane import DataPlane
from .grpc_api import ModelService, OnLoop, PredictionService, add_services
from .health import GrpcHealth, add_reflection
from .manager import ModelManager
from .metrics import FAMILIES, Metrics
from .ovms_flags import Cors, override_options
from .pipelines.config import PipelineSet
from .pipelines.manager import PipelineManager
from .plugins import PluginHost
from .rest_api import RestApi
from .rest_transport import RestLimits
from .tls import TlsSettings
from .workers.link import WorkerLink
from .workers.relay import WorkerRelay

log = logging.getLogger("dropin.server")

GIB = 1 << 30
# Decoding JSON makes a Python object per number: answering a REST Predict takes up to ~35 times
# the body's size at its peak (docs/performance.md), so REST bodies are kept far below gRPC's limit.
REST_MAX_BODY_BYTES = 64 << 20
# gRPC calls run in a thread pool (grpc_api.py). Two threads per usable core, 4 to 32: on the
# 2-core machine, 4 served small models up to 20 % more requests than 8 (fewer threads handing
# the GIL around, docs/performance.md), and a machine with more cores runs more inferences at once.
GRPC_THREADS = min(32, max(4, 2 * len(os.sched_getaffinity(0))))


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
    sequence_cleaner_poll_wait_minutes: float = 5.0  # idle sequences of stateful models (0: never removed)
    version_settle_seconds: float = 0.5  # quiet time before a changed version directory loads
    file_system_watch: bool = True  # follow file-system events, not only rescans
    grpc_workers: int = 1
    grpc_threads: int = GRPC_THREADS  # threads of the gRPC server, each serving one call at a time
    grpc_max_message_bytes: int = GIB  # OVMS's limit, both directions
    max_elements: int = 0  # 0: no limit beyond the message size
    shutdown_grace_seconds: float = 30.0  # how long in-flight requests may finish after SIGTERM
    shutdown_delay_seconds: float = 0.0  # after SIGTERM: not ready, but serving, this long before the stop
    tls: TlsSettings | None = None  # TLS on both ports
    defaults: ModelConfig | None = None  # load options for models added by HandleReloadConfigRequest
    rest_max_body_bytes: int = REST_MAX_BODY_BYTES  # larger REST bodies are refused with 413
    rest_limits: RestLimits = field(default_factory=RestLimits)  # REST timeouts and connection limit
    grpc_handshake_timeout_seconds: float = 20.0  # TLS and HTTP/2 preface of a new gRPC connection
    grpc_idle_timeout_seconds: float = 300.0  # a gRPC connection with no call this long is closed (GOAWAY)
    grpc_max_connections: int = 1000  # open gRPC connections; more are closed at once
    metrics_enable: bool = False  # Prometheus /metrics on the REST port
    metrics_list: tuple[str, ...] = FAMILIES  # the metric families exposed
    # HandleReloadConfigRequest replaces the served models only when enabled, and only with base
    # paths inside these (resolved) directories; off, it answers OK and changes nothing, as OVMS
    reload_config_enable: bool = False
    reload_config_roots: tuple[Path, ...] = ()
    plugin_options: Mapping[str, Any] = field(default_factory=dict)  # server options plugins declared, by name
    grpc_channel_arguments: list[tuple[str, int | str]] = field(default_factory=list)  # gRPC options, given last
    cors: Cors = field(default_factory=Cors)  # CORS headers on the REST port (OVMS's defaults: everything)
    rest_workers: int = 2  # threads decoding and encoding REST JSON bodies


class Server:
    """One server process. With `link` it is a worker of `--workers N` (the workers package): it
    listens with SO_REUSEPORT and relays reloads and metrics through the supervisor."""

    def __init__(
        self, settings: ServerSettings, plugins: PluginHost | None = None, link: WorkerLink | None = None
    ) -> None:
        self.settings = settings
        self.link = link
        if plugins is None:
            plugins = PluginHost()
            plugins.load()
        self.plugins = plugins
        plugins.configure(settings.plugin_options)
        self.manager = ModelManager(plugins.registries(), settings.version_settle_seconds)
        self.pipelines = PipelineManager(self.manager.table, self.manager.registries.custom_nodes)
        self.metrics = Metrics(settings.metrics_list, self._pools) if settings.metrics_enable else None
        self.dataplane = DataPlane(
            self.manager, settings.max_elements, max_tensor_bytes=settings.grpc_max_message_bytes, metrics=self.metrics,
            sequence_cleaner_poll_wait_minutes=settings.sequence_cleaner_poll_wait_minutes,
        )
        self.grpc: grpc.Server | None = None
        self._grpc_threads: ThreadPoolExecutor | None = None
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.port = settings.port
        self.health: GrpcHealth | None = None
        self.rest: RestApi | None = None
        self.rest_port = 0
        self.config_file = (
            ConfigFile(settings.config_path, self._apply_config_file, plugins.vocabulary())
            if settings.config_path
            else None
        )
        self.relay = WorkerRelay(self, link) if link is not None else None

    def check_plugins(self) -> None:
        """A model that names its backend needs that backend: if its plugin is missing, blocked or
        broken, refuse to start and say which plugin and why."""
        problems = {p.name: p.error for p in self.plugins.plugins() if p.error}
        for model in self.settings.models:
            if model.backend and model.backend not in self.manager.registries.backends:
                why = problems.get(model.backend)
                installed = ", ".join(self.manager.registries.backends.names()) or "none"
                raise ConfigError(
                    f"model {model.name!r} needs backend {model.backend!r}, "
                    + (f"but its plugin is not usable: {why}" if why
                       else f"which no installed plugin provides (installed: {installed})")
                )

    async def start(self) -> None:
        self.check_plugins()
        if self.link is None:
            await self._listen()
            await self._load()
        else:
            # A worker listens once it can answer: the kernel hands new connections to every
            # listener of the port, and a (re)starting worker would get some while it loads.
            await self._load()
            await self._listen()
        assert self.health is not None
        self.ready.set()
        self.health.set_serving(True)
        # Everything alive now (modules, models) lives as long as the server: keep it out of the
        # cyclic GC's full collections, which otherwise cost tens of ms on JSON-heavy requests.
        gc.freeze()
        if self.link is None:
            log.info("initial model loading finished: server ready")
        else:  # the supervisor says "server ready" once every worker is
            log.info("initial model loading finished: worker ready")
            self.link.notify("ready")
        if self.settings.file_system_poll_wait_seconds > 0:
            self._tasks.append(asyncio.create_task(self._poll()))

    def _pools(self) -> Iterator[tuple[str, int, tuple[int, int]]]:
        """The infer-request pools of the versions served (read when /metrics is scraped)."""
        for model in list(self.manager.table.models.values()):
            for version in list(model.versions.values()):
                servable = version.servable
                pool = servable.model.infer_requests() if servable is not None else None
                if pool is not None:
                    yield model.name, version.number, pool

    async def _listen(self) -> None:
        s = self.settings
        options = [
            ("grpc.max_receive_message_length", s.grpc_max_message_bytes),
            ("grpc.max_send_message_length", s.grpc_max_message_bytes),
            # one port for all workers of --workers N; else a second server on the port fails
            ("grpc.so_reuseport", 1 if self.link is not None else 0),
            # slow or idle clients do not hold connections forever: gRPC's defaults are a 120 s
            # handshake timeout, idle connections kept for ever and no connection limit
            ("grpc.server_handshake_timeout_ms", _ms(s.grpc_handshake_timeout_seconds)),
            ("grpc.max_connection_idle_ms", _ms(s.grpc_idle_timeout_seconds)),
            ("grpc.max_allowed_incoming_connections", s.grpc_max_connections),
        ]
        self._grpc_threads = ThreadPoolExecutor(s.grpc_threads, thread_name_prefix="dropin-grpc")
        batching_now.handler_threads = s.grpc_threads  # a batch of that many requests is full
        self.grpc = grpc.server(self._grpc_threads, options=override_options(options, s.grpc_channel_arguments))
        on_loop = OnLoop(asyncio.get_running_loop())
        add_services(
            self.grpc,
            PredictionService(self.dataplane, on_loop),
            ModelService(self.dataplane, self.reload_config, on_loop),
        )
        self.health = GrpcHealth(self.grpc)
        self.health.set_serving(False)
        add_reflection(self.grpc)
        address = f"{_host(s.grpc_bind_address)}:{s.port}"
        if s.tls is not None:
            self.port = self.grpc.add_secure_port(address, s.tls.grpc_credentials())
        else:
            self.port = self.grpc.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {address}")
        self.grpc.start()
        log.info("gRPC: %d threads serve calls (--grpc_max_threads)", s.grpc_threads)
        log.info("gRPC server listening on %s", f"{_host(s.grpc_bind_address)}:{self.port}")
        if s.tls is not None:
            log.info("TLS on every port; client certificates %s", "required" if s.tls.client_ca else "not required")
        if s.grpc_workers > 1:
            log.warning("--grpc_workers %d: ignored (accepted for OVMS compatibility); one gRPC server serves each "
                        "process; --workers N runs N server processes", s.grpc_workers)
        if s.rest_port:
            await self._start_rest()

    async def _load(self) -> None:
        """The initial models (and, for a worker, what other workers were told since they started)."""
        s = self.settings
        self.manager.watching = s.file_system_poll_wait_seconds > 0 and s.file_system_watch
        if self.config_file is not None:
            await self.config_file.reload()
            if self.manager.watching:
                self.config_file.watch()
        else:
            await self.manager.apply(s.models)
        if self.link is not None:
            await self.link.synced()

    async def _poll(self) -> None:
        """Every file_system_poll_wait_seconds: check config.json and rescan every repository, the
        safety net for file systems that send no events."""
        while True:
            await asyncio.sleep(self.settings.file_system_poll_wait_seconds)
            try:
                if self.config_file is not None:
                    await self.config_file.check()
                await self.manager.sync_all()
                self.pipelines.refresh()
            except Exception:
                log.exception("repository rescan failed")

    async def reload_config_file(self) -> bool:
        """Re-read --config_path and apply it now (POST /v1/config/reload). Raises ConfigError,
        changing nothing, when the file is invalid or there is none. True if anything changed."""
        if self.config_file is None:
            raise ConfigError("the server was started without --config_path")
        return await self.config_file.reload()

    async def _apply_config_file(self, models: list[ModelConfig], pipelines: PipelineSet) -> bool:
        changed = await self.manager.apply(models)
        changed = await self.pipelines.apply(pipelines) or changed
        self.pipelines.refresh()
        if self.link is not None and self.ready.is_set():
            self.link.notify("config_file_applied")  # a restarted worker reads the file, no replay
        return changed

    async def _start_rest(self) -> None:
        s = self.settings
        if self.relay is None:
            reload, rescan = (self.reload_config_file if self.config_file is not None else None), self.manager.sync_all
        else:  # both, on every worker
            reload, rescan = self.relay.reload_config_file, None
        self.rest = RestApi(
            self.dataplane,
            self.ready,
            s.rest_max_body_bytes,
            self.metrics,
            reload_config=reload,
            rescan=rescan,
            render_metrics=self.relay.render_metrics if self.relay is not None and self.metrics is not None else None,
            limits=s.rest_limits,
            json_threads=s.rest_workers,
            cors=s.cors,
        )
        self.rest_port = await self.rest.start(
            s.rest_bind_address, s.rest_port, s.shutdown_grace_seconds, s.tls.ssl_context() if s.tls else None,
            reuse_port=self.link is not None,
        )
        log.info("REST server listening on %s", f"{_host(s.rest_bind_address)}:{self.rest_port}")
        log.info("REST: %d threads decode and encode JSON bodies (--rest_workers)", s.rest_workers)
        if self.metrics is not None:
            log.info("metrics enabled on http://%s:%d/metrics", _host(s.rest_bind_address), self.rest_port)

    async def reload_config(self, server_config: Any) -> bool:
        """HandleReloadConfigRequest. Off (no --reload_config_enable): changes nothing and returns
        False, so that the request is answered OK as OVMS did. On: serve exactly the models of
        the given ModelServerConfig, as TF Serving does, and return True; raises ConfigError,
        changing nothing, when it is invalid or names a base path outside --reload_config_roots.
        A worker of --workers N checks it, then has every worker apply it (in one order for
        all) and answers with its own outcome once it applied it."""
        if not self.settings.reload_config_enable:
            log.info("reload config request ignored: the models served change only through config.json "
                     "(HandleReloadConfigRequest needs --reload_config_enable)")
            return False
        try:
            if self.relay is None:
                await self.reload_config_here(server_config)
            else:
                await self.relay.reload_config(server_config)
        except ConfigError as exc:
            log.warning("reload config request refused: %s", exc)
            raise
        return True

    async def reload_config_here(self, server_config: Any) -> None:
        """Apply a ModelServerConfig in this process."""
        models = self.models_from_proto(server_config)
        await self.manager.apply(models)
        self.pipelines.refresh()
        log.info("reload config request applied: %s", ", ".join(m.name for m in models) or "no models")

    def models_from_proto(self, server_config: Any) -> list[ModelConfig]:
        """The models a ModelServerConfig names, with the current or default settings; ConfigError
        when it is invalid or names a base path outside --reload_config_roots."""
        current = {name: model.config for name, model in self.manager.table.models.items()}
        return models_from_proto(server_config, current, self.settings.defaults, self.settings.reload_config_roots)

    async def stop(self) -> None:
        """Graceful shutdown: report not ready, stop accepting requests, let the ones in flight
        finish (up to shutdown_grace_seconds), then unload every model."""
        for task in self._tasks:
            task.cancel()
        self.ready.clear()
        if self.config_file is not None:
            self.config_file.close()
        if self.health is not None:
            self.health.shutdown()
        grace = self.settings.shutdown_grace_seconds
        # the loop keeps running meanwhile: calls in flight may need it to finish
        await asyncio.gather(
            *([self.rest.stop()] if self.rest is not None else []),
            *([asyncio.to_thread(self.grpc.stop(grace).wait)] if self.grpc is not None else []),
        )
        if self._grpc_threads is not None:
            self._grpc_threads.shutdown(wait=False)
        await self.pipelines.close()
        await self.manager.close()
        self.dataplane.close()
        if self.link is not None:
            self.link.close()

    async def delay_shutdown(self) -> None:
        """--shutdown_delay_seconds: report not ready (REST readiness 503, gRPC health NOT_SERVING)
        while serving on, so that load balancers and Kubernetes endpoints stop sending before
        the server stops accepting."""
        delay = self.settings.shutdown_delay_seconds
        if delay <= 0:
            return
        log.info("shutting down: not ready, still serving for %g s (--shutdown_delay_seconds)", delay)
        self.ready.clear()
        if self.health is not None:
            self.health.set_serving(False)
        await asyncio.sleep(delay)

    async def serve(self) -> None:
        """Start, then run until SIGTERM or SIGINT (or, for a worker, until the supervisor is
        gone), then stop gracefully."""
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        if self.link is not None:
            await self.link.connect()
            loop.create_task(self.link.closed.wait()).add_done_callback(lambda _: stopping.set())
        await self.start()
        await stopping.wait()
        await self.delay_shutdown()
        log.info("shutting down: finishing requests in flight (up to %g s)", self.settings.shutdown_grace_seconds)
        await self.stop()
        log.info("stopped")


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address and not address.startswith("[") else address
