"""Models, their versions and TF Serving's version states.

A `ModelVersion` goes START -> LOADING -> AVAILABLE, and when retired UNLOADING -> END. A load
that fails stays LOADING with an error. The default version of a model is its highest AVAILABLE
version. Everything here runs on the event loop thread, except `ModelTable.acquire_now` and
`Servable.release`, which gRPC handler threads call too: a servable's in-flight count is kept
under a lock, and a retired servable takes no new request.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DropinError, Status

if TYPE_CHECKING:
    from .backend import LoadedModel
    from .config import ModelConfig
    from .pipelines.serving import Pipeline, PipelineEntry
    from .sequences import SequenceTable
    from .validation import ExactPlan, InputPlan

log = logging.getLogger("dropin.models")


class State(enum.IntEnum):
    """tensorflow.serving.ModelVersionStatus.State"""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


# a handler thread's check of every request: a global is read faster than an enum class's member
_AVAILABLE = State.AVAILABLE


# tensorflow.error.Code values used in ModelVersionStatus
OK = 0
UNKNOWN_ERROR = 2


@dataclass(eq=False)
class Servable:
    """A loaded version ready for requests: the backend's model, the validation plans, and how
    many requests use it (it is closed only once they have finished)."""

    model_name: str
    version: int
    model: LoadedModel
    plans: tuple[InputPlan, ...]  # sorted by input name
    backend: str
    path: Path | None = None  # the version directory it was loaded from (reshape reloads read it again)
    sequences: SequenceTable | None = None  # a stateful model's open sequences; None: stateless
    pipeline: Pipeline | None = None  # set when it serves a pipeline (`model` is then that pipeline)
    in_flight: int = 0  # changed only under _lock: handler threads take and release it too
    retired: bool = False  # set by drained(): no new request may take it
    _drained: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # (the plans it was made for, the ExactPlan, whether it is of static shapes)
    _exact: tuple[tuple[InputPlan, ...], ExactPlan | None, bool] | None = field(default=None, repr=False)

    @property
    def exact(self) -> ExactPlan | None:
        """The `ExactPlan` of the current plans (a reshape reload replaces them): of their static
        shapes, made once, else the last one `learn_exact` made; None for a pipeline or a model
        with a sequence's state."""
        plans = self.plans
        cached = self._exact
        if cached is None or cached[0] is not plans:
            from .validation import exact_plan  # validation's types are for this module's annotations only

            plan = exact_plan(plans) if self._plain() else None
            cached = self._exact = (plans, plan, plan is not None)
        return cached[1]

    def learn_exact(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """A request of these input shapes passed validation: requests of the same shapes (and
        types and sizes) need none either. Kept for a model of dynamic shapes, whose clients
        mostly send one shape; a static model's plan stays."""
        self.exact  # noqa: B018  (makes the plan of static shapes, when there is one)
        cached = self._exact
        assert cached is not None
        plans, known, static = cached
        if static or not self._plain():
            return
        if known is not None and all(shapes.get(i.name) == i.shape for i in known.inputs):
            return
        from .validation import exact_plan

        self._exact = (plans, exact_plan(plans, shapes), False)

    def _plain(self) -> bool:
        return self.pipeline is None and self.sequences is None

    def take(self) -> bool:
        """Count one more request using this servable, from any thread; False once retired."""
        with self._lock:
            if self.retired:
                return False
            self.in_flight += 1
            return True

    def release(self) -> None:
        """One request using this servable has finished (from any thread)."""
        with self._lock:
            self.in_flight -= 1
            waiter = self._drained if self.in_flight == 0 else None
        if waiter is not None:
            loop, event = waiter
            loop.call_soon_threadsafe(event.set)

    async def drained(self) -> None:
        """Retire this servable (no request takes it from now on) and wait until no request uses it."""
        event = asyncio.Event()
        with self._lock:
            self.retired = True
            if not self.in_flight:
                return
            self._drained = (asyncio.get_running_loop(), event)
        await event.wait()
        self._drained = None


@dataclass(eq=False)
class ModelVersion:
    model_name: str
    number: int
    state: State = State.START
    error: str | None = None  # why the last load failed; None when OK
    servable: Servable | None = None
    reload: bool = False  # set when the version must be loaded again (config or files changed)
    fingerprint: object = None  # the source's fingerprint of the files last loaded (or tried)
    note: str | None = None  # why an AVAILABLE version the policy no longer selects still serves
    _loading: bool = False
    _settled: asyncio.Event = field(default_factory=asyncio.Event)  # set when not loading

    @property
    def error_code(self) -> int:
        return OK if self.error is None else UNKNOWN_ERROR

    @property
    def error_message(self) -> str:
        # OVMS sends the code name ("OK") on success; on failure dropin sends the real reason
        if self.error is not None:
            return self.error
        return "OK" if self.note is None else f"OK ({self.note})"

    def hold(self, note: str | None) -> None:
        """Note why this AVAILABLE version serves although the policy no longer selects it (None:
        it is selected). Logged when it changes."""
        if note != self.note and note is not None:
            log.info("model %s version %d: %s", self.model_name, self.number, note)
        self.note = note

    def set_state(self, state: State, reason: str = "", elapsed: float | None = None) -> None:
        self.state = state
        extra = f" in {elapsed * 1000:.0f} ms" if elapsed is not None else ""
        level = logging.WARNING if self.error and state == State.LOADING else logging.INFO
        log.log(
            level,
            "model %s version %d: %s%s%s",
            self.model_name,
            self.number,
            state.name,
            f" ({reason})" if reason else "",
            extra,
        )

    def begin_load(self) -> None:
        self._loading = True
        self._settled.clear()

    def end_load(self) -> None:
        self._loading = False
        self._settled.set()

    @property
    def loading(self) -> bool:
        return self._loading


class Model:
    """One served model: its configuration and every version ever registered."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.name = config.name
        self.versions: dict[int, ModelVersion] = {}
        self.default: ModelVersion | None = None
        self.removed = False  # no longer in the configuration: every version retired
        self.source_missing = False  # the base path did not exist on the last pass
        self.source_error: str | None = None  # why the base path could not be read on the last pass
        self.lock = asyncio.Lock()  # one load/retire pass at a time per model

    def unreadable(self, reason: str) -> None:
        """The base path cannot be read now: say why, in the log (once) and in the status of the
        versions that keep serving."""
        if reason != self.source_error:
            log.error("model %s: %s", self.name, reason)
        self.source_error = reason
        for version in self.versions.values():
            if version.state == State.AVAILABLE:
                version.hold(f"{reason}; serving the files loaded before")

    def update_default(self) -> None:
        available = [v for v in self.versions.values() if v.state == State.AVAILABLE]
        self.default = max(available, key=lambda v: v.number) if available else None


# How long Predict waits for a version that is being loaded (OVMS: 10 s).
WAIT_FOR_LOADED_SECONDS = 10.0


class ModelTable:
    """Every model by name, and request-time resolution of (name, version) to a version."""

    def __init__(self) -> None:
        self.models: dict[str, Model] = {}
        #: the pipelines, served like models; a name is looked up among the models first
        self.pipelines: dict[str, PipelineEntry] = {}

    def get(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            model = self.pipelines.get(name)
            if model is None:
                raise DropinError(Status.MODEL_NAME_MISSING)
        return model

    def find(self, name: str, number: int) -> ModelVersion:
        """The registered version (0: the default), whatever its state."""
        model = self.get(name)
        version = model.default if number == 0 else model.versions.get(number)
        if version is None:
            raise DropinError(Status.MODEL_VERSION_MISSING)
        return version

    async def acquire(self, name: str, number: int, wait: bool = True) -> Servable:
        """The servable of an AVAILABLE version, counted as in flight until its `release()`.
        With `wait`, a version still being loaded is waited for (up to 10 s)."""
        version = self.find(name, number)
        servable = version.servable
        if version.state != State.AVAILABLE or servable is None:
            await self._wait_until_available(version, wait)
            servable = version.servable
            assert servable is not None
        if not servable.take():  # retired: on the loop a version never holds one, this is a safety net
            raise DropinError(Status.MODEL_VERSION_NOT_LOADED_ANYMORE)
        return servable

    def acquire_now(self, name: str, number: int) -> Servable | None:
        """`acquire` from any thread, without waiting: the servable of an AVAILABLE version,
        counted as in flight, or None (unknown, not available, or being replaced), for which the
        caller asks `acquire` on the event loop, which waits or raises the right error."""
        model = self.models.get(name)
        if model is None:
            pipeline = self.pipelines.get(name)
            servable = pipeline.servable_now(number) if pipeline is not None else None
            return servable if servable is not None and servable.take() else None
        version = model.default if number == 0 else model.versions.get(number)
        if version is None or version.state != _AVAILABLE:
            return None
        servable = version.servable
        return servable if servable is not None and servable.take() else None

    async def _wait_until_available(self, version: ModelVersion, wait: bool) -> None:
        if version.state > State.AVAILABLE:
            raise DropinError(Status.MODEL_VERSION_NOT_LOADED_ANYMORE)
        if wait and version.loading:
            try:
                await asyncio.wait_for(version._settled.wait(), WAIT_FOR_LOADED_SECONDS)
            except asyncio.TimeoutError:
                pass
            if version.state > State.AVAILABLE:
                raise DropinError(Status.MODEL_VERSION_NOT_LOADED_ANYMORE)
        if version.state != State.AVAILABLE or version.servable is None:
            raise DropinError(Status.MODEL_VERSION_NOT_LOADED_YET)


def versions(model: Model, version: int) -> list[ModelVersion]:
    """One registered version of `model`, or (version 0) every one in ascending order."""
    if version:
        found = model.versions.get(version)
        if found is None:
            raise DropinError(Status.MODEL_VERSION_MISSING)
        return [found]
    return [model.versions[n] for n in sorted(model.versions)]
