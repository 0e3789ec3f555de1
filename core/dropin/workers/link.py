"""The control channel between the `--workers N` supervisor and one worker, and the worker's end.

One UNIX stream socket per worker (a `socketpair`, its worker end inherited as a file
descriptor), carrying one JSON object per line:

- `{"id": n, "op": name, "args": {...}}`: a call; answered by `{"reply": n, "result": ...}` or
  `{"reply": n, "error": "..."}`;
- `{"op": name, "args": {...}}` without an id: an event, not answered.

Worker to supervisor: the events `listening`, `ready`, `config_file_applied`, and the call
`fanout` (ask other workers, see `Supervisor`) and `metrics` (every worker's counters for a
scrape). Supervisor to worker: the calls
`reload_config`, `reload_config_file`, `metrics_snapshot`, and the event `synced`. Calls that
change the models are applied one at a time in the order they arrive, which is the order the
supervisor sent them in: every worker applies the same sequence.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import json
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("dropin.workers")

LINE_LIMIT = 256 << 20  # a ModelServerConfig or a metrics snapshot fits in one line

Handler = Callable[[dict[str, Any]], Awaitable[Any]]  # a worker's handler of one op


class ChannelClosed(ConnectionError):
    pass


class Channel:
    """Calls and events over one stream, both ways. `run()` reads until EOF; `on_call` answers
    calls, `on_event` receives events (both set before `run`). Both are called as messages arrive,
    in order; `on_call` returns an awaitable of the result."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.on_call: Callable[[str, dict[str, Any]], Awaitable[Any]] | None = None  # called, then awaited
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket) -> Channel:
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=LINE_LIMIT)
        return cls(reader, writer)

    def send(self, message: dict[str, Any]) -> None:
        """Queue one message; never blocks, so messages sent without an `await` between them
        leave in that order."""
        if self.closed:
            raise ChannelClosed("control channel closed")
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def event(self, op: str, **args: Any) -> None:
        self.send({"op": op, "args": args})

    def call_nowait(self, op: str, args: dict[str, Any]) -> asyncio.Future[Any]:
        """Send a call now; the future gets its result (or ChannelClosed / RuntimeError)."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            self.send({"id": call_id, "op": op, "args": args})
        except ChannelClosed:
            del self._pending[call_id]
            raise
        return future

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        return await self.call_nowait(op, args)

    async def run(self) -> None:
        """Read messages until EOF; then fail every call still waiting."""
        try:
            while line := await self.reader.readline():
                self._dispatch(json.loads(line))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            log.debug("control channel: %s", exc)
        finally:
            self.closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed("control channel closed"))
            self._pending.clear()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "reply" in message:
            future = self._pending.pop(message["reply"], None)
            if future is not None and not future.done():
                if "error" in message:
                    future.set_exception(RuntimeError(message["error"]))
                else:
                    future.set_result(message.get("result"))
            return
        op, args = message["op"], message.get("args") or {}
        if "id" not in message:
            if self.on_event is not None:
                self.on_event(op, args)
            return
        try:
            if self.on_call is None:
                raise RuntimeError(f"no handler for {op}")
            result = self.on_call(op, args)
        except Exception as exc:
            self.send({"reply": message["id"], "error": str(exc) or type(exc).__name__})
            return
        task = asyncio.create_task(self._answer(message["id"], result))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, call_id: int, result: Awaitable[Any]) -> None:
        try:
            reply: dict[str, Any] = {"reply": call_id, "result": await result}
        except Exception as exc:
            reply = {"reply": call_id, "error": str(exc) or type(exc).__name__}
        if not self.closed:
            self.send(reply)

    def close(self) -> None:
        self.closed = True
        self.writer.close()


# Calls that change the models: applied in arrival order, after the initial loading.
ORDERED_OPS = frozenset({"reload_config", "reload_config_file"})


class WorkerLink:
    """A worker's end: tells the supervisor how it is doing, relays what must reach every worker,
    and applies what other workers relayed. `handlers` maps each op to its coroutine."""

    def __init__(self, index: int, fd: int) -> None:
        self.index = index
        self._sock = socket.socket(fileno=fd)
        self.channel: Channel | None = None
        self.handlers: dict[str, Handler] = {}
        self.closed = asyncio.Event()  # the supervisor is gone: stop
        self._synced = asyncio.Event()
        self._ordered: asyncio.Queue[tuple[str, dict[str, Any], asyncio.Future[Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []

    async def connect(self) -> None:
        self.channel = channel = await Channel.open(self._sock)
        channel.on_call = self._on_call
        channel.on_event = self._on_event
        self._tasks.append(asyncio.create_task(self._run(channel)))
        channel.event("hello", pid=os.getpid())

    async def _run(self, channel: Channel) -> None:
        await channel.run()
        if not self.closed.is_set():
            log.warning("control channel to the supervisor closed: stopping")
        self.closed.set()

    def notify(self, event: str, **args: Any) -> None:
        if self.channel is not None and not self.channel.closed:
            self.channel.event(event, **args)

    async def fanout(self, op: str, args: dict[str, Any], include_self: bool, wait: float) -> dict[int, Any]:
        """Have the supervisor send `op` to the other workers (and to this one, in the global order,
        with `include_self`). Returns {worker index: result or {"error": ...}}: this worker's
        result always (when included), the others' as far as they arrived within `wait` seconds."""
        if self.channel is None:
            raise ChannelClosed("not connected")
        return {int(k): v for k, v in (await self.channel.call(
            "fanout", {"op": op, "args": args, "include_self": include_self, "wait": wait}
        )).items()}

    async def call(self, op: str, args: dict[str, Any]) -> Any:
        """Call the supervisor itself (e.g. `metrics`)."""
        if self.channel is None:
            raise ChannelClosed("not connected")
        return await self.channel.call(op, args)

    async def synced(self) -> None:
        """After the initial loading: apply what the supervisor replays (the models other workers
        were told to serve since they started), then return; from now on relayed changes apply."""
        self._tasks.append(asyncio.create_task(self._apply_in_order()))
        # a supervisor gone meanwhile sends nothing more: go on, to stop
        waits = [asyncio.create_task(self._synced.wait()), asyncio.create_task(self.closed.wait())]
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    def _on_call(self, op: str, args: dict[str, Any]) -> Awaitable[Any]:
        handler = self.handlers.get(op)
        if handler is None:
            raise RuntimeError(f"unknown op {op}")
        if op not in ORDERED_OPS:
            return handler(args)
        # queued now, as it arrives: the order of the channel is the order of application
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._ordered.put_nowait((op, args, future))
        return future

    def _on_event(self, op: str, args: dict[str, Any]) -> None:
        if op == "synced":
            # queued behind the replayed calls, so that it is seen after they are applied
            self._ordered.put_nowait((op, args, asyncio.get_running_loop().create_future()))

    async def _apply_in_order(self) -> None:
        while True:
            op, args, future = await self._ordered.get()
            if op == "synced":
                self._synced.set()
                continue
            try:
                result = await self.handlers[op](args)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.channel is not None:
            self.channel.close()
        else:
            self._sock.close()


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send SIGTERM (a graceful stop) to this process when its parent dies,
    however it dies; the closed control channel covers a parent that died before this call."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the control channel alone
        pass
