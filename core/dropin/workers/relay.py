"""A worker's share of `--workers N`: what one worker receives that every worker must see.

HandleReloadConfigRequest and POST /v1/config/reload reach one worker; it has the supervisor send
them to every worker (itself included, in one global order) and answers with its own outcome.
A /metrics scrape reaches one worker; it adds every other worker's counters, and those of the
workers that exited, to its own. The supervisor's side is supervisor.py, the channel link.py.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
from typing import TYPE_CHECKING, Any

from .._proto.tensorflow_serving.config import model_server_config_pb2
from ..config import ConfigError
from ..metrics import Metrics
from .link import ChannelClosed, WorkerLink
from .metrics_merge import merged, snapshot

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("dropin.server")  # reported by the worker's server

# How long the worker that received a reload waits for the others to have applied it too (they
# do in any case, in order), and how long a scrape waits for their metrics.
RELAY_WAIT_SECONDS = 30.0
METRICS_WAIT_SECONDS = 2.0


class WorkerRelay:
    """Relays reloads and metrics between this worker's `server` and the others, over `link`."""

    def __init__(self, server: Server, link: WorkerLink) -> None:
        self.server = server
        self.link = link
        self._snapshots = itertools.count(1)  # numbers this worker's metrics snapshots
        link.handlers.update({
            "reload_config": self._relayed_reload_config,
            "reload_config_file": self._relayed_reload_config_file,
            "metrics_snapshot": self._metrics_snapshot,
        })

    async def reload_config_file(self) -> bool:
        """POST /v1/config/reload on a worker: every worker re-reads config.json (if any) and
        rescans; this worker's outcome answers."""
        own = (await self._fanout("reload_config_file", {})).get(self.link.index) or {}
        if "invalid" in own:
            raise ConfigError(own["invalid"])
        if "changed" not in own:
            raise RuntimeError(f"config reload not applied: {own.get('error')}")
        return bool(own["changed"])

    async def reload_config(self, server_config: Any) -> None:
        """HandleReloadConfigRequest on a worker: check it here, then have every worker apply it
        (in one order for all); returns once this worker applied it."""
        self.server.models_from_proto(server_config)  # refused here, it reaches no worker
        config = base64.b64encode(server_config.SerializeToString()).decode()
        own = (await self._fanout("reload_config", {"config": config})).get(self.link.index) or {}
        if "invalid" in own:
            raise ConfigError(own["invalid"])
        if "applied" not in own:
            raise RuntimeError(f"reload config request not applied: {own.get('error')}")

    async def _relayed_reload_config_file(self, args: dict[str, Any]) -> dict[str, Any]:
        server = self.server
        try:
            changed = await server.reload_config_file() if server.config_file is not None else False
        except ConfigError as exc:  # the same file, so the same answer on every worker
            return {"invalid": exc.details}
        return {"changed": await server.manager.sync_all() or changed}

    async def _relayed_reload_config(self, args: dict[str, Any]) -> dict[str, Any]:
        server_config = model_server_config_pb2.ModelServerConfig.FromString(base64.b64decode(args["config"]))
        try:
            await self.server.reload_config_here(server_config)
        except ConfigError as exc:  # checked by the worker that received it: not expected here
            return {"invalid": exc.details}
        return {"applied": True}

    async def _fanout(self, op: str, args: dict[str, Any]) -> dict[int, Any]:
        results = await self.link.fanout(op, args, include_self=True, wait=RELAY_WAIT_SECONDS)
        late = [i for i, r in results.items() if i != self.link.index and isinstance(r, dict) and "error" in r]
        if late:
            log.warning(
                "%s: workers %s report %s", op, ", ".join(map(str, late)), "; ".join(results[i]["error"] for i in late)
            )
        return results

    async def _metrics_snapshot(self, args: dict[str, Any]) -> dict[str, Any] | None:
        metrics = self.server.metrics
        if metrics is None:
            return None
        # "seq" orders this worker's snapshots (the supervisor keeps the latest one)
        return {"worker": self.link.index, "pid": os.getpid(), "seq": next(self._snapshots), **snapshot(metrics)}

    async def render_metrics(self) -> bytes:
        """/metrics on a worker: this worker's counters plus every other worker's and those of the
        workers that exited (as the supervisor recorded them). A worker that does not answer in
        time is left out, and a comment line says so. Everything shown is one snapshot per worker,
        the very one the supervisor recorded."""
        metrics = self.server.metrics
        assert metrics is not None
        own = await self._metrics_snapshot({})
        assert own is not None
        try:
            reply = await self.link.call("metrics", {"own": own, "wait": METRICS_WAIT_SECONDS})
        except ChannelClosed:
            reply = {"workers": {}, "exited": None}
        results = {int(i): r for i, r in reply["workers"].items()}
        snaps = [own, *(r for r in results.values() if isinstance(r, dict) and "models" in r)]
        comments = [f"# dropin worker {s['worker']} (pid {s['pid']}): {s['requests']} requests"
                    for s in sorted(snaps, key=lambda s: s["worker"])]
        comments += [f"# dropin worker {i}: left out ({r['error']})" for i, r in sorted(results.items())
                     if isinstance(r, dict) and "error" in r]
        exited = reply.get("exited")
        if exited is not None:
            comments.append(f"# dropin workers that exited: {exited['requests']} requests, still counted")
            snaps.append(exited)
        return ("\n".join(comments) + "\n").encode() + merged(Metrics(metrics.families), snaps).render()
