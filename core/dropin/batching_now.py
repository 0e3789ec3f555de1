"""Dynamic batching of requests served in gRPC handler threads (`BatchingModel.infer_now`).

The loop's batcher (batching.py) parks each request as a future and runs a batch as a task. A
handler thread cannot park its call: it must answer it. So here the first request of a group
leads: it waits until the group is full or `batch_timeout_micros` have passed, runs the batch
through the wrapped model's `infer_now` in its own thread and hands every other request its rows;
those wait on an event meanwhile. Nothing goes through the event loop or a worker thread: one
wake-up per follower instead of two hand-offs each way (docs/performance.md).

The rules are the loop's: the same groups (dtypes and non-batch dims), a request that does not fit
closes the group and starts the next, and a failed batch is rerun request by request, here each
request in its own thread and all at once, so only a request whose own data fails gets an error.
Groups are kept apart from the loop's: a batch holds requests of handler threads or of the loop
(REST, inputs that need a conversion), not both. So with gRPC a batch holds at most as many
requests as there are handler threads (`--grpc_max_threads`); once every one of them waits in a
group, nobody is left to join it, and it runs without waiting out its timeout.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Hashable, Mapping
from time import perf_counter
from typing import TYPE_CHECKING

import numpy as np

from .batching import BatchedOutputs, BatchRun, server_fault, timings
from .errors import DropinError

if TYPE_CHECKING:
    from .batching import BatchingModel

log = logging.getLogger("dropin.batching")

#: The gRPC server's handler threads (`--grpc_max_threads`), set when it starts: a group holding
#: that many requests is full, whatever its rows. None: not known (no such bound).
handler_threads: int | None = None


class _Waiting:
    """A request in a group: what the leader hands it back."""

    __slots__ = ("inputs", "rows", "queued", "done", "outputs", "error", "alone")

    def __init__(self, inputs: Mapping[str, np.ndarray], rows: int) -> None:
        self.inputs = inputs
        self.rows = rows
        self.queued = perf_counter()
        self.done = threading.Event()
        self.outputs: BatchedOutputs | None = None
        self.error: BaseException | None = None
        self.alone = False  # the batch failed: run on its own


class _Collecting:
    """A group's requests; `full` wakes its leader before the timeout."""

    __slots__ = ("waiting", "rows", "full")

    def __init__(self) -> None:
        self.waiting: list[_Waiting] = []
        self.rows = 0
        self.full = threading.Event()


class ThreadBatcher:
    """The groups of one batching model version's handler-thread requests."""

    def __init__(self, batching: BatchingModel) -> None:
        self._batching = batching
        self._lock = threading.Lock()
        self._groups: dict[Hashable, _Collecting] = {}

    def infer(self, inputs: Mapping[str, np.ndarray], key: Hashable, rows: int) -> BatchedOutputs:
        """This request's rows of its batch's outputs (`key`, `rows`: BatchingModel._key)."""
        batching = self._batching
        me = _Waiting(inputs, rows)
        with self._lock:
            group = self._groups.get(key)
            if group is not None and group.rows + rows > batching.max_batch_size:
                self._close(key, group)  # its leader runs it without this request
                group = None
            leads = group is None
            if group is None:
                group = self._groups[key] = _Collecting()
            group.waiting.append(me)
            group.rows += rows
            if group.rows >= batching.max_batch_size or len(group.waiting) == handler_threads:
                self._close(key, group)
        if leads:
            group.full.wait(batching.timeout_seconds)
            with self._lock:
                if self._groups.get(key) is group:
                    del self._groups[key]
            self._run(group.waiting)  # nobody joins a group once it is out of the table
        else:
            me.done.wait()
        if me.alone:
            return batching.alone_now(me.inputs, me.rows, me.queued)
        if me.outputs is None:
            raise me.error if me.error is not None else RuntimeError("the batch's leader ended without a result")
        return me.outputs

    def _close(self, key: Hashable, group: _Collecting) -> None:
        """Under the lock: no request joins `group` any more; its leader runs it now."""
        del self._groups[key]
        group.full.set()

    def _run(self, batch: list[_Waiting]) -> None:
        """The leader's part: one inference for the batch, every request's rows or error handed out."""
        batching = self._batching
        started = perf_counter()
        total = sum(w.rows for w in batch)
        try:
            try:
                if len(batch) == 1:
                    outputs = batching.model.infer_now(batch[0].inputs)
                else:
                    feed = {name: np.concatenate([w.inputs[name] for w in batch], axis)
                            for name, axis in batching.input_axes}
                    outputs = batching.model.infer_now(feed)
            except Exception as exc:
                if len(batch) == 1 or server_fault(exc):
                    _fail(batch, exc)
                    return
                log.warning(
                    "%s: a batch of %d rows from %d requests failed (%s: %s); running each request on its own",
                    batching.label, total, len(batch), type(exc).__name__, exc,
                )
                for w in batch:
                    w.alone = True
                return
            try:
                parts = batching.split(outputs, [w.rows for w in batch], total) if len(batch) > 1 else [outputs]
            except DropinError as exc:  # outputs that cannot be split: the model's fault, final
                _fail(batch, exc)
                return
            wait, infer = timings(outputs, perf_counter() - started)
            run = BatchRun(total, len(batch))
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: ran a batch of %d from %d requests", batching.label, total, len(batch))
            for w, part in zip(batch, parts, strict=True):
                w.outputs = BatchedOutputs(part, wait + (started - w.queued), infer, run)
        finally:
            for w in batch:
                w.done.set()


def _fail(batch: list[_Waiting], exc: Exception) -> None:
    """Every request of the batch raises the error, each its own copy (a raised exception carries
    the traceback of the thread that raises it)."""
    for w in batch:
        w.error = DropinError(exc.status, exc.details) if isinstance(exc, DropinError) else copy.copy(exc)
