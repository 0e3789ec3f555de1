"""The TF Serving REST API on --rest_port (docs/wire-contract.md#rest), with health checks and /metrics.

aiohttp, on the same event loop as the gRPC server. Requests are routed by OVMS's URL patterns,
so that unknown URLs (400), wrong methods (406) and unsupported verbs (404) answer as OVMS did,
and go through the same data plane as gRPC. Every error is `{"error": "<message>"}` with the HTTP
status of its `Status`. The common :predict, numbers exactly as the model version takes them,
is read into arrays without validation (rest_exact.parse_predict), as gRPC's is. JSON
bodies above a few kilobytes are decoded and encoded in a worker thread, so a large request does
not stall the event loop. Connections are aiohttp's, with the timeouts and the connection limit
of rest_transport.py. A client that hangs up is not an error of the server: one DEBUG line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from operator import attrgetter
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from google.protobuf import json_format

from .dataplane import DataPlane
from .errors import DropinError, Status
from .health import model_ready
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import METADATA, PREDICT, REST, STATUS, Metrics
from .ovms_flags import Cors
from .request_scope import RequestScope
from .rest_exact import parse_predict
from .rest_json import JsonTensor, dumps
from .rest_response import predict_response
from .rest_transport import GuardedServer, RestLimits
from .tfs_messages import metadata_response, status_response
from .validation import ExactPlan

log = logging.getLogger("dropin.rest")

# OVMS's http_rest_api_handler.cpp patterns (without its optional leading character)
PREDICT_URL = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/(\w+))?:(classify|regress|predict)")
STATUS_URL = re.compile(r"/v1/models(?:/([^/:]+))?(?:/versions/(\d+)|/labels/(\w+))?(?:/(metadata))?")
# /v1/models/NAME:predict, the common URL (`_route` reads its name without PREDICT_URL)
MODELS_PREFIX, PREDICT_SUFFIX = "/v1/models/", ":predict"
_PREDICT_NAME = slice(len(MODELS_PREFIX), -len(PREDICT_SUFFIX))
MODEL_READY_URL = re.compile(r"/v2/models/([^/]+)(?:/versions/([0-9]+))?/ready")
CONFIG_URL, CONFIG_RELOAD_URL = "/v1/config", "/v1/config/reload"
LIVE_URL, READY_URL, METRICS_URL = "/v2/health/live", "/v2/health/ready", "/metrics"
GET_ONLY = (CONFIG_URL, LIVE_URL, READY_URL, METRICS_URL)

INT64_MAX = (1 << 63) - 1
INLINE_JSON_BYTES = 64 << 10  # bodies up to this size are parsed on the event loop
INLINE_JSON_ELEMENTS = 16 << 10  # outputs up to this many elements are encoded on the event loop
_SIZE = attrgetter("size")

JSON_TYPE = "application/json"


class RestApi:
    def __init__(
        self,
        dataplane: DataPlane,
        ready: asyncio.Event,
        max_body_bytes: int,
        metrics: Metrics | None = None,
        reload_config: Callable[[], Awaitable[bool]] | None = None,
        rescan: Callable[[], Awaitable[bool]] | None = None,
        json_threads: int = 2,
        render_metrics: Callable[[], Awaitable[bytes]] | None = None,
        limits: RestLimits | None = None,
        cors: Cors | None = None,
    ) -> None:
        self.dataplane = dataplane
        self.table = dataplane.table
        self.ready = ready
        self.max_body_bytes = max_body_bytes
        self.limits = limits if limits is not None else RestLimits()
        self.metrics = metrics
        self._reload_config = reload_config  # None: the server has no config.json
        self._rescan = rescan
        self._render_metrics = render_metrics  # --workers N: every worker's metrics, not only ours
        self.cors = cors if cors is not None else Cors()
        self._executor = ThreadPoolExecutor(json_threads, thread_name_prefix="dropin-json")
        self._runner: web.ServerRunner | None = None
        self.port = 0

    # -- server ------------------------------------------------------------------------------

    def server(self) -> GuardedServer:
        """aiohttp's low-level server: every URL goes to `dispatch`, which reads bodies itself."""
        return GuardedServer(self.dispatch, self.limits, access_log=None)

    async def start(
        self, host: str, port: int, shutdown_timeout: float = 30.0, ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> int:
        """Listen on host:port (with SO_REUSEPORT when `reuse_port`: the workers of --workers N
        share the port); the port listened on."""
        runner = web.ServerRunner(self.server(), shutdown_timeout=shutdown_timeout)
        await runner.setup()
        site = web.TCPSite(runner, host, port, shutdown_timeout=shutdown_timeout, ssl_context=ssl_context,
                           reuse_port=reuse_port or None)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise OSError(f"cannot listen for REST on {host}:{port}: {exc.strerror or exc}") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- routing -----------------------------------------------------------------------------

    async def dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return self._preflight(request)
        response: web.StreamResponse
        try:
            routed = self._route(request)
            response = routed if isinstance(routed, web.StreamResponse) else await routed
        except DropinError as exc:
            response = error_response(exc)
        except ClientGone as exc:  # nobody reads what is answered
            log.debug("%s %s: client gone while sending its body (%s)", request.method, request.path, exc)
            return web.Response(status=400)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            response = error_response(DropinError(Status.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"))
        # CORS, as OVMS: the allowed origin on every answer (a browser needs it on errors too)
        origin = request.headers.get("Origin")
        if origin is not None:
            response.headers.update(self.cors.headers(origin))
        return response

    def _preflight(self, request: web.BaseRequest) -> web.Response:
        """A CORS preflight request: 204 with what the flags allow, 403 for an origin not allowed."""
        asked = request.headers
        headers = self.cors.preflight(asked.get("Origin"), asked["Access-Control-Request-Method"],
                                      asked.get("Access-Control-Request-Headers"))
        return web.Response(status=204 if headers else 403, headers=headers)

    def _route(self, request: web.BaseRequest) -> web.StreamResponse | Awaitable[web.StreamResponse]:
        """The answer, or what to await for it (not awaited here: one coroutine less per request)."""
        raw = request.raw_path.split("?", 1)[0]
        if "../" in raw or "/.." in raw:
            raise DropinError(Status.PATH_INVALID, "'..' is not allowed in the URL")
        method, path = request.method, request.path
        if method == "POST":
            if path.endswith(PREDICT_SUFFIX) and path.startswith(MODELS_PREFIX):
                # the common URL without the regular expression, which costs microseconds served;
                # the same rule for the name: no '/' or ':' in it
                name = path[_PREDICT_NAME]
                if name and "/" not in name and ":" not in name:
                    return self.predict(request, name, 0)
            if match := PREDICT_URL.fullmatch(path):
                name, version, _label, verb = match.groups()
                if verb != "predict":
                    raise DropinError(Status.REST_NOT_FOUND, f":{verb} is not served; use :predict")
                return self.predict(request, name, _version(version))
            if path == CONFIG_RELOAD_URL:
                return self.config_reload()
            if STATUS_URL.fullmatch(path) or MODEL_READY_URL.fullmatch(path) or path in GET_ONLY:
                raise DropinError(Status.REST_UNSUPPORTED_METHOD, f"{path} answers GET, not POST")
        elif method == "GET":
            if match := STATUS_URL.fullmatch(path):
                name, version, _label, metadata = match.groups()
                if metadata:
                    return self.model_metadata(name or "", _version(version))
                return self.model_status(name or "", _version(version))
            if path == CONFIG_URL:
                return json_response(self.all_statuses())
            if path == LIVE_URL:
                return web.Response(status=200)
            if path == READY_URL:
                if not self.ready.is_set():
                    raise DropinError(Status.SERVER_NOT_READY, "loading the initial models, or shutting down")
                return web.Response(status=200)
            if match := MODEL_READY_URL.fullmatch(path):
                return self.model_ready(match.group(1), _version(match.group(2)))
            if path == METRICS_URL and self.metrics is not None:
                return self._metrics_response(self.metrics)
            if PREDICT_URL.fullmatch(path) or path == CONFIG_RELOAD_URL:
                raise DropinError(Status.REST_UNSUPPORTED_METHOD, f"{path} answers POST, not GET")
        else:
            raise DropinError(Status.REST_UNSUPPORTED_METHOD, f"{method}; the REST API answers GET and POST")
        raise DropinError(Status.REST_INVALID_URL, f"{method} {path}")

    async def _metrics_response(self, metrics: Metrics) -> web.StreamResponse:
        body = await self._render_metrics() if self._render_metrics is not None else metrics.render()
        return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})

    # -- TF Serving API ----------------------------------------------------------------------

    async def predict(self, request: web.BaseRequest, name: str, version: int) -> web.StreamResponse:
        body = self._body_now(request)
        if body is None:
            body = await self._read_body(request)
        with self.dataplane.request(REST, PREDICT) as scope:
            # decoded once the version is resolved, as OVMS parses with the model's inputs at hand
            if not scope.resolve_now(name, version):
                await scope.resolve(name, version)
            plan = scope.exact_plan()
            if len(body) <= INLINE_JSON_BYTES:
                order, arrays, tensors = _decode(body, scope, plan)
            else:
                order, arrays, tensors = await asyncio.get_running_loop().run_in_executor(
                    self._executor, _decode, body, scope, plan
                )
            # the common request, exactly what the model takes, needs no validation
            result = await scope.infer_exact(arrays) if arrays is not None else await scope.infer(tensors)
            # the answer's format (rows or columns) follows the request's
            if sum(map(_SIZE, result.outputs.values())) <= INLINE_JSON_ELEMENTS:
                payload = dumps(predict_response(order, result.outputs))
            else:
                payload = await asyncio.get_running_loop().run_in_executor(
                    self._executor, _encode, order, result.outputs
                )
        return web.Response(body=payload, content_type=JSON_TYPE)

    async def model_metadata(self, name: str, version: int) -> web.StreamResponse:
        with self.dataplane.request(REST, METADATA) as scope:
            meta = metadata_response(await scope.metadata(name, version))
            text = json_format.MessageToJson(meta, always_print_fields_with_no_presence=True, indent=1)
        return web.Response(text=text, content_type=JSON_TYPE)

    def model_status(self, name: str, version: int) -> web.StreamResponse:
        with self.dataplane.request(REST, STATUS) as scope:
            text = _status_json(scope.status(name, version))
        return web.Response(text=text, content_type=JSON_TYPE)

    def all_statuses(self) -> dict[str, Any]:
        """{model: GetModelStatusResponse as JSON} for every model (GET /v1/config)."""
        return {
            name: _status_dict(self.dataplane.status(name, 0))
            for name in sorted(self.table.models)
        }

    async def config_reload(self) -> web.StreamResponse:
        """POST /v1/config/reload: re-read config.json (if the server has one) and rescan every
        repository now; 201 if anything changed, 200 if not, with every model's status."""
        changed = False
        try:
            if self._reload_config is not None:
                changed = await self._reload_config()
            if self._rescan is not None:
                changed = await self._rescan() or changed
        except DropinError as exc:
            log.error("config reload request failed: %s", exc)
            raise DropinError(Status.CONFIG_RELOAD_FAILED, str(exc)) from None
        return json_response(self.all_statuses(), status=201 if changed else 200)

    def model_ready(self, name: str, version: int) -> web.StreamResponse:
        not_ready = model_ready(self.table, name, version)  # raises the 404s
        if not_ready is None:
            return web.Response(status=200)
        return error_response(not_ready, status=503)

    def _body_now(self, request: web.BaseRequest) -> bytes | None:
        """The body when it came whole with the request's head, as a small one does; else None,
        and `_read_body` reads it or says what is wrong."""
        length = request.content_length
        content = request.content
        if length is None or length > self.max_body_bytes or not content.is_eof() or content.exception():
            return None
        return content.read_nowait()

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise DropinError(
                Status.REST_BODY_TOO_LARGE, f"{length} bytes; the limit is {limit} (--rest_max_body_bytes)"
            )
        content = request.content
        body = bytearray()
        try:
            async for chunk in content.iter_any():
                body += chunk
                if len(body) > limit:
                    raise DropinError(Status.REST_BODY_TOO_LARGE, f"more than {limit} bytes (--rest_max_body_bytes)")
        except RequestPayloadError as exc:  # e.g. a malformed chunked encoding
            raise DropinError(Status.INVALID_REQUEST_MESSAGE, f"request body: {exc}") from None
        except ConnectionError as exc:  # the client hung up (or was cut by a timeout) mid-body
            raise ClientGone(str(exc) or type(exc).__name__) from None
        return bytes(body)


class ClientGone(Exception):
    """The client closed its connection before its request was complete."""


def _version(text: str | None) -> int:
    if not text:
        return 0
    version = int(text)
    if version > INT64_MAX:
        raise DropinError(Status.MODEL_VERSION_MISSING)
    return version


def _decode(
    body: bytes, scope: RequestScope, plan: ExactPlan | None
) -> tuple[str, dict[str, np.ndarray] | None, dict[str, JsonTensor]]:
    """The body's format (row or column) and its inputs: arrays when they fit `plan` exactly,
    else tensors of the scope's inputs for the data plane to validate."""
    order, arrays, request = parse_predict(body, plan)
    return order, arrays, {} if request is None else request.tensors(scope.input_specs)


def _encode(order: str, outputs: Mapping[str, Any]) -> bytes:
    return dumps(predict_response(order, outputs))


def _status_dict(versions: Any) -> dict[str, Any]:
    return json_format.MessageToDict(
        status_response(versions), preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _status_json(versions: Any) -> str:
    return json_format.MessageToJson(
        status_response(versions), preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=1
    )


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(value, indent=1), status=status, content_type=JSON_TYPE)


def error_response(exc: DropinError, status: int | None = None) -> web.Response:
    return web.Response(
        text=json.dumps({"error": exc.message}),
        status=status or exc.status.http_status,
        content_type=JSON_TYPE,
    )
