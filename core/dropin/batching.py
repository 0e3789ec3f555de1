"""Server-side dynamic batching: concurrent requests to one model version run as one inference.

`BatchingModel` wraps any backend's `LoadedModel`; the loader applies it at load time when a
model's configuration has `dynamic_batching`. Requests from the event loop batch here, entirely on
the loop (no locks); requests from gRPC handler threads (`infer_now`) batch in batching_now.py
by the same rules:

- a request joins the open group of requests whose inputs have the same dtypes and the same
  dims except the batch dim (only those can be concatenated);
- the first request of a group starts a `loop.call_later(batch_timeout)`; the group is flushed
  when its summed batch reaches `max_batch_size` or the timer fires;
- a flush concatenates every input along its batch axis, runs the wrapped model once (as a task,
  so that the next group collects meanwhile) and splits every output back by row offsets.

A request whose batch alone is `max_batch_size` or more, or whose inputs disagree on their batch
size, runs on its own, unchanged.

One request must never fail the others. Before joining a group, a request passes the wrapped
model's `check_inputs` (values the backend can never take are refused there, for that request
alone). A batch that still fails is run again request by request, concurrently, once: each gets
what it would have got alone, so only a request whose own data fails gets an error. Splitting the
batch in halves instead would take log2(n) rounds one after the other for one bad request, and
more inferences than this when several are bad; running each alone takes one round, on the
backend's parallel infer requests. Not rerun: a batch of one request, a `DropinError` with a
server status (the backend says the fault is its own, not the data's), and outputs that cannot
be split (the model's fault). So a request runs at most twice, and only after a failure.

Which way the wrapped backend runs an inference (a thread, or inline on the loop for tiny
OpenVINO models) does not matter: results are handed out only once its `infer` has returned.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Hashable, Mapping
from time import perf_counter
from typing import Any

import numpy as np

from .backend import InferOutputs, LoadedModel
from .config import DynamicBatching
from .errors import DropinError, Status
from .shapes import TensorSpec

log = logging.getLogger("dropin.batching")


class BatchingError(ValueError):
    """The model cannot be batched (raised at load time; the message is shown in GetModelStatus)."""


class BatchRun:
    """One inference of the wrapped model: its batch size (rows) and how many requests it served.
    Shared by the outputs of all those requests; the metrics count it once (`counted`)."""

    __slots__ = ("size", "requests", "counted")

    def __init__(self, size: int, requests: int) -> None:
        self.size = size
        self.requests = requests
        self.counted = False


class BatchedOutputs(InferOutputs):
    """One request's outputs, with its timings and the batch it ran in."""

    __slots__ = ("batch_run",)

    def __init__(
        self, outputs: Mapping[str, np.ndarray], wait_seconds: float, infer_seconds: float, batch_run: BatchRun
    ) -> None:
        super().__init__(outputs, wait_seconds, infer_seconds)
        self.batch_run = batch_run


def batch_axes(
    inputs: Mapping[str, TensorSpec], outputs: Mapping[str, TensorSpec], max_batch_size: int
) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], int]:
    """Where the batch dim of every input and output is, and the largest batch the model accepts
    (`max_batch_size`, lowered to the smallest upper bound of a ranged batch dim). Raises
    BatchingError when an input has no dynamic batch dim, or an output cannot be split by rows."""
    input_axes = []
    limit = max_batch_size
    for name in sorted(inputs):
        spec = inputs[name]
        axis = spec.batch_index
        if axis is None or axis >= spec.rank:
            raise BatchingError(
                f"dynamic_batching needs a batch dimension on every input; input {name} has shape "
                f"{spec.shape_text()} and layout {spec.layout or 'unknown'}"
            )
        dim = spec.shape[axis]
        if dim.high is not None and dim.high < 2:
            raise BatchingError(
                f"dynamic_batching needs a dynamic batch dimension on every input; input {name} has shape "
                f"{spec.shape_text()}" + (f" (batch dim {axis})" if axis else "")
            )
        if dim.high is not None:
            limit = min(limit, dim.high)
        input_axes.append((name, axis))
    output_axes = []
    for name in sorted(outputs):
        spec = outputs[name]
        axis = spec.batch_index
        if axis is None or axis >= spec.rank or spec.shape[axis].is_static:
            raise BatchingError(
                f"dynamic_batching cannot split output {name} by request: its shape {spec.shape_text()} "
                f"has no dynamic batch dimension" + (f" at dim {axis}" if axis else "")
            )
        output_axes.append((name, axis))
    return tuple(input_axes), tuple(output_axes), limit


class _Pending:
    """A request waiting in a group."""

    __slots__ = ("inputs", "rows", "future", "queued")

    def __init__(self, inputs: Mapping[str, np.ndarray], rows: int, future: asyncio.Future[BatchedOutputs]) -> None:
        self.inputs = inputs
        self.rows = rows
        self.future = future
        self.queued = perf_counter()


