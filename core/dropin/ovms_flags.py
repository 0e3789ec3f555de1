"""OVMS's flags that dropin's own command line (cli.py) does not define itself.

Every flag of `ovms --help` is accepted, as `--flag value` and `--flag=value`, so that a
deployment written for OVMS starts unchanged. Those dropin gives a meaning are read into the
server's settings (CORS, gRPC channel arguments, REST workers); the others log one warning each
that says what dropin does instead, and none stops the server. `--cache_dir` and
`--cpu_extension` belong to the OpenVINO plugin, which declares them (a deployment without it
accepts neither).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .config import ConfigError

log = logging.getLogger("dropin")


@dataclass(frozen=True)
class Cors:
    """CORS on the REST port, with OVMS's defaults: every origin, method and header, no credentials."""

    allowed_origins: str = "*"
    allowed_methods: str = "*"
    allowed_headers: str = "*"
    allow_credentials: bool = False

    def headers(self, origin: str | None) -> dict[str, str]:
        """The Access-Control-Allow-* headers of an answer to a request from `origin` (none when
        the origin is not allowed)."""
        origins = [o.strip() for o in self.allowed_origins.split(",") if o.strip()]
        if "*" in origins:
            # with credentials, "*" is refused by browsers: echo the origin instead
            allow = origin if (self.allow_credentials and origin) else "*"
        elif origin in origins:
            allow = origin
        else:
            return {}
        headers = {"Access-Control-Allow-Origin": allow}
        if allow != "*":
            headers["Vary"] = "Origin"
        if self.allow_credentials:
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def preflight(self, origin: str | None, method: str | None, request_headers: str | None) -> dict[str, str]:
        """The headers of the answer to an OPTIONS preflight request."""
        headers = self.headers(origin)
        if not headers:
            return {}
        methods = self.allowed_methods.strip()
        headers["Access-Control-Allow-Methods"] = (method or "GET, POST, OPTIONS") if methods == "*" else methods
        allowed = self.allowed_headers.strip()
        if allowed == "*":
            if request_headers:
                headers["Access-Control-Allow-Headers"] = request_headers
        else:
            headers["Access-Control-Allow-Headers"] = allowed
        headers["Access-Control-Max-Age"] = "600"
        return headers


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"must be true or false, got {text}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def positive_seconds(text: str) -> float:
    """A duration in seconds, more than 0."""
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, got {text}")
    return value


