"""An OpenVINO model compiled for serving: runs requests without blocking the event loop.

Serving (`OpenVINOModel.infer`, on the event loop): the request is handed to a pool of `nireq`
threads, each running one infer request synchronously (`InferRequest.infer` releases the GIL);
the coroutine awaits the result and the loop never blocks. Exception: a model whose inferences
take under INLINE_SECONDS (a moving average of OpenVINO's InferRequest.latency) runs requests with
small inputs directly on the loop when an infer request is free, because the hop to a thread and
back costs more than such an inference (docs/performance.md). Every model starts in the threads.
gRPC handler threads call `infer_now` instead, which runs the infer request in the calling thread.
Each infer request owns its input tensors (`InferSlot`, tensors.py): inputs are copied into them,
or shared when large and writable, without OpenVINO's Python input dispatcher.

Why threads and not `AsyncInferQueue` callbacks (measured with openvino 2026.4, same throughput
and latency either way on this machine):
- a request that fails at inference time never calls the Python callback, so its awaiting
  coroutine would hang forever;
- the failed request then poisons the queue: every later `start_async` and `wait_all` raises that
  old error, so one bad request would break the model version for good;
- an `AsyncInferQueue` whose last reference is dropped by the garbage collector on an OpenVINO
  callback thread deadlocks in the request destructor.
A synchronous `infer()` raises the error to its caller and the request stays usable.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from operator import attrgetter
from time import perf_counter

import numpy as np
import openvino as ov

from dropin.backend import InferOutputs, LoadedModel, SequenceState
from dropin.dtypes import DType
from dropin.shapes import TensorSpec

from .messages import ov_message
from .metadata import port_names, tensor_spec
from .tensors import INLINE_BYTES, InferSlot, check_strings, string_tensor


class InferenceError(RuntimeError):
    """OpenVINO failed to run a request (the message is OpenVINO's, without its source locations)."""


#: Inferences shorter than this (a moving average) run on the event loop instead of a thread,
#: if their inputs are small (a model with dynamic shapes may get a large request at any time).
INLINE_SECONDS = 100e-6
INLINE_CAP = 2 * INLINE_SECONDS  # the most one inference counts for in that average (`_run`)
#: How many infer requests a fast model whose `nireq` the backend chose may grow to (`_slot_for`).
ELASTIC_LIMIT = 16


#: the size of an input array, summed over a request's inputs in C (no Python call per request)
_NBYTES = attrgetter("nbytes")
#: OpenVINO's own inference call, under the Python `InferRequest.infer` that wraps it in layers
#: of input dispatch and an OVDict of outputs: with the inputs already in the request's tensors,
#: this call is all a request needs, and each layer costs time served (docs/performance.md).
#: (request, {}, share_outputs, decode_strings) -> {output port: array}
_infer_in_place = ov.InferRequest.__bases__[0].infer


class OpenVINOModel(LoadedModel):
    """A compiled model with `nireq` infer requests, each used by one thread of a small pool.

    A stateful model's requests (`infer_sequence`) take any pooled infer request: the sequence's
    variable states are set into it before the inference and read back after it."""

    supports_sequences = True

    def __init__(
        self, model: ov.Model, compiled: ov.CompiledModel, nireq: int, label: str = "", elastic: bool = False
    ) -> None:
        input_names, output_names = port_names(model)
        parameters = model.get_parameters()
        results = model.get_results()
        self._inputs = {
            name: tensor_spec(name, port, parameters[i].get_layout(), "input")
            for i, (name, port) in enumerate(zip(input_names, compiled.inputs, strict=True))
        }
        self._outputs = {
            name: tensor_spec(name, port, results[i].get_layout(), "output")
            for i, (name, port) in enumerate(zip(output_names, compiled.outputs, strict=True))
        }
        # Prepared once: request names -> input port index, and which inputs/outputs hold strings.
        self._input_index = {name: i for i, name in enumerate(input_names)}
        self._string_inputs = frozenset(n for n, s in self._inputs.items() if s.dtype is DType.STRING)
        self._output_names = tuple(output_names)
        self._string_outputs = frozenset(
            i for i, n in enumerate(output_names) if self._outputs[n].dtype is DType.STRING
        )
        self.nireq = nireq
        self.label = label
        # `nireq` was the backend's choice, not the user's: a fast model may get more (`_slot_for`)
        self._elastic = elastic
        self._grow_lock = threading.Lock()
        try:
            self.streams = int(compiled.get_property("NUM_STREAMS"))
        except (RuntimeError, TypeError, ValueError):
            self.streams = None
        self._compiled: ov.CompiledModel | None = compiled
        self._input_types = tuple(port.get_element_type() for port in compiled.inputs)
        self._requests: queue.SimpleQueue[InferSlot] = queue.SimpleQueue()
        for _ in range(nireq):
            self._requests.put(InferSlot(compiled.create_infer_request(), len(compiled.inputs)))
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(nireq, thread_name_prefix="dropin-openvino")
        # Moving average of inference time. Models whose inferences take less than
        # INLINE_SECONDS run on the event loop: handing them to a thread and back costs more than
        # the inference. It starts high, so every model begins in the threads and is measured.
        self._inline_ewma = 1.0

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        return self._outputs

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:
        for name in self._string_inputs:
            check_strings(name, inputs[name])

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        feed = None
        if self._inline_ewma < INLINE_SECONDS:
            requests = self._requests
            try:
                slot = requests.get_nowait()
            except queue.Empty:  # every request is busy in a thread: queue behind them
                pass
            else:
                # a plain dict: the whole call was inference, without a wait, as the core counts a
                # call that reports no timings (InferOutputs costs more than the call)
                try:
                    if not self._string_inputs and slot.fill(inputs, self._input_index):  # the common request
                        return dict(zip(self._output_names, self._infer_slot(slot), strict=False))
                    feed = self._feed(inputs)
                    if sum(map(_NBYTES, feed.values())) <= INLINE_BYTES:
                        return dict(zip(self._output_names, self._run(slot, feed), strict=False))
                finally:
                    requests.put(slot)
        if feed is None:
            feed = self._feed(inputs)
        return await asyncio.get_running_loop().run_in_executor(executor, self._timed, feed, perf_counter())

    infers_now = True

    def infer_now(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """In the calling thread (a gRPC handler thread): `infer` releases the GIL, so other
        threads serve meanwhile; waits for a free infer request when all are busy."""
        if self._executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        requests = self._requests
        try:
            slot = requests.get_nowait()
        except queue.Empty:  # the wait for a free infer request is reported as such
            return self._timed(self._feed(inputs), perf_counter())
        try:  # no wait: a plain dict, as on the event loop (`infer`)
            if not self._string_inputs and slot.fill(inputs, self._input_index):
                return dict(zip(self._output_names, self._infer_slot(slot), strict=False))
            return dict(zip(self._output_names, self._run(slot, self._feed(inputs)), strict=False))
        finally:
            requests.put(slot)

    def _feed(self, inputs: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """The inputs by port index, strings as OpenVINO takes them."""
        index = self._input_index
        feed = {}
        try:  # a loop, not a comprehension: a comprehension is a call of its own (Python 3.11)
            for name, array in inputs.items():
                feed[index[name]] = array
        except KeyError as exc:
            raise KeyError(f"the model has no input {exc.args[0]!r} (inputs: {', '.join(self._inputs)})") from None
        if len(feed) != len(self._input_index):
            # an infer request keeps its last input tensors: running without one would compute
            # on an earlier request's data
            missing = sorted(set(self._input_index) - set(inputs))
            raise KeyError(f"missing input(s) {', '.join(missing)} (inputs: {', '.join(self._inputs)})")
        for name in self._string_inputs:  # OpenVINO takes fixed-width bytes, not object arrays
            feed[self._input_index[name]] = string_tensor(name, inputs[name])
        return feed

    async def infer_sequence(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None, keep_state: bool
    ) -> tuple[Mapping[str, np.ndarray], SequenceState | None]:
        executor = self._executor
        if executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        feed = self._feed(inputs)
        return await asyncio.get_running_loop().run_in_executor(
            executor, self._run_sequence, feed, state, keep_state, perf_counter()
        )

    infers_sequence_now = True

    def infer_sequence_now(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None, keep_state: bool
    ) -> tuple[Mapping[str, np.ndarray], SequenceState | None]:
        """In the calling thread (a gRPC handler thread), as `infer_now`."""
        if self._executor is None:
            raise RuntimeError(f"model {self.label} is closed")
        return self._run_sequence(self._feed(inputs), state, keep_state, perf_counter())

    def _run_sequence(
        self, feed: dict[int, np.ndarray], state: SequenceState | None, keep_state: bool, submitted: float
    ) -> tuple[InferOutputs, SequenceState | None]:
        """Runs in a pool thread: the sequence's state into a pooled infer request, the inference,
        the new state out of it (copies: the request serves other sequences next)."""
        started = perf_counter()
        slot = self._slot_for(feed)
        try:
            variables = slot.request.query_state()
            for variable in variables:
                if state is None:  # the sequence starts: every variable at its initial value
                    variable.reset()
                else:
                    variable.state = ov.Tensor(np.ascontiguousarray(state[variable.name]))
            results = self._run(slot, feed)
            new_state = {v.name: np.array(v.state.data, copy=True) for v in variables} if keep_state else None
            if not keep_state:  # the sequence ended: nothing of it stays in the request
                for variable in variables:
                    variable.reset()
        finally:
            self._requests.put(slot)
        pairs = zip(self._output_names, results, strict=False)
        return InferOutputs(pairs, started - submitted, perf_counter() - started), new_state

    def infer_requests(self) -> tuple[int, int]:
        # the slots not in the queue are in use (qsize is exact enough for a gauge)
        return self.nireq, self.nireq - self._requests.qsize()

    def _timed(self, feed: dict[int, np.ndarray], submitted: float) -> InferOutputs:
        """Runs in a pool thread or a gRPC handler thread, waiting while every infer request is
        busy: the time since `submitted` (queued for a pool thread, then for an infer request)
        is reported as ovms_wait_for_infer_req_time_us."""
        slot = self._slot_for(feed)
        started = perf_counter()
        try:
            results = self._run(slot, feed)
        finally:
            self._requests.put(slot)
        pairs = zip(self._output_names, results, strict=False)
        return InferOutputs(pairs, started - submitted, perf_counter() - started)

    def _slot_for(self, feed: dict[int, np.ndarray]) -> InferSlot:
        """A free infer request, waiting while every one is busy. Except for a fast model with small
        inputs whose `nireq` the backend chose (OpenVINO's optimum is 1 on this machine): gRPC
        handler threads would queue for its one request, and a thread put to sleep and woken
        costs more than such an inference (docs/performance.md). It gets another request instead,
        up to ELASTIC_LIMIT; that costs a few kilobytes, and the pool keeps it."""
        try:
            return self._requests.get_nowait()
        except queue.Empty:
            pass
        compiled = self._compiled
        if (
            self._elastic
            and compiled is not None
            and self.nireq < ELASTIC_LIMIT
            and self._inline_ewma < INLINE_SECONDS
            and sum(map(_NBYTES, feed.values())) <= INLINE_BYTES
        ):
            with self._grow_lock:
                if self.nireq < ELASTIC_LIMIT:
                    self.nireq += 1
                    return InferSlot(compiled.create_infer_request(), len(compiled.inputs))
        return self._requests.get()

    def _run(self, slot: InferSlot, feed: dict[int, np.ndarray]) -> tuple[np.ndarray, ...]:
        """The outputs, in the order of the model's."""
        if self._string_inputs:  # strings go through OpenVINO's dispatcher, which makes string tensors of them
            return self._infer_slot(slot, feed)
        try:
            slot.set_inputs(feed, self._input_types)
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO inference failed: {ov_message(exc)}") from None
        return self._infer_slot(slot)

    def _infer_slot(self, slot: InferSlot, feed: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, ...]:
        """The outputs of a slot whose inputs are set, or of `feed` given to OpenVINO's dispatcher."""
        request = slot.request
        try:
            if feed is None:
                # share_outputs=False: the results are copies, so the request's memory can be reused
                results = tuple(_infer_in_place(request, {}, False, False).values())
            else:  # share_inputs: no copy (the caller keeps them alive until we return)
                results = request.infer(feed, share_inputs=True, share_outputs=False, decode_strings=False).to_tuple()
        except RuntimeError as exc:
            raise InferenceError(f"OpenVINO inference failed: {ov_message(exc)}") from None
        # OpenVINO's own measure of the inference, without the wait for the GIL that a thread
        # pays afterwards (up to the 5 ms switch interval when the event loop is busy), into the
        # moving average that decides where the next one runs. Capped: outliers (the OS
        # preempting the inference) must not send a fast model back to the threads: under load
        # they come in runs, and a thread round trip costs more than such an inference; it takes
        # five in a row from 35 us. A slow model still averages over the limit. Threads may race
        # on this update and lose one: it is only a hint.
        ewma = self._inline_ewma
        self._inline_ewma = ewma + (min(request.latency * 1e-3, INLINE_CAP) - ewma) * 0.1
        if self._string_outputs:
            results = tuple(r.astype(object) if i in self._string_outputs else r for i, r in enumerate(results))
        return results

    def close(self) -> None:
        """Wait for the requests in flight, then release the threads, requests and compiled model."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        while not self._requests.empty():
            self._requests.get_nowait()
        self._compiled = None