class _Group:
    """Requests that can be concatenated, collecting until full or timed out."""

    __slots__ = ("pending", "rows", "timer")

    def __init__(self) -> None:
        self.pending: list[_Pending] = []
        self.rows = 0
        self.timer: asyncio.TimerHandle | None = None


class BatchingModel(LoadedModel):
    """A `LoadedModel` that batches concurrent requests before the wrapped model sees them."""

    def __init__(self, model: LoadedModel, settings: DynamicBatching, label: str = "", backend: str = "") -> None:
        self.model = model
        self.label = label
        self.backend = backend
        self.streams = model.streams
        self.input_axes, output_axes, self.max_batch_size = batch_axes(
            model.inputs, model.outputs, settings.max_batch_size
        )
        if self.max_batch_size < settings.max_batch_size:
            log.warning(
                "%s: max_batch_size %d lowered to %d, the largest batch the model's inputs accept",
                label, settings.max_batch_size, self.max_batch_size,
            )
        # prepared once: how to slice rows out of each output
        self._output_slices = tuple((name, axis, (slice(None),) * axis) for name, axis in output_axes)
        self.timeout_seconds = settings.batch_timeout_micros * 1e-6
        self._timeout = self.timeout_seconds  # adjusted to the loop at the first request
        self._groups: dict[Hashable, _Group] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # batches running (a reference keeps them alive)
        self._loop: asyncio.AbstractEventLoop | None = None
        # gRPC handler threads batch without the loop when the wrapped model infers in them
        from .batching_now import ThreadBatcher  # (it builds on this module's classes)

        self.infers_now = model.infers_now
        self._now = ThreadBatcher(self) if model.infers_now else None

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self.model.inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self.model.outputs

    def close(self) -> None:
        # Called once no request uses the version: every group has been flushed, or holds only
        # cancelled requests, which a flush skips.
        self.model.close()

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        key, rows = self._key(inputs)
        if key is None or rows >= self.max_batch_size or rows == 0:
            return await self._alone(inputs, rows)
        self.model.check_inputs(inputs)  # refused here, a bad request fails alone
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._timeout = timer_delay(loop, self._timeout)
        group = self._groups.get(key)
        if group is not None and group.rows + rows > self.max_batch_size:
            self._flush(key, group)  # it runs without this request, which starts the next group
            group = None
        if group is None:
            group = self._groups[key] = _Group()
            group.timer = loop.call_later(self._timeout, self._flush, key, group)
        pending = _Pending(inputs, rows, loop.create_future())
        group.pending.append(pending)
        group.rows += rows
        if group.rows >= self.max_batch_size:
            self._flush(key, group)
        # A cancelled request (client gone) cancels only its future: the batch skips it.
        return await pending.future

    def infer_now(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """`infer` in a gRPC handler thread (batching_now.py), when the wrapped model infers there."""
        assert self._now is not None, "infer_now of a model that does not infer now"
        key, rows = self._key(inputs)
        if key is None or rows >= self.max_batch_size or rows == 0:
            return self.alone_now(inputs, rows, perf_counter())
        self.model.check_inputs(inputs)  # refused here, a bad request fails alone
        return self._now.infer(inputs, key, rows)

    def alone_now(self, inputs: Mapping[str, np.ndarray], rows: int, queued: float) -> BatchedOutputs:
        """One request through the wrapped model's `infer_now`, unbatched; waiting since `queued`."""
        started = perf_counter()
        outputs = self.model.infer_now(inputs)
        wait, infer = timings(outputs, perf_counter() - started)
        return BatchedOutputs(outputs, wait + (started - queued), infer, BatchRun(rows, 1))

    def _key(self, inputs: Mapping[str, np.ndarray]) -> tuple[Hashable | None, int]:
        """The group of a request (dtypes and non-batch dims of every input) and its batch size;
        key None when its inputs disagree on the batch size."""
        rows = -1
        key: list[Any] = []
        for name, axis in self.input_axes:
            array = inputs[name]
            shape = array.shape
            n = shape[axis]
            if n != rows:
                if rows >= 0:
                    return None, n
                rows = n
            key.append(array.dtype)
            key.append(shape[:axis] + shape[axis + 1 :])
        return tuple(key), rows

    async def _alone(self, inputs: Mapping[str, np.ndarray], rows: int) -> BatchedOutputs:
        started = perf_counter()
        outputs = await self.model.infer(inputs)
        wait, infer = timings(outputs, perf_counter() - started)
        return BatchedOutputs(outputs, wait, infer, BatchRun(rows, 1))

    def _flush(self, key: Hashable, group: _Group) -> None:
        if self._groups.get(key) is not group:
            return  # already flushed (a timer that fired as the group filled)
        del self._groups[key]
        assert group.timer is not None and self._loop is not None
        group.timer.cancel()
        live = [p for p in group.pending if not p.future.done()]
        if live:
            task = self._loop.create_task(self._run(live))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[_Pending]) -> None:
        started = perf_counter()
        total = sum(p.rows for p in batch)
        try:
            if len(batch) == 1:
                outputs = await self.model.infer(batch[0].inputs)
            else:
                feed = {name: np.concatenate([p.inputs[name] for p in batch], axis) for name, axis in self.input_axes}
                outputs = await self.model.infer(feed)
        except asyncio.CancelledError:  # the loop is shutting down
            for p in batch:
                p.future.cancel()
            raise
        except Exception as exc:
            if len(batch) == 1 or server_fault(exc):
                _fail(batch, exc)
            else:
                log.warning(
                    "%s: a batch of %d rows from %d requests failed (%s: %s); running each request on its own",
                    self.label, total, len(batch), type(exc).__name__, exc,
                )
                await asyncio.gather(*(self._rerun(p) for p in batch))
            return
        try:
            parts = self.split(outputs, [p.rows for p in batch], total) if len(batch) > 1 else [outputs]
        except DropinError as exc:
            _fail(batch, exc)
            return
        wait, infer = timings(outputs, perf_counter() - started)
        run = BatchRun(total, len(batch))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: ran a batch of %d from %d requests", self.label, total, len(batch))
        for p, part in zip(batch, parts, strict=True):
            if not p.future.done():
                p.future.set_result(BatchedOutputs(part, wait + (started - p.queued), infer, run))

    async def _rerun(self, pending: _Pending) -> None:
        """One request of a failed batch, on its own: its result or its own error, final."""
        if pending.future.done():  # cancelled meanwhile: the client is gone
            return
        started = perf_counter()
        try:
            result = await self._alone(pending.inputs, pending.rows)
        except asyncio.CancelledError:
            pending.future.cancel()
            raise
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)  # the data plane answers it as for any request
            return
        if not pending.future.done():
            result.wait_seconds += started - pending.queued  # the queue and the failed batch
            pending.future.set_result(result)

    def split(self, outputs: Mapping[str, np.ndarray], rows: list[int], total: int) -> list[dict[str, np.ndarray]]:
        """Each request's rows (`rows`: how many each has) of every output (views of the batch's
        arrays, no copies)."""
        parts: list[dict[str, np.ndarray]] = [{} for _ in rows]
        for name, axis, before in self._output_slices:
            array = outputs[name]
            if array.ndim <= axis or array.shape[axis] != total:
                log.error("%s: output %s of a batch of %d has shape %s", self.label, name, total, array.shape)
                raise DropinError(
                    Status.INTERNAL_ERROR,
                    f"dynamic_batching: output {name} of a batch of {total} has shape {tuple(array.shape)}, "
                    f"so it cannot be split by request; serve this model without dynamic_batching",
                )
            start = 0
            for part, n in zip(parts, rows, strict=True):
                end = start + n
                part[name] = array[start:end] if axis == 0 else array[before + (slice(start, end),)]
                start = end
        return parts


