"""`dropin serve --workers N`: a supervisor and N full servers listening on the same ports.

Each worker is a whole `dropin serve` (own event loop, own GIL, own copy of every model) started
as `python -m dropin serve ...` with SO_REUSEPORT on, so the kernel spreads new connections over
the workers. The supervisor loads no model and serves no request. It

- checks the ports are free (port 0: picks one for all) and keeps them bound, not listening, with
  SO_REUSEPORT, so that no unrelated server takes them while a worker restarts;
- starts the workers with a control channel each (link.py) and logs "server ready" when
  every worker is ready;
- relays what must reach every worker: HandleReloadConfigRequest and POST /v1/config/reload
  (sent to all workers in one global order, and replayed to a restarted worker), and /metrics
  snapshots (the worker answering a scrape sums every worker's counters, and those of workers
  that exited, so that counters never go down);
- restarts a worker that dies, with backoff; forwards SIGTERM/SIGINT to the workers and waits for
  their graceful stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .link import ORDERED_OPS, Channel, ChannelClosed
from .metrics_merge import WorkerCounters

if TYPE_CHECKING:
    from ..server import ServerSettings

log = logging.getLogger("dropin.workers")

READY_LINE = "initial model loading finished: server ready"  # what single mode logs, too
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
STABLE_SECONDS = 60.0  # a worker that ran this long restarts without the backoff it had built up
KILL_MARGIN = 10.0  # after the grace period, how long workers get before SIGKILL


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    ready: bool = False
    started_at: float = 0.0
    backoff: float = BACKOFF_FIRST
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0


def reserve_port(host: str, port: int, what: str) -> socket.socket:
    """Check that nobody listens on host:port (a bind as a server does, without SO_REUSEPORT),
    then hold the port: bound with SO_REUSEPORT, not listening, so that the workers can join it
    and unrelated servers cannot. Port 0 picks a free port."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family) as probe:
            port = probe.getsockname()[1]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise OSError(f"cannot listen for {what} on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class Supervisor:
    """Runs `count` workers, each `python -m dropin serve <serve_args> --port P [--rest_port R]
    --worker_index I --worker_control_fd FD`, until SIGTERM/SIGINT."""

    def __init__(
        self,
        count: int,
        serve_args: Sequence[str],
        port: int,
        rest_port: int,
        grace_seconds: float,
        python: str = sys.executable,
    ) -> None:
        self.count = count
        self.serve_args = list(serve_args)
        self.port = port
        self.rest_port = rest_port
        self.grace_seconds = grace_seconds
        self.python = python
        self.workers = [Worker(i) for i in range(1, count + 1)]
        self.stopping = asyncio.Event()
        self.all_ready = False
        self.failed_start: int | None = None  # exit code of a worker that could not start
        # The last HandleReloadConfigRequest (None: none, or config.json was applied since):
        # a restarted worker gets it before it reports ready.
        self._replay: dict[str, Any] | None = None
        self.counters = WorkerCounters()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        log.info("starting %d workers on gRPC port %d%s", self.count, self.port,
                 f" and REST port {self.rest_port}" if self.rest_port else "")
        for worker in self.workers:
            await self._start(worker)
        supervise = [asyncio.create_task(self._supervise(w)) for w in self.workers]
        await self.stopping.wait()
        if self.failed_start is None:
            log.info("shutting down: finishing requests in flight (up to %g s)", self.grace_seconds)
        codes = await self._stop_all()
        for task in supervise:
            task.cancel()
        await asyncio.gather(*supervise, return_exceptions=True)
        if self.failed_start is not None:
            return self.failed_start
        bad = {w.index: c for w, c in zip(self.workers, codes, strict=True) if c not in (0, None)}
        if bad:
            log.error("stopped; workers that did not stop cleanly: %s",
                      ", ".join(f"worker {i} ({_describe(c)})" for i, c in bad.items()))
            return 1
        log.info("stopped")
        return 0

    async def _start(self, worker: Worker) -> None:
        ours, theirs = socket.socketpair()
        args = [
            *self.serve_args, "--workers", "1", "--port", str(self.port), "--rest_port", str(self.rest_port),
            "--worker_index", str(worker.index), "--worker_control_fd", str(theirs.fileno()),
        ]
        worker.proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "dropin", "serve", *args, pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL
        )
        theirs.close()
        self.counters.started(worker.pid)
        worker.ready = False
        worker.started_at = time.monotonic()
        worker.channel = channel = await Channel.open(ours)
        channel.on_event = lambda op, a: self._on_event(worker, op, a)
        channel.on_call = lambda op, a: self._on_call(worker, op, a)
        worker.tasks = [asyncio.create_task(channel.run())]
        log.info("worker %d started (pid %d)", worker.index, worker.pid)

    async def _supervise(self, worker: Worker) -> None:
        """Wait for the worker to exit; restart it (with backoff) unless stopping."""
        while True:
            code = await worker.proc.wait() if worker.proc is not None else None
            self.counters.exited(worker.pid)
            if worker.channel is not None:
                worker.channel.close()
            if self.stopping.is_set():
                return
            if code is not None:
                if not self.all_ready:  # an error at start-up would repeat in every restart
                    log.error("worker %d (pid %d) exited with %s before the server was ready: stopping",
                              worker.index, worker.pid, _describe(code))
                    self.failed_start = code if code > 0 else 1
                    self.stopping.set()
                    return
                if time.monotonic() - worker.started_at > STABLE_SECONDS:
                    worker.backoff = BACKOFF_FIRST
                log.error("worker %d (pid %d) exited with %s; restarting it in %g s",
                          worker.index, worker.pid, _describe(code), worker.backoff)
            try:
                await asyncio.wait_for(self.stopping.wait(), worker.backoff)
                return
            except asyncio.TimeoutError:
                pass
            worker.backoff = min(worker.backoff * 2, BACKOFF_MAX)
            try:
                await self._start(worker)
            except OSError as exc:  # no process (memory, process limits): try again later
                log.error(
                    "worker %d: cannot start a process: %s; trying again in %g s", worker.index, exc, worker.backoff
                )
                worker.proc = None

    async def _stop_all(self) -> list[int | None]:
        running = [w for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for worker in running:
            _signal(worker, signal.SIGTERM)

        async def wait(worker: Worker) -> int | None:
            assert worker.proc is not None
            try:
                return await asyncio.wait_for(worker.proc.wait(), self.grace_seconds + KILL_MARGIN)
            except asyncio.TimeoutError:
                log.error("worker %d (pid %d) did not stop in time: killing it", worker.index, worker.pid)
                _signal(worker, signal.SIGKILL)
                return await worker.proc.wait()

        await asyncio.gather(*(wait(w) for w in running))
        for worker in self.workers:
            if worker.channel is not None:
                worker.channel.close()
        return [w.proc.returncode if w.proc is not None else None for w in self.workers]

    # -- control channel ---------------------------------------------------------------------

    def _on_event(self, worker: Worker, op: str, args: dict[str, Any]) -> None:
        if op == "hello":
            # Sent without an await in between: the replay is ordered before any later relay.
            assert worker.channel is not None
            if self._replay is not None:
                worker.channel.call_nowait("reload_config", self._replay).add_done_callback(_ignore)
            worker.channel.event("synced")
        elif op == "ready":
            worker.ready = True
            if not self.all_ready and all(w.ready for w in self.workers):
                self.all_ready = True
                log.info(
                    "%s (%d workers: pids %s)", READY_LINE, self.count, ", ".join(str(w.pid) for w in self.workers)
                )
            elif self.all_ready:
                log.info("worker %d (pid %d) ready", worker.index, worker.pid)
        elif op == "config_file_applied":
            self._replay = None

    def _on_call(self, worker: Worker, op: str, args: dict[str, Any]) -> Awaitable[Any]:
        if op == "fanout":
            return self._fanout(worker, args["op"], args["args"], args["include_self"], args["wait"])
        if op == "metrics":
            self.counters.reported(args["own"])  # recorded before the scrape can show it
            return self._metrics(worker, args["wait"])
        raise RuntimeError(f"unknown call {op}")

    async def _metrics(self, origin: Worker, wait: float) -> dict[str, Any]:
        """For a scrape on `origin`: the other workers' snapshots (each recorded before it is
        shown; one from a worker that has exited meanwhile is left out, its counts being in
        "exited" already) and the counters of the workers that exited."""
        results = await self._fanout(origin, "metrics_snapshot", {}, include_self=False, wait=wait)
        for index, result in results.items():
            if isinstance(result, dict) and "models" in result and not self.counters.reported(result):
                results[index] = {"error": "exited; its counts are among those of exited workers"}
        return {"workers": results, "exited": self.counters.exited_snapshot()}

    async def _fanout(
        self, origin: Worker, op: str, args: dict[str, Any], include_self: bool, wait: float
    ) -> dict[int, Any]:
        """Send `op` to every connected worker (but the origin unless `include_self`), all in one
        go so that every worker sees relayed changes in the same order. The origin's own result
        is awaited without limit (it answers its client after applying the change itself, as a
        single server would); the others' for `wait` seconds more."""
        if op == "reload_config":
            self._replay = args
        elif op == "reload_config_file":
            self._replay = None
        calls: dict[int, asyncio.Future[Any]] = {}
        for worker in self.workers:
            if (worker is origin and not include_self) or worker.channel is None or worker.channel.closed:
                continue
            try:
                calls[worker.index] = worker.channel.call_nowait(op, args)
            except ChannelClosed:
                pass
        own = calls.get(origin.index)
        results: dict[int, Any] = {}
        if own is not None:
            results[origin.index] = await _result(own)
        others = {i: f for i, f in calls.items() if i != origin.index}
        if others:
            done, _ = await asyncio.wait(others.values(), timeout=wait)
            for i, future in others.items():
                if future in done:
                    results[i] = await _result(future)
                else:
                    results[i] = {"error": f"no answer within {wait:g} s"}
                    if op in ORDERED_OPS:  # it still applies it, in order; only the wait ended
                        log.warning("worker %d has not finished %s within %g s", i, op, wait)
                    future.add_done_callback(_ignore)
        return results


async def _result(future: asyncio.Future[Any]) -> Any:
    try:
        return await future
    except Exception as exc:
        return {"error": str(exc) or type(exc).__name__}


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _signal(worker: Worker, sig: int) -> None:
    try:
        assert worker.proc is not None
        worker.proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _describe(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def serve_workers(count: int, serve_args: Sequence[str], settings: ServerSettings) -> int:
    """`dropin serve --workers N`: reserve the ports, run the workers until SIGTERM/SIGINT; the
    exit code (1 when a port is taken, a worker's exit code when it could not start)."""
    held: list[socket.socket] = []
    try:
        held.append(reserve_port(settings.grpc_bind_address, settings.port, "gRPC"))
        if settings.rest_port:
            held.append(reserve_port(settings.rest_bind_address, settings.rest_port, "REST"))
    except OSError as exc:
        log.error("%s", exc)
        for sock in held:
            sock.close()
        return 1
    port = held[0].getsockname()[1]  # port 0: the one picked, for every worker
    try:
        grace = settings.shutdown_delay_seconds + settings.shutdown_grace_seconds  # the workers' whole stop
        supervisor = Supervisor(count, serve_args, port, settings.rest_port, grace)
        return asyncio.run(supervisor.run())
    except OSError as exc:  # no worker process at start-up; the started ones stop with the channel
        log.error("cannot start workers: %s", exc)
        return 1
    finally:
        for sock in held:
            sock.close()
