"""`dropin serve` (with OVMS's flag names and meanings) and `dropin plugins`.

`dropin --model_name m --model_path /models/m` works too, as `ovms` is called in deployments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, event_loop
from .config import (
    ConfigError,
    DynamicBatching,
    model_config,
    parse_plugin_config,
    read_config_file,
    read_metrics_config,
    reload_roots,
)
from .errors import DropinError, Status
from .malloc import MMAP_THRESHOLD, TRIM_THRESHOLD, tune_malloc
from .metrics import FAMILIES, OPTIONAL_FAMILIES
from .ovms_flags import (
    add_bool,
    add_ovms_flags,
    cors_from_args,
    grpc_channel_arguments,
    positive_int,
    positive_seconds,
    seconds,
    warn_without_meaning,
)
from .plugins import PluginHost, backend_priority
from .rest_transport import RestLimits
from .server import GIB, GRPC_THREADS, REST_MAX_BODY_BYTES, Server, ServerSettings
from .stateful_config import STATEFUL_KEYS
from .tls import TlsSettings
from .workers import serve_workers
from .workers.link import WorkerLink, die_with_parent

if TYPE_CHECKING:
    from .vocabulary import Vocabulary

LOG_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
              "ERROR": logging.ERROR}


def _serve_parser(parser: argparse.ArgumentParser, vocabulary: Vocabulary | None = None) -> None:
    server = parser.add_argument_group("server")
    server.add_argument("--port", type=int, default=9000, help="gRPC port (default 9000; 0 picks a free one)")
    server.add_argument("--grpc_bind_address", default="0.0.0.0")
    server.add_argument("--rest_port", type=int, default=0, help="REST port (0: REST off)")
    server.add_argument("--rest_bind_address", default="0.0.0.0")
    server.add_argument(
        "--rest_max_body_bytes", type=int, default=REST_MAX_BODY_BYTES, metavar="BYTES",
        help="largest REST request body; larger ones are refused with 413 (default 64 MiB: decoding JSON takes "
        "up to ~35 times the body in memory)",
    )
    rest = RestLimits()
    server.add_argument(
        "--rest_header_timeout_seconds", type=positive_seconds, default=rest.header_timeout, metavar="S",
        help="a REST request head must arrive within this time of its first byte, else the connection is closed "
             f"(default {rest.header_timeout:g})",
    )
    server.add_argument(
        "--rest_body_timeout_seconds", type=positive_seconds, default=rest.body_timeout, metavar="S",
        help="longest pause of a REST client in sending a request body before the connection is closed (default "
             f"{rest.body_timeout:g})",
    )
    server.add_argument(
        "--rest_idle_timeout_seconds", type=positive_seconds, default=rest.idle_timeout, metavar="S",
        help="an open REST connection that starts no request for this long is closed (keep-alive timeout, default "
             f"{rest.idle_timeout:g})",
    )
    server.add_argument(
        "--rest_max_connections", type=positive_int, default=rest.max_connections, metavar="N",
        help="most open REST connections per server process; beyond it new ones are closed at once (default "
             f"{rest.max_connections})",
    )
    server.add_argument(
        "--grpc_handshake_timeout_seconds", type=positive_seconds, default=20.0, metavar="S",
        help="a new gRPC connection must complete its TLS and HTTP/2 handshake within this time (default 20)",
    )
    server.add_argument(
        "--grpc_idle_timeout_seconds", type=positive_seconds, default=300.0, metavar="S",
        help="a gRPC connection without a call for this long is closed gracefully; clients reconnect (default 300)",
    )
    server.add_argument(
        "--grpc_max_connections", type=positive_int, default=1000, metavar="N",
        help="most open gRPC connections per server process; beyond it new ones are closed at once (default 1000)",
    )
    add_bool(server, "metrics_enable", "serve Prometheus metrics on /metrics of the REST port", default=False)
    server.add_argument(
        "--metrics_list", default="", metavar="NAMES",
        help=f"comma-separated metric families to expose (default all: {', '.join(FAMILIES)})",
    )
    server.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="server processes sharing the ports (SO_REUSEPORT), each with its own copy of every model (default 1)",
    )
    server.add_argument("--grpc_max_threads", type=positive_int, default=GRPC_THREADS, metavar="N",
                        help=f"gRPC server threads per process, one call each at a time (default {GRPC_THREADS})")
    server.add_argument("--grpc_workers", type=int, default=1, help="accepted for OVMS compatibility and ignored; "
                                                                    "see --workers")
    server.add_argument(
        "--event_loop",
        choices=event_loop.CHOICES,
        default="auto",
        help="the loop gRPC and REST run on (auto: uvloop where installed, else asyncio)",
    )
    # set by the --workers supervisor
    server.add_argument("--worker_index", type=int, default=0, help=argparse.SUPPRESS)
    server.add_argument("--worker_control_fd", type=int, default=None, help=argparse.SUPPRESS)
    server.add_argument(
        "--grpc_max_message_size", type=int, default=GIB, metavar="BYTES",
        help="largest gRPC message received or sent (default 1 GiB, as OVMS)",
    )
    server.add_argument("--max_elements", type=int, default=0, help="most tensor elements in one request (0: no limit)")
    server.add_argument(
        "--file_system_poll_wait_seconds", type=float, default=1.0,
        help="rescan period of model repositories and config.json (file-system events are followed too); 0 turns "
             "all monitoring off",
    )
    server.add_argument(
        "--file_system_watch", choices=("on", "off"), default="on",
        help="follow file-system events (inotify); off leaves only the periodic rescans",
    )
    server.add_argument(
        "--version_settle_seconds", type=float, default=0.5,
        help="a version directory being written loads once it has been quiet this long (a rename into place loads "
             "at once)",
    )
    server.add_argument(
        "--shutdown_grace_seconds", type=float, default=30.0,
        help="on SIGTERM, how long requests in flight may take to finish (default 30)",
    )
    server.add_argument("--shutdown_delay_seconds", type=seconds, default=0.0, help="on SIGTERM, report not ready "
                        "but serve on this long before the graceful stop, so that load balancers stop first")
    server.add_argument("--tls_cert", help="PEM server certificate: serve gRPC and REST over TLS")
    server.add_argument("--tls_key", help="PEM private key of --tls_cert")
    server.add_argument("--tls_client_ca", help="PEM CA bundle: require client certificates signed by it (mutual TLS)")
    server.add_argument("--log_level", default="INFO", type=str.upper, choices=sorted(LOG_LEVELS))
    server.add_argument("--log_path", default=None)
    server.add_argument("--config_path", default=None, help="OVMS config.json with several models")
    server.add_argument(
        "--reload_config_enable", action="store_true",
        help="let gRPC HandleReloadConfigRequest replace the models served (default off: it answers OK and changes "
             "nothing, as OVMS)",
    )
    server.add_argument(
        "--reload_config_roots", default="", metavar="DIRS",
        help="with --reload_config_enable: comma-separated directories; base paths outside them are refused",
    )

    model = parser.add_argument_group("single model (instead of --config_path)")
    model.add_argument("--model_name")
    model.add_argument("--model_path")
    model.add_argument("--model_version_policy", help='JSON, e.g. {"latest": {"num_versions": 2}}')
    model.add_argument("--target_device", default="CPU")
    model.add_argument("--nireq", type=int, default=0, help="infer requests per version (0: the backend's optimum)")
    model.add_argument("--plugin_config", help='JSON handed to the backend, e.g. {"INFERENCE_PRECISION_HINT":"f32"}')
    model.add_argument("--batch_size")
    model.add_argument("--shape")
    model.add_argument("--layout")
    model.add_argument("--backend", help="backend plugin to load with (default: the first that claims the files)")
    model.add_argument(
        "--dynamic_batching", metavar="JSON",
        help='batch concurrent requests server-side, e.g. {"max_batch_size":16,"batch_timeout_micros":500} '
             '(default off)',
    )
    add_ovms_flags(server, model)
    if vocabulary is not None:
        vocabulary.add_flags(server, model)


def build_parser(vocabulary: Vocabulary | None = None) -> argparse.ArgumentParser:
    """The command line, with the flags plugins declared in `vocabulary` (None: the core's only)."""
    parser = argparse.ArgumentParser(prog="dropin", description="TensorFlow Serving API model server")
    parser.add_argument("--version", action="version", version=f"dropin {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    _serve_parser(commands.add_parser("serve", help="serve models over the TF Serving gRPC API"), vocabulary)
    commands.add_parser("plugins", help="list installed plugins, their hooks and what they registered")
    return parser


def settings_from_args(args: argparse.Namespace, vocabulary: Vocabulary | None = None) -> ServerSettings:
    """The server's settings from the command line (and config.json), with the model keys and
    server options plugins declared in `vocabulary`."""
    single = {
        key: getattr(args, key)
        for key in (
            "model_version_policy", "nireq", "plugin_config", "batch_size", "shape", "layout", "backend",
            "dynamic_batching",
        )
        if getattr(args, key) not in (None, 0)
    }
    single.update({key: getattr(args, key) for key in sorted(STATEFUL_KEYS) if getattr(args, key) is not None})
    if args.target_device != "CPU":
        single["target_device"] = args.target_device
    if "plugin_config" in single:
        single["plugin_config"] = parse_plugin_config(single["plugin_config"], "--plugin_config")
    if "dynamic_batching" in single:  # parsed here so that errors name the flag
        single["dynamic_batching"] = DynamicBatching.parse(single["dynamic_batching"], "--dynamic_batching")
    if vocabulary is not None:
        single.update(vocabulary.model_flag_values(args))
    if args.config_path and (args.model_name or args.model_path):
        raise ConfigError("--config_path cannot be combined with --model_name / --model_path")
    models = []
    config_path = None
    if args.config_path:
        config_path = Path(args.config_path)
        models = read_config_file(config_path, vocabulary)  # refuse to start on an invalid file
        enable, names = read_metrics_config(config_path)  # monitoring.metrics, as OVMS reads it
        args.metrics_enable = args.metrics_enable or enable
        args.metrics_list = args.metrics_list or ",".join(names)
    elif args.model_name or args.model_path:
        if not (args.model_name and args.model_path):
            raise ConfigError("--model_name and --model_path go together")
        entry = {"name": args.model_name, "base_path": args.model_path, **single}
        models = [model_config(entry, Path.cwd(), vocabulary)]
    else:
        raise ConfigError("nothing to serve: give --model_name and --model_path, or --config_path")
    defaults = model_config({"name": "defaults", "base_path": ".", **single}, vocabulary=vocabulary)
    return ServerSettings(
        models=models,
        config_path=config_path,
        port=args.port,
        grpc_bind_address=args.grpc_bind_address,
        rest_port=args.rest_port,
        rest_bind_address=args.rest_bind_address,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        sequence_cleaner_poll_wait_minutes=args.sequence_cleaner_poll_wait_minutes,
        version_settle_seconds=args.version_settle_seconds,
        file_system_watch=args.file_system_watch == "on",
        grpc_workers=args.grpc_workers,
        grpc_threads=args.grpc_max_threads,
        grpc_max_message_bytes=args.grpc_max_message_size,
        max_elements=args.max_elements,
        defaults=defaults,
        rest_max_body_bytes=args.rest_max_body_bytes,
        rest_limits=RestLimits(
            header_timeout=args.rest_header_timeout_seconds,
            body_timeout=args.rest_body_timeout_seconds,
            idle_timeout=args.rest_idle_timeout_seconds,
            max_connections=args.rest_max_connections,
        ),
        grpc_handshake_timeout_seconds=args.grpc_handshake_timeout_seconds,
        grpc_idle_timeout_seconds=args.grpc_idle_timeout_seconds,
        grpc_max_connections=args.grpc_max_connections,
        shutdown_grace_seconds=args.shutdown_grace_seconds,
        shutdown_delay_seconds=args.shutdown_delay_seconds,
        tls=_tls_settings(args),
        plugin_options=vocabulary.server_flag_values(args) if vocabulary is not None else {},
        grpc_channel_arguments=grpc_channel_arguments(args.grpc_channel_arguments),
        cors=cors_from_args(args),
        rest_workers=args.rest_workers or 2,
        **_metrics_settings(args),
        **_reload_settings(args),
    )


def _tls_settings(args: argparse.Namespace) -> TlsSettings | None:
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise ConfigError("TLS needs both --tls_cert and --tls_key")
    client_ca = Path(args.tls_client_ca) if args.tls_client_ca else None
    return TlsSettings(Path(args.tls_cert), Path(args.tls_key), client_ca)


def _metrics_settings(args: argparse.Namespace) -> dict[str, Any]:
    if not args.metrics_enable:
        return {}
    if not args.rest_port:
        why = "--metrics_enable serves /metrics on the REST port: give --rest_port"
        raise DropinError(Status.METRICS_REST_PORT_MISSING, why)
    families = tuple(f.strip() for f in args.metrics_list.split(",") if f.strip()) or FAMILIES
    known = FAMILIES + OPTIONAL_FAMILIES
    unknown = [f for f in families if f not in known]
    if unknown:
        raise DropinError(Status.INVALID_METRICS_FAMILY_NAME, f"{', '.join(unknown)} (known: {', '.join(known)})")
    return {"metrics_enable": True, "metrics_list": families}


def _reload_settings(args: argparse.Namespace) -> dict[str, Any]:
    """HandleReloadConfigRequest lets any client that reaches the gRPC port choose the models
    served, so it needs both flags: on, and the directories it may load from."""
    if not args.reload_config_enable:
        if args.reload_config_roots:
            raise ConfigError("--reload_config_roots has no effect without --reload_config_enable")
        return {}
    if not args.reload_config_roots:
        raise ConfigError("--reload_config_enable needs --reload_config_roots: "
                          "the directories whose models clients may load")
    return {"reload_config_enable": True, "reload_config_roots": reload_roots(args.reload_config_roots)}


def setup_logging(level: str, path: str | None = None, worker: int = 0) -> None:
    """Log to stderr or `path`; a worker of --workers N adds `[worker N]` to its lines."""
    handler: logging.Handler = logging.FileHandler(path) if path else logging.StreamHandler(sys.stderr)
    who = f"[worker {worker}]" if worker else ""
    handler.setFormatter(logging.Formatter(f"[%(asctime)s][%(levelname)s]{who}[%(name)s] %(message)s"))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(LOG_LEVELS[level])


def cmd_serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level, args.log_path, args.worker_index)
    if tune_malloc():
        log = logging.getLogger("dropin")
        log.debug("malloc: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD, TRIM_THRESHOLD)
    host: PluginHost = args.plugin_host
    try:
        settings = settings_from_args(args, host.vocabulary())
        if args.worker_control_fd is None:  # once, not again in each worker of --workers N
            warn_without_meaning(args)
    except DropinError as exc:
        logging.getLogger("dropin").error("%s", exc)
        return 2
    if args.workers < 1:
        logging.getLogger("dropin").error("--workers must be at least 1, got %d", args.workers)
        return 2
    if args.workers > 1 and args.worker_control_fd is None:
        return serve_workers(args.workers, getattr(args, "serve_argv", sys.argv[1:]), settings)
    link = None
    if args.worker_control_fd is not None:
        die_with_parent()
        link = WorkerLink(args.worker_index, args.worker_control_fd)
    try:
        event_loop.run(Server(settings, plugins=host, link=link).serve(), args.event_loop)
    except DropinError as exc:  # a plugin a model needs is unusable, unreadable TLS files, ...
        logging.getLogger("dropin").error("cannot start: %s", exc)
        return 2
    except OSError as exc:
        logging.getLogger("dropin").error("%s", exc)
        return 1
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    host: PluginHost = args.plugin_host
    host.vocabulary()  # so that each plugin shows the flags, model keys and errors it declared
    backends = host.registries().backends
    host.conformance_models()  # so that each plugin shows what it gives the conformance suite
    for info in host.plugins():
        version = f" {info.version}" if info.version else ""
        print(f"{info.name} ({info.distribution}{version})")
        if info.module:
            print(f"  module: {info.module}")
        if info.error:
            print(f"  error: {info.error}")
        if info.hooks:
            print(f"  hooks: {', '.join(info.hooks)}")
        for kind, names in info.registered.items():
            print(f"  {kind}s: {', '.join(names)}")
    order = ", ".join(f"{name} ({backend_priority(cls)})" for name, cls in backends.items()) or "none"
    print(f"backend claim order (priority): {order}")
    return 0


def _logging_parser() -> argparse.ArgumentParser:
    """The flags that set up the log, read before the full command line (which needs the plugins)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--log_level", default="INFO")
    parser.add_argument("--log_path", default=None)
    parser.add_argument("--worker_index", type=int, default=0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("--") and argv[0] not in ("--help", "--version"):
        argv.insert(0, "serve")  # `dropin --model_name ...`, as ovms is invoked
    # Plugins add flags, so they load before the command line is parsed (importing them is cheap
    # and does nothing else); the log is set up first, so that a broken plugin is logged as usual.
    if argv and argv[0] == "plugins":
        setup_logging("WARNING")
    else:
        early, _ = _logging_parser().parse_known_args(argv)
        level = early.log_level.upper() if early.log_level.upper() in LOG_LEVELS else "INFO"
        setup_logging(level, early.log_path, early.worker_index)
    host = PluginHost()
    host.load()
    args = build_parser(host.vocabulary()).parse_args(argv)
    args.plugin_host = host
    args.serve_argv = argv[1:]  # what --workers N hands on to its workers
    return {"serve": cmd_serve, "plugins": cmd_plugins}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
