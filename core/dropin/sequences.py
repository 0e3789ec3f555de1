"""Stateful models: OVMS's sequence protocol, protocol-neutral.

A request to a stateful model carries two special inputs besides the model's own:
`sequence_id` (U64, shape (1)) and `sequence_control_input` (U32, shape (1): 0 none, 1 start,
2 end). `read_sequence_inputs` takes them out of the request, before the model's inputs are
validated (OVMS's order); the version's `SequenceTable` then opens, finds or ends the sequence
(OVMS's SequenceManager), and `SequenceTable.infer` runs the request with the sequence's state:
one request of a sequence at a time, in arrival order, while other sequences run concurrently.
The backend restores the state into a pooled infer request and hands the new one back
(`LoadedModel.infer_sequence`), so infer requests stay pooled and sequences never share state.
A gRPC handler thread runs a request in its own thread when the model offers
`infer_sequence_now` (`SequenceTable.infer_now`): the table and each sequence's lock are
thread-safe, the event loop's requests (REST, the first request) take the same locks.

Every sequence belongs to one loaded version (its `Servable`): a reload or a retired version
drops them, and their next request gets "Sequence with provided ID does not exist".
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .dtypes import DType
from .errors import DropinError, Status
from .shapes import TensorSpec, dim, format_shape

if TYPE_CHECKING:
    from .backend import LoadedModel, SequenceState
    from .models import ModelTable
    from .stateful_config import StatefulSettings
    from .validation import RequestTensor

log = logging.getLogger("dropin.sequences")

SEQUENCE_ID = "sequence_id"
SEQUENCE_CONTROL_INPUT = "sequence_control_input"
NO_CONTROL_INPUT, SEQUENCE_START, SEQUENCE_END = 0, 1, 2

#: the special inputs as a stateful model's extra inputs (REST decodes JSON numbers with them)
SPECIAL_SPECS: Mapping[str, TensorSpec] = {
    SEQUENCE_ID: TensorSpec(SEQUENCE_ID, DType.U64, (dim(1),)),
    SEQUENCE_CONTROL_INPUT: TensorSpec(SEQUENCE_CONTROL_INPUT, DType.U32, (dim(1),)),
}
_BAD_TYPE = {SEQUENCE_ID: Status.SEQUENCE_ID_BAD_TYPE, SEQUENCE_CONTROL_INPUT: Status.SEQUENCE_CONTROL_INPUT_BAD_TYPE}


def _special_value(name: str, tensor: RequestTensor) -> int:
    """One special input's value, checked as OVMS checks it: shape (1), one value of its type."""
    shape = tensor.shape
    if not shape:
        raise DropinError(Status.SPECIAL_INPUT_NO_TENSOR_SHAPE, f"input name: {name}")
    if len(shape) != 1:
        raise DropinError(
            Status.INVALID_NO_OF_SHAPE_DIMENSIONS, f"Required shape for {name} is: (1); Actual: {format_shape(shape)}"
        )
    if shape[0] != 1:
        raise DropinError(Status.INVALID_SHAPE, f"Required shape for {name} is: (1); Actual: {format_shape(shape)}")
    spec = SPECIAL_SPECS[name]
    if tensor.tf_dtype != spec.dtype.tf_enum:
        raise DropinError(_BAD_TYPE[name], f"Expected: {spec.dtype.value}; input name: {name}")
    try:
        return int(tensor.array(name, spec.dtype)[0])
    except DropinError as exc:  # no value, or more than one: not where OVMS looks for it
        raise DropinError(_BAD_TYPE[name], exc.message) from None