def add_bool(group: argparse._ArgumentGroup, name: str, help: str, default: bool | None = None) -> None:
    # cxxopts booleans: `--flag` alone is true, `--flag=false` / `--flag false` set it
    group.add_argument(f"--{name}", type=_bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


#: flags accepted without a meaning in dropin: flag -> what dropin does instead (the warning's text)
WITHOUT_MEANING = {
    "grpc_memory_quota": "gRPC's Python server has no resource quota; --grpc_max_message_size and "
                         "--grpc_max_connections bound what clients can take",
    "custom_node_resources_cleaner_interval_seconds": "custom nodes are Python plugins whose arrays Python "
                                                      "frees; there are no C buffers to clean up",
    "trace_path": "OVMS wrote a Chrome trace of its internals here only in builds with MTR tracing; dropin has "
                  "no such trace",
    "precision": "OVMS converted inputs to this element type in the model (preprocessing); dropin keeps the "
                 "model's input types: clients send those (inference precision: INFERENCE_PRECISION_HINT in "
                 "--plugin_config)",
    "allowed_local_media_path": "dropin serves no LLM endpoints",
    "list_models": "dropin has no config management commands; the server starts as usual",
    "add_to_config": "dropin has no config management commands; edit config.json",
    "remove_from_config": "dropin has no config management commands; edit config.json",
    "model_repository_path": "dropin pulls no models; the server starts as usual",
    "pull": "dropin pulls no models from Hugging Face",
    "source_model": "dropin pulls no models from Hugging Face",
    "gguf_filename": "dropin pulls no models from Hugging Face",
    "overwrite_models": "dropin pulls no models from Hugging Face",
    "task": "dropin serves no generative (LLM) graphs",
    "weight_format": "dropin pulls no models from Hugging Face",
    "extra_quantization_params": "dropin pulls no models from Hugging Face",
}


def add_ovms_flags(server: argparse._ArgumentGroup, model: argparse._ArgumentGroup) -> None:
    """The OVMS flags cli.py does not define itself."""
    server.add_argument(
        "--rest_workers", type=positive_int, default=None, metavar="N",
        help="threads that decode and encode REST JSON bodies (default 2)",
    )
    server.add_argument(
        "--grpc_channel_arguments", default="", metavar="ARGS",
        help="comma-separated gRPC server arguments, e.g. grpc.max_connection_age_ms=60000 (as OVMS)",
    )
    server.add_argument("--allowed_origins", default="*", help="CORS: comma-separated origins allowed (default *)")
    server.add_argument("--allowed_methods", default="*", help="CORS: comma-separated methods allowed (default *)")
    server.add_argument("--allowed_headers", default="*", help="CORS: comma-separated headers allowed (default *)")
    add_bool(server, "allow_credentials", "CORS: allow credentials (default false)", default=False)
    ignored = "accepted for OVMS compatibility; logs a warning"
    for name in ("grpc_memory_quota", "custom_node_resources_cleaner_interval_seconds",
                 "trace_path", "allowed_local_media_path", "add_to_config", "remove_from_config",
                 "model_repository_path", "source_model", "gguf_filename", "task", "extra_quantization_params"):
        server.add_argument(f"--{name}", default=None, help=ignored)
    server.add_argument("--weight-format", dest="weight_format", default=None, help=ignored)
    for name in ("list_models", "pull", "overwrite_models"):
        add_bool(server, name, ignored)
    model.add_argument("--precision", default=None, help=ignored)
    add_stateful_flags(server, model)


def _minutes(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of minutes >= 0, got {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {2**32 - 1}, got {text}")
    return value


def add_stateful_flags(server: argparse._ArgumentGroup, model: argparse._ArgumentGroup) -> None:
    """OVMS's stateful model flags (sequences.py); None when not given, so that config.json's
    defaults apply."""
    server.add_argument(
        "--sequence_cleaner_poll_wait_minutes", type=_minutes, default=5.0, metavar="MINUTES",
        help="period of the idle sequence cleaner (default 5; 0: off; fractions allowed, e.g. 0.01)",
    )
    add_bool(model, "stateful", "the model keeps state between the requests of a sequence (default false)")
    model.add_argument(
        "--max_sequence_number", type=_count, default=None, metavar="N",
        help="stateful: most sequences open at once per version (default 500)",
    )
    add_bool(model, "idle_sequence_cleanup", "stateful: the sequence cleaner removes idle sequences (default true)")
    add_bool(model, "low_latency_transformation", "stateful: apply OpenVINO's LowLatency2 at load (default false)")


def warn_without_meaning(args: argparse.Namespace) -> list[str]:
    """One warning per flag given that means nothing in dropin; the flags warned about."""
    given = [name for name in WITHOUT_MEANING if getattr(args, name, None) is not None]
    for name in given:
        flag = "--weight-format" if name == "weight_format" else f"--{name}"
        log.warning("%s %s: accepted for OVMS compatibility and ignored: %s", flag, getattr(args, name),
                    WITHOUT_MEANING[name])
    return given


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """OVMS's --grpc_channel_arguments: `key=value[,key=value...]`; integer values as integers."""
    options: list[tuple[str, int | str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--grpc_channel_arguments: expected key=value, got {item!r}")
        value = value.strip()
        try:
            options.append((key.strip(), int(value)))
        except ValueError:
            options.append((key.strip(), value))
    return options


def cors_from_args(args: argparse.Namespace) -> Cors:
    return Cors(args.allowed_origins, args.allowed_methods, args.allowed_headers, bool(args.allow_credentials))


def override_options(base: Sequence[tuple[str, int | str]], given: Sequence[tuple[str, int | str]]) \
        -> list[tuple[str, int | str]]:
    """gRPC server options: `base`, with the keys `given` replaced (the operator's word wins)."""
    keys = {key for key, _ in given}
    return [item for item in base if item[0] not in keys] + list(given)