def server_fault(exc: Exception) -> bool:
    """True when the backend says a failure is its own, not its input's (a DropinError with a
    server status): rerunning the batch's requests one by one would only fail them again."""
    return isinstance(exc, DropinError) and exc.status.http_status >= 500


def _fail(batch: list[_Pending], exc: Exception) -> None:
    """Every request of the batch gets the error: a DropinError as raised (each request its own
    copy: a raised exception carries its traceback), anything else as it is, for the data plane
    to log and answer as it does for a request without batching."""
    for p in batch:
        if not p.future.done():
            p.future.set_exception(DropinError(exc.status, exc.details) if isinstance(exc, DropinError) else exc)


def timer_delay(loop: asyncio.AbstractEventLoop, seconds: float) -> float:
    """The `call_later` delay that waits about `seconds`. uvloop's timers count whole
    milliseconds, rounded to the nearest: 500 us would not wait at all (measured: batches of 1.0
    instead of 5), so sub-millisecond waits are rounded up there. asyncio's own timers keep the
    value (an idle loop sleeps until the next whole millisecond; a busy one fires in time)."""
    if seconds > 0 and type(loop).__module__.startswith("uvloop"):
        return math.ceil(round(seconds * 1e6) / 1000) / 1000
    return seconds


def timings(outputs: Mapping[str, np.ndarray], elapsed: float) -> tuple[float, float]:
    """(wait, infer) seconds of the wrapped model's call: its own report, else all inference."""
    infer = getattr(outputs, "infer_seconds", None)
    if infer is None:
        return 0.0, elapsed
    return getattr(outputs, "wait_seconds", 0.0), infer