def read_sequence_inputs(
    request: Mapping[str, RequestTensor],
) -> tuple[int, int, Mapping[str, RequestTensor]]:
    """(sequence id, control value, the request without its special inputs): OVMS's checks of
    the special inputs, which run before the model's inputs are validated."""
    sequence_id = control = 0
    if SEQUENCE_ID in request:
        sequence_id = _special_value(SEQUENCE_ID, request[SEQUENCE_ID])
    if SEQUENCE_CONTROL_INPUT in request:
        control = _special_value(SEQUENCE_CONTROL_INPUT, request[SEQUENCE_CONTROL_INPUT])
    if control not in (NO_CONTROL_INPUT, SEQUENCE_START, SEQUENCE_END):
        raise DropinError(
            Status.INVALID_SEQUENCE_CONTROL_INPUT, f"Expected: 0 (none), 1 (start) or 2 (end); Actual: {control}"
        )
    if control != SEQUENCE_START and sequence_id == 0:
        raise DropinError(
            Status.SEQUENCE_ID_NOT_PROVIDED,
            "every request to a stateful model but one with sequence_control_input 1 (start) needs a sequence_id "
            "other than 0",
        )
    rest = {name: tensor for name, tensor in request.items() if name not in SPECIAL_SPECS}
    return sequence_id, control, rest


class Sequence:
    """One open sequence: its state between requests and the lock that orders its requests."""

    __slots__ = ("id", "state", "lock", "users", "idle", "ending", "closed", "id_array")

    def __init__(self, sequence_id: int) -> None:
        self.id = sequence_id
        self.state: SequenceState | None = None  # None until its first request has run
        self.lock = threading.Lock()  # the sequence's requests run one at a time
        self.users = 0  # requests that opened it and have not finished (running or waiting)
        self.idle = False  # no request since the cleaner's last pass
        self.ending = False  # its end request has arrived
        self.closed = False  # removed: requests still waiting for the lock fail
        self.id_array = np.array([sequence_id], dtype=np.uint64)  # the sequence_id output


class SequenceTable:
    """The open sequences of one loaded version of a stateful model (OVMS's SequenceManager)."""

    def __init__(
        self, model_name: str, version: int, settings: StatefulSettings, model_inputs: Mapping[str, TensorSpec]
    ) -> None:
        self.model_name = model_name
        self.version = version
        self.label = f"model {model_name} version {version}"  # for messages
        self.max_sequences = settings.max_sequence_number
        self.idle_cleanup = settings.idle_sequence_cleanup
        self.request_specs: Mapping[str, TensorSpec] = {**model_inputs, **SPECIAL_SPECS}
        self.sequences: dict[int, Sequence] = {}
        self._next_id = 1
        self._lock = threading.Lock()  # guards `sequences` and each sequence's flags and users

    def __len__(self) -> int:
        return len(self.sequences)

    def open(self, sequence_id: int, control: int) -> Sequence:
        """The sequence a request belongs to: started, found, or marked as ending. The request
        must then run it (`infer` or `infer_now`), which releases it."""
        with self._lock:
            sequence = self._open(sequence_id, control)
            sequence.users += 1
            return sequence

    def _open(self, sequence_id: int, control: int) -> Sequence:
        sequences = self.sequences
        if control == SEQUENCE_START:
            if len(sequences) >= self.max_sequences:
                raise DropinError(
                    Status.MAX_SEQUENCE_NUMBER_REACHED,
                    f"{self.label} has {len(sequences)} open sequences (max_sequence_number {self.max_sequences})",
                )
            if sequence_id == 0:
                sequence_id = self._unique_id()
            found = sequences.get(sequence_id)
            if found is not None:
                if found.ending:
                    raise DropinError(Status.SEQUENCE_TERMINATED, f"sequence_id: {sequence_id}")
                raise DropinError(Status.SEQUENCE_ALREADY_EXISTS, f"sequence_id: {sequence_id}")
            started = sequences[sequence_id] = Sequence(sequence_id)
            return started
        sequence = sequences.get(sequence_id)
        if sequence is None or sequence.ending:
            raise DropinError(
                Status.SEQUENCE_MISSING,
                f"sequence_id: {sequence_id} is not open on {self.label} (never started, ended, removed as idle, "
                f"or dropped when this version was loaded again)",
            )
        if control == SEQUENCE_END:
            sequence.ending = True
        return sequence

    def _unique_id(self) -> int:
        while self._next_id in self.sequences or self._next_id == 0:
            self._next_id = (self._next_id + 1) % 2**64
        return self._next_id

    def remove(self, sequence: Sequence) -> None:
        with self._lock:
            self._remove(sequence)

    def _remove(self, sequence: Sequence) -> None:
        sequence.closed = True
        sequence.state = None
        if self.sequences.get(sequence.id) is sequence:
            del self.sequences[sequence.id]

    async def infer(
        self, model: LoadedModel, sequence: Sequence, control: int, inputs: Mapping[str, np.ndarray]
    ) -> Mapping[str, np.ndarray]:
        """Run one request of `sequence` (opened for it) once its earlier requests have run."""
        ok = False
        try:
            await _acquire(sequence.lock)
            try:
                state = self._state(sequence, control)
                outputs, new_state = await model.infer_sequence(inputs, state, control != SEQUENCE_END)
                sequence.state = new_state
                ok = True
                return outputs
            finally:
                sequence.lock.release()
        finally:
            self._done(sequence, control, ok)

    def infer_now(
        self, model: LoadedModel, sequence: Sequence, control: int, inputs: Mapping[str, np.ndarray]
    ) -> Mapping[str, np.ndarray]:
        """`infer` in the calling thread (not the event loop's), for a model that offers
        `infer_sequence_now`: waits for the sequence's earlier requests."""
        ok = False
        try:
            with sequence.lock:
                state = self._state(sequence, control)
                outputs, new_state = model.infer_sequence_now(inputs, state, control != SEQUENCE_END)
                sequence.state = new_state
                ok = True
                return outputs
        finally:
            self._done(sequence, control, ok)

    def _state(self, sequence: Sequence, control: int) -> SequenceState | None:
        """The state a request starts from, its sequence's lock held."""
        if sequence.closed:  # removed (idle, dropped) while this request waited
            raise DropinError(Status.SEQUENCE_MISSING, f"sequence_id: {sequence.id} was removed")
        sequence.idle = False
        return None if control == SEQUENCE_START else sequence.state

    def _done(self, sequence: Sequence, control: int, ok: bool) -> None:
        with self._lock:
            sequence.users -= 1
            # an ended sequence frees its state, whatever happened; a start that failed frees its id
            if control == SEQUENCE_END or (control == SEQUENCE_START and not ok):
                self._remove(sequence)

    def sweep(self) -> int:
        """One pass of the idle sequence cleaner: remove the sequences that had no request since
        the previous pass (none running or waiting), mark the others idle. The number removed."""
        removed = 0
        with self._lock:
            for sequence in list(self.sequences.values()):
                if sequence.ending or sequence.users:
                    continue
                if sequence.idle:
                    self._remove(sequence)
                    removed += 1
                else:
                    sequence.idle = True
        if removed:
            log.info("%s: %d idle sequence(s) removed", self.label, removed)
        return removed


