"""The REST port's connections: header, body and idle timeouts, and a bound on open connections.

aiohttp's low-level `web.Server` with its connection protocol (`RequestHandler`) extended where
aiohttp has no setting. The idle timeout is aiohttp's own keep-alive timeout: it closes a
connection on which no request head completes within that time after it opened or after its
last response. On top of it:

- header timeout: a request head that started arriving must be complete within it (slow
  headers, "slowloris");
- body timeout: while a request body is incomplete, the client must send some of it at least
  this often (a body promised by Content-Length and never sent);
- connection limit: beyond it, a new connection is closed at once, before anything is read;
  the connections already open are not affected;
- a request that is not valid HTTP is answered 400 with `{"error": ...}` and one DEBUG line,
  where aiohttp logs an ERROR with a traceback.

A connection cut for a timeout is closed without a response, as most servers do: the client is
not sending, so it is unlikely to read. Timers are armed only for requests that arrive in
several pieces, so a request that arrives whole costs nothing extra.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger("dropin.rest")

REFUSAL_LOG_INTERVAL = 60.0  # at most one warning this often while connections are refused


@dataclass(frozen=True)
class RestLimits:
    """How long REST clients may take, and how many connections may be open (per process)."""

    header_timeout: float = 10.0  # seconds from a request head's first byte to its end
    body_timeout: float = 60.0  # longest pause in an incomplete request body
    idle_timeout: float = 75.0  # longest wait for a request on an open connection
    max_connections: int = 1000  # open REST connections; more are closed at once


class GuardedServer(web.Server):
    """aiohttp's low-level server whose connections follow `limits`."""

    def __init__(self, handler: Any, limits: RestLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.open = 0  # connections accepted and not yet lost
        self._refused = 0  # since the last warning
        self._warned_at = -math.inf

    def __call__(self) -> RequestHandler:
        return GuardedConnection(self, loop=self._loop, limits=self.limits, **self._kwargs)

    def refuse(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
        self._refused += 1
        now = self._loop.time()
        if now - self._warned_at >= REFUSAL_LOG_INTERVAL:
            log.warning("REST connection limit reached (%d open, --rest_max_connections): %d new connection(s) closed",
                        self.open, self._refused)
            self._warned_at, self._refused = now, 0


class GuardedConnection(RequestHandler):
    """One REST connection: aiohttp's protocol plus the header and body timeouts."""

    __slots__ = ("_limits", "_refused", "_received_at", "_head_timer", "_head_of", "_body_timer", "_body_of")

    def __init__(
        self, manager: GuardedServer, *, loop: asyncio.AbstractEventLoop, limits: RestLimits, **kwargs: Any
    ) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._limits = limits
        self._refused = False
        self._received_at = 0.0  # when the client last sent anything
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_of = -1  # the request count when the head being timed started
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_of: StreamReader | None = None  # the incomplete body being timed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        assert isinstance(server, GuardedServer)
        if server.open >= self._limits.max_connections:
            self._refused = True
            server.refuse(transport)
            return
        server.open += 1
        self._received_at = self._loop.time()
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        if isinstance(self._manager, GuardedServer):  # None once lost
            self._manager.open -= 1
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = self._body_of = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        now = self._received_at = self._loop.time()
        super().data_received(data)
        if self._waiter is not None and not self._waiter.done():
            # waiting for a request and none is complete: its head is arriving in pieces
            if self._head_timer is None or self._head_of != self._request_count:
                if self._head_timer is not None:
                    self._head_timer.cancel()
                self._head_of = self._request_count
                self._head_timer = self._loop.call_at(now + self._limits.header_timeout, self._head_due)
        elif self._messages:
            payload = self._messages[-1][1]
            if payload is not self._body_of and isinstance(payload, StreamReader) and not payload.is_eof():
                # a request whose body is still to come
                if self._body_timer is not None:
                    self._body_timer.cancel()
                self._body_of = payload
                self._body_timer = self._loop.call_at(now + self._limits.body_timeout, self._body_due)

    def _head_due(self) -> None:
        self._head_timer = None
        if self._request_count == self._head_of and self._waiter is not None and not self._waiter.done():
            self._cut(
                "no complete request head within %g s (--rest_header_timeout_seconds)", self._limits.header_timeout
            )

    def _body_due(self) -> None:
        self._body_timer = None
        payload = self._body_of
        if payload is None or payload.is_eof() or self.transport is None:
            self._body_of = None
            return
        now = self._loop.time()
        due = self._received_at + self._limits.body_timeout
        if self._reading_paused:  # we stopped reading, not the client sending
            due = now + self._limits.body_timeout
        if now < due:
            self._body_timer = self._loop.call_at(due, self._body_due)
            return
        self._cut("request body stalled for %g s (--rest_body_timeout_seconds)", self._limits.body_timeout)

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (or to a fault of its own, 500)."""
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        detail = (exc.message or HTTPStatus(status).phrase).strip().splitlines()[0].rstrip(":")
        log.debug("REST client %s: invalid HTTP request: %s", request.remote, detail)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already")
        response = web.Response(
            status=status,
            text=json.dumps({"error": f"Invalid HTTP request - {detail}"}),
            content_type="application/json",
        )
        response.force_close()
        return response

    def _cut(self, why: str, seconds: float) -> None:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        log.info("REST client %s: " + why + ": connection closed", _address(peer), seconds)
        self.force_close()


def _address(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
