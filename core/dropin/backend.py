"""The backend contract: what a backend plugin implements.

A backend turns a version directory into a `LoadedModel`. The core calls `Backend.load` in a
worker thread at load time, `LoadedModel.infer` on the event loop for every request, and
`LoadedModel.close` in a worker thread once the version is retired and drained. So `infer` must
never block: hand the work to a thread or to the runtime's own async API; `load` and `close` may.
A model may also offer `infer_now`, a blocking `infer` that gRPC handler threads call directly.

A plugin registers its backend class by name from `dropin_register_backends`:

    @hookimpl
    def dropin_register_backends(registry):
        registry.add("openvino", OpenVINOBackend)
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .shapes import TensorSpec


@dataclass(frozen=True)
class LoadOptions:
    """How a model version is to be loaded, from the CLI or config.json (OVMS's option names)."""

    target_device: str = "CPU"
    plugin_config: Mapping[str, Any] = field(default_factory=dict)
    nireq: int = 0  # 0: let the backend choose (e.g. OpenVINO's optimal number of infer requests)
    shape: str | Mapping[str, str] | None = None
    layout: str | Mapping[str, str] | None = None
    batch_size: str | int | None = None
    #: other OVMS model keys meant for the backend, when config.json sets them: "allow_cache"
    #: (bool: OVMS's per-model switch of the runtime's model cache)
    options: Mapping[str, Any] = field(default_factory=dict)
    #: a stateful model: the core runs it through `LoadedModel.infer_sequence` only
    stateful: bool = False
    #: stateful only: apply the runtime's low-latency transformation (OpenVINO's LowLatency2) at load
    low_latency_transformation: bool = False


class InferOutputs(dict):  # type: ignore[type-arg]
    """What `LoadedModel.infer` may return instead of a plain dict, to report its timings: how
    long the request waited for an infer request of the runtime (`wait_seconds`) and how long
    inference itself took (`infer_seconds`). They become ovms_wait_for_infer_req_time_us and
    ovms_inference_time_us; without them the core reports the whole call as inference."""

    __slots__ = ("wait_seconds", "infer_seconds")

    def __init__(
        self,
        outputs: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]],
        wait_seconds: float,
        infer_seconds: float,
    ) -> None:
        super().__init__(outputs)
        self.wait_seconds = wait_seconds
        self.infer_seconds = infer_seconds


#: the variable states of one sequence of a stateful model, by the runtime's variable names. The
#: core only keeps what `infer_sequence` returned and hands it back with the sequence's next request.
SequenceState = Mapping[str, np.ndarray]


class LoadedModel(abc.ABC):
    """One loaded model version, ready to serve."""

    #: the runtime's number of execution streams, if it has such a thing (reported as ovms_streams)
    streams: int | None = None

    #: True if the backend implements `infer_sequence`: only then may a model be `stateful`
    supports_sequences: bool = False

    def infer_requests(self) -> tuple[int, int] | None:
        """The infer-request pool, if the runtime has one: (its size, how many are in use now).
        Read only when /metrics is scraped with ovms_infer_req_queue_size or ovms_infer_req_active
        wanted; None (the default) leaves the version out of those families."""
        return None

    @property
    @abc.abstractmethod
    def inputs(self) -> Mapping[str, TensorSpec]:
        """The model's inputs by name."""

    @property
    @abc.abstractmethod
    def outputs(self) -> Mapping[str, TensorSpec]:
        """The model's outputs by name."""

    @abc.abstractmethod
    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Run one request. `inputs` hold every model input, already validated against `inputs`
        (dtype, rank and dims). Return every output by name, as arrays the caller may keep.

        The input arrays belong to the request: they may be read-only (numeric inputs sent as
        `tensor_content` are `np.frombuffer` views of the request's bytes), so never write into
        them; copy first if the runtime needs writable memory. STRING inputs are object arrays
        shaped like the request's tensor (any rank, 1-D included) whose items are `bytes`.

        Errors: a `DropinError` raised here reaches the client unchanged (its status and
        message). Anything else is logged and answered as INTERNAL "Internal inference error -
        backend <name>: <ExceptionType>: <message>", so make the message say what went wrong."""

    #: True when the model implements `infer_now`: the gRPC front end then runs its requests in
    #: the handler thread instead of a round trip through the event loop
    infers_now: bool = False

    def infer_now(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        """Optional (set `infers_now`): what `infer` does, synchronously, in the calling thread,
        which is any thread but the event loop's (a gRPC handler thread; several at once). Fit
        for runtimes whose calls release the GIL; it may block until the runtime is free."""
        raise NotImplementedError

    async def infer_sequence(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None, keep_state: bool
    ) -> tuple[Mapping[str, np.ndarray], SequenceState | None]:
        """Run one request of a sequence of a stateful model (`LoadOptions.stateful`): set the
        model's variables to `state` (None: the sequence starts, reset them to their initial
        values), infer as `infer` does, and return the outputs and the variables' new values
        (copies the caller keeps: the infer request goes back to the pool for other sequences),
        or None when `keep_state` is false (the sequence ends). The core runs one request of a
        sequence at a time, in order; requests of different sequences run concurrently."""
        raise NotImplementedError(f"{type(self).__name__} does not serve stateful models")

    #: True when the model implements `infer_sequence_now`: the gRPC front end then runs a
    #: sequence's requests in the handler thread
    infers_sequence_now: bool = False

    def infer_sequence_now(
        self, inputs: Mapping[str, np.ndarray], state: SequenceState | None, keep_state: bool
    ) -> tuple[Mapping[str, np.ndarray], SequenceState | None]:
        """Optional (set `infers_sequence_now`): what `infer_sequence` does, synchronously, in
        the calling thread (any but the event loop's), as `infer_now` does for `infer`."""
        raise NotImplementedError

    def check_inputs(self, inputs: Mapping[str, np.ndarray]) -> None:  # noqa: B027  (optional: accepts all)
        """Refuse, with a `DropinError`, a request this model cannot run whatever it is batched
        with (values the runtime cannot take). Dynamic batching calls it for each request before
        the request joins a batch, so that only the bad request fails; `infer` is not told
        whether it ran, so it must still refuse such inputs itself. Called on the event loop for
        every batched request: keep it cheap. The default accepts everything."""

    def close(self) -> None:  # noqa: B027  (optional: nothing to release)
        """Release the model. Called once, after the last request using it has finished, in a
        worker thread (not on the event loop): it may block, e.g. to join the backend's threads."""


class Backend(abc.ABC):
    """Loads model versions. One instance per server; it may hold shared state (a runtime core)."""

    #: the name configs refer to (`"backend": "openvino"`); set by the registry
    name: str = ""

    #: claim order when a model names no backend: backends are asked to `claim` a version
    #: directory highest priority first, ties in registration order (built-in, then entry points
    #: sorted by name). OpenVINO is 100 and ONNX Runtime 50, so OpenVINO serves .onnx files unless
    #: a model says `"backend": "onnxruntime"`. Leave it at 0 unless your backend must win a
    #: format another backend also claims.
    priority: int = 0

    @classmethod
    @abc.abstractmethod
    def claims(cls, version_dir: Path) -> bool:
        """True if this backend can load the version directory (cheap: look at file names only)."""

    @abc.abstractmethod
    def load(self, version_dir: Path, options: LoadOptions) -> LoadedModel:
        """Load and compile one version. Runs in a worker thread; raise on failure with a message
        that says what is wrong with the files (it is shown in GetModelStatus)."""