async def _acquire(lock: threading.Lock) -> None:
    """Take a sequence's lock from the event loop without blocking it: when a request of the
    sequence runs, wait in a thread. Cancelled meanwhile, the lock is released once taken."""
    if lock.acquire(blocking=False):
        return
    taking = asyncio.get_running_loop().run_in_executor(None, lock.acquire)
    try:
        await asyncio.shield(taking)
    except asyncio.CancelledError:
        taking.add_done_callback(_release_if_taken(lock))
        raise


def _release_if_taken(lock: threading.Lock) -> Callable[[asyncio.Future[Any]], None]:
    def release(taking: asyncio.Future[Any]) -> None:
        if not taking.cancelled():  # the executor ran lock.acquire
            lock.release()

    return release


class IdleSequenceCleaner:
    """--sequence_cleaner_poll_wait_minutes: every period, one `sweep` of the sequence table of
    each stateful version served whose model has idle_sequence_cleanup on. Started by the first
    stateful request (a period of 0: never)."""

    def __init__(self, table: ModelTable, poll_wait_minutes: float) -> None:
        self.table = table
        self.period_seconds = poll_wait_minutes * 60
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> bool:
        """True until `start` has run (with a period): the event loop must start it."""
        return self._task is None and self.period_seconds > 0

    def start(self) -> None:
        """On the event loop; once."""
        if self.waiting:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def tables(self) -> list[SequenceTable]:
        """The sequence tables of the versions served (stateful models)."""
        tables = []
        for model in list(self.table.models.values()):
            for version in list(model.versions.values()):
                servable = version.servable
                if servable is not None and servable.sequences is not None:
                    tables.append(servable.sequences)
        return tables

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.period_seconds)
            for table in self.tables():
                if table.idle_cleanup:
                    table.sweep()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
