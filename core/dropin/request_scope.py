"""One request through the data plane (`RequestScope`), from resolving its model version to the
outputs it answers, and what a request's answer holds (`PredictResult`, `ModelMetadata`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from time import perf_counter
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .errors import DropinError, Status
from .metrics import RequestProbe
from .models import ModelVersion, Servable, versions
from .sequences import SEQUENCE_ID, SequenceTable, read_sequence_inputs
from .shapes import TensorSpec
from .validation import ExactPlan, RequestTensor, ReshapeRequired, check_output_filter, validate_request

if TYPE_CHECKING:
    from .dataplane import DataPlane

log = logging.getLogger("dropin.dataplane")


class PredictResult(NamedTuple):  # a tuple: made for every request, cheaply
    model_name: str
    version: int
    outputs: Mapping[str, np.ndarray]


# PredictResult from a tuple, in C: a NamedTuple's own constructor is a Python function
_result = partial(tuple.__new__, PredictResult)


@dataclass(frozen=True)
class ModelMetadata:
    model_name: str
    version: int
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


class RequestScope:
    """One request through the data plane, used the same way by every front end:

        with dataplane.request(GRPC, PREDICT) as scope:
            specs = await scope.resolve(name, version)   # the model version that serves it
            result = await scope.infer(decode(body, specs))
            response = encode(result)

    Leaving the block releases the model version and records the request's outcome in the
    metrics, once: a success if the block finished (decoding and encoding included), a failure if
    it raised. As in OVMS, a request counts only once its model (Predict, GetModelMetadata: its
    version) is known: one for an unknown name or version is not counted.

    A gRPC handler thread uses it too: `resolve_now` and `infer_now` do the same in the calling
    thread when they can, and say so; otherwise the thread runs `resolve` / `infer` on the loop."""

    __slots__ = ("_plane", "_probe", "_servable")

    def __init__(self, plane: DataPlane, probe: RequestProbe | None) -> None:
        self._plane = plane
        self._probe = probe  # None: metrics off
        self._servable: Servable | None = None  # the version serving a Predict, once resolved

    def __enter__(self) -> RequestScope:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        servable = self._servable
        if servable is not None:
            servable.release()
        probe = self._probe
        if probe is not None:
            probe.done(exc_type is None)

    # -- Predict -----------------------------------------------------------------------------

    async def resolve(self, model_name: str, version: int) -> Mapping[str, TensorSpec]:
        """Take the AVAILABLE version (0: the default) that serves this Predict, waiting for one
        being loaded; its `input_specs`."""
        servable = self._servable = await self._plane.table.acquire(model_name, version)
        probe = self._probe
        if probe is not None:
            probe.predicting(servable.model_name, servable.version, getattr(servable.model, "streams", None))
        return self.input_specs

    @property
    def input_specs(self) -> Mapping[str, TensorSpec]:
        """The resolved version's inputs by name, for front ends whose decoding depends on them
        (REST: JSON numbers take the input's dtype)."""
        servable = self._servable
        assert servable is not None, "resolve() first"
        sequences = servable.sequences
        return servable.model.inputs if sequences is None else sequences.request_specs

    async def infer(self, inputs: Mapping[str, RequestTensor], output_filter: Sequence[str] = ()) -> PredictResult:
        """Validate the decoded inputs against the resolved version, run it, and return its
        outputs (only those of `output_filter`, in its order, when given)."""
        servable = self._servable
        assert servable is not None, "resolve() first"
        plane = self._plane
        if servable.pipeline is not None:  # each node's model validates the inputs it takes
            return await self._infer_pipeline(servable, inputs, output_filter)
        sequences = servable.sequences
        specials = 0
        if sequences is not None:  # the special inputs first, as OVMS checks them
            sequence_id, control, model_inputs = read_sequence_inputs(inputs)
            specials, inputs = len(inputs) - len(model_inputs), model_inputs
        try:
            arrays, conversions = validate_request(
                servable.plans, inputs, plane.max_elements, plane.max_tensor_bytes, specials
            )
        except ReshapeRequired as required:  # batch_size or shape "auto": a servable reloaded for this shape
            fresh = await plane.reshaper.reshaped(servable, required.shapes)
            servable.release()
            servable = self._servable = fresh
            arrays, conversions = validate_request(servable.plans, inputs, plane.max_elements, plane.max_tensor_bytes)
        if conversions:
            await plane._convert(conversions, arrays)
        elif sequences is None:
            servable.learn_exact({name: tensor.shape for name, tensor in inputs.items()})
        if sequences is None:
            return await self._infer_arrays(servable, arrays, output_filter)
        if output_filter:
            check_output_filter(servable.model.outputs, output_filter, True)
        plane.sequence_cleaner.start()
        sequence = sequences.open(sequence_id, control)
        # one request of the sequence at a time, with its state
        outputs = await self._call(servable, sequences.infer(servable.model, sequence, control, arrays))
        if output_filter:
            wanted = dict.fromkeys(output_filter)
            wanted.pop(SEQUENCE_ID, None)  # added below whatever the filter says
            outputs = {name: outputs[name] for name in wanted}
        # OVMS answers every request to a stateful model with its sequence_id
        return PredictResult(servable.model_name, servable.version, {**outputs, SEQUENCE_ID: sequence.id_array})

    async def infer_exact(self, arrays: dict[str, np.ndarray], output_filter: Sequence[str] = ()) -> PredictResult:
        """`infer` of the arrays of a request that fits `exact_plan()` exactly: nothing to validate."""
        servable = self._servable
        assert servable is not None, "resolve() first"
        if output_filter or self._probe is not None:
            return await self._infer_arrays(servable, arrays, output_filter)
        try:  # the same, in fewer steps: each step a request runs costs time (docs/performance.md)
            return _result((servable.model_name, servable.version, await servable.model.infer(arrays)))
        except DropinError:
            raise
        except Exception as exc:
            raise _inference_failed(servable, exc) from exc

    async def _infer_arrays(
        self, servable: Servable, arrays: dict[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        model = servable.model
        if output_filter:
            check_output_filter(model.outputs, output_filter)
        outputs = await self._call(servable, model.infer(arrays))
        if output_filter:
            outputs = {name: outputs[name] for name in dict.fromkeys(output_filter)}
        return PredictResult(servable.model_name, servable.version, outputs)

    async def _call(self, servable: Servable, running: Awaitable[Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
        """Await an inference, timed into the metrics; a backend's fault as INFERENCE_ERROR."""
        probe = self._probe
        try:
            if probe is None or probe.model is None:
                return await running
            started = perf_counter()
            outputs = await running
            probe.inferred(outputs, perf_counter() - started)
            return outputs
        except DropinError:
            raise
        except Exception as exc:
            raise _inference_failed(servable, exc) from exc

    # -- the same from a gRPC handler thread, for models that infer there -----------------------

    def resolve_now(self, model_name: str, version: int) -> bool:
        """`resolve` from any thread, without waiting: False when the version is not AVAILABLE
        right now, and `resolve` must run on the loop."""
        servable = self._servable = self._plane.table.acquire_now(model_name, version)
        if servable is None:
            return False
        probe = self._probe
        if probe is not None:
            probe.predicting(servable.model_name, servable.version, getattr(servable.model, "streams", None))
        return True

    def infer_now(self, inputs: Mapping[str, RequestTensor], output_filter: Sequence[str] = ()) -> PredictResult | None:
        """`infer` in the calling thread, when the model offers `infer_now` (a stateful model:
        `infer_sequence_now`; a pipeline: when its nodes run in turn, pipelines/inline.py) and the
        inputs need no conversion or reshape; else None, and `infer` must run on the loop."""
        servable = self._servable
        assert servable is not None, "resolve() first"
        if servable.pipeline is not None:
            return self._infer_pipeline_now(servable, inputs, output_filter)
        model = servable.model
        sequences = servable.sequences
        if sequences is not None:
            return self._infer_sequence_now(servable, sequences, inputs, output_filter)
        if not getattr(model, "infers_now", False):
            return None
        plane = self._plane
        try:
            arrays, conversions = validate_request(servable.plans, inputs, plane.max_elements, plane.max_tensor_bytes)
        except ReshapeRequired:
            return None
        if conversions:
            return None
        servable.learn_exact({name: tensor.shape for name, tensor in inputs.items()})
        return self._infer_arrays_now(servable, arrays, output_filter)

    def exact_plan(self) -> ExactPlan | None:
        """The resolved version's `ExactPlan`: a request that fits it infers without validation
        (`infer_exact`); None: every request takes `infer`."""
        servable = self._servable
        assert servable is not None, "resolve() first"
        plan = servable.exact
        elements, largest = self._plane.exact_limits
        return plan if plan is not None and plan.elements <= elements and plan.largest <= largest else None

    def resolve_exact_now(self, model_name: str, version: int) -> ExactPlan | None:
        """`resolve_now`, and what `exact_plan()` would say for `infer_exact_now`, in one call (a
        gRPC handler's common request takes no step more than it must, docs/performance.md).
        None when there is no such plan: the version is not AVAILABLE right now (`resolved` is
        False, and `resolve` must run on the loop), or its model does not infer in the calling
        thread, or has no plan (every request takes `infer_now`)."""
        if not self.resolve_now(model_name, version):
            return None
        servable = self._servable
        assert servable is not None
        plan = servable.exact if getattr(servable.model, "infers_now", False) else None
        elements, largest = self._plane.exact_limits
        return plan if plan is not None and plan.elements <= elements and plan.largest <= largest else None

    @property
    def resolved(self) -> bool:
        """Whether a version serves this request (`resolve` or `resolve_now` took one)."""
        return self._servable is not None

    def infer_exact_now(self, arrays: dict[str, np.ndarray], output_filter: Sequence[str] = ()) -> PredictResult:
        """`infer_now` of the arrays of a request that fits `resolve_exact_now`'s plan exactly."""
        servable = self._servable
        assert servable is not None, "resolve() first"
        if output_filter or self._probe is not None:
            return self._infer_arrays_now(servable, arrays, output_filter)
        try:  # the same, in fewer steps, as `infer_exact`
            return _result((servable.model_name, servable.version, servable.model.infer_now(arrays)))
        except DropinError:
            raise
        except Exception as exc:
            raise _inference_failed(servable, exc) from exc

    def _infer_arrays_now(
        self, servable: Servable, arrays: dict[str, np.ndarray], output_filter: Sequence[str]
    ) -> PredictResult:
        model = servable.model
        if output_filter:
            check_output_filter(model.outputs, output_filter)
        outputs = self._call_now(servable, model.infer_now, arrays)
        if output_filter:
            outputs = {name: outputs[name] for name in dict.fromkeys(output_filter)}
        return PredictResult(servable.model_name, servable.version, outputs)

    def _call_now(
        self, servable: Servable, infer: Callable[..., Mapping[str, np.ndarray]], *args: Any
    ) -> Mapping[str, np.ndarray]:
        """`infer(*args)` in this thread, timed into the metrics; a backend's fault as INFERENCE_ERROR."""
        probe = self._probe
        try:
            if probe is None:
                return infer(*args)
            started = perf_counter()
            outputs = infer(*args)
            probe.inferred(outputs, perf_counter() - started)
            return outputs
        except DropinError:
            raise
        except Exception as exc:
            raise _inference_failed(servable, exc) from exc

    def _infer_sequence_now(
        self,
        servable: Servable,
        sequences: SequenceTable,
        inputs: Mapping[str, RequestTensor],
        output_filter: Sequence[str],
    ) -> PredictResult | None:
        """`infer` of a stateful model's request in the calling thread, in `infer`'s order of
        checks. None (before any sequence is touched) when it must run on the loop: the model
        does not infer now, the idle sequence cleaner is not started yet, or the inputs need a
        conversion or a reshape."""
        model = servable.model
        plane = self._plane
        if not getattr(model, "infers_sequence_now", False) or plane.sequence_cleaner.waiting:
            return None
        sequence_id, control, model_inputs = read_sequence_inputs(inputs)
        specials = len(inputs) - len(model_inputs)
        try:
            arrays, conversions = validate_request(
                servable.plans, model_inputs, plane.max_elements, plane.max_tensor_bytes, specials
            )
        except ReshapeRequired:
            return None
        if conversions:
            return None
        if output_filter:
            check_output_filter(model.outputs, output_filter, True)
        sequence = sequences.open(sequence_id, control)
        outputs = self._call_now(servable, sequences.infer_now, model, sequence, control, arrays)
        if output_filter:
            wanted = dict.fromkeys(output_filter)
            wanted.pop(SEQUENCE_ID, None)  # added below whatever the filter says
            outputs = {name: outputs[name] for name in wanted}
        return PredictResult(servable.model_name, servable.version, {**outputs, SEQUENCE_ID: sequence.id_array})

    async def _infer_pipeline(
        self, servable: Servable, inputs: Mapping[str, RequestTensor], output_filter: Sequence[str]
    ) -> PredictResult:
        pipeline = servable.pipeline
        assert pipeline is not None
        if output_filter:
            check_output_filter(pipeline.outputs, output_filter)
        started = perf_counter()
        try:
            outputs = await pipeline.run(inputs, self._plane, output_filter)
        except DropinError:
            raise
        except Exception as exc:
            raise pipeline.failed(exc) from exc
        return self._pipeline_result(servable, outputs, started)

    def _infer_pipeline_now(
        self, servable: Servable, inputs: Mapping[str, RequestTensor], output_filter: Sequence[str]
    ) -> PredictResult | None:
        """`_infer_pipeline` in the calling thread when the pipeline can run there, else None."""
        pipeline = servable.pipeline
        assert pipeline is not None
        if output_filter:
            check_output_filter(pipeline.outputs, output_filter)
        started = perf_counter()
        try:
            outputs = pipeline.run_now(inputs, self._plane, output_filter)
        except DropinError:
            raise
        except Exception as exc:
            raise pipeline.failed(exc) from exc
        return None if outputs is None else self._pipeline_result(servable, outputs, started)

    def _pipeline_result(self, servable: Servable, outputs: dict[str, np.ndarray], started: float) -> PredictResult:
        probe = self._probe
        if probe is not None:
            probe.inferred(outputs, perf_counter() - started)
        return PredictResult(servable.model_name, servable.version, outputs)

    # -- GetModelMetadata, GetModelStatus ----------------------------------------------------

    async def metadata(self, model_name: str, version: int) -> ModelMetadata:
        """The inputs and outputs of an AVAILABLE version (0: the default), without waiting for a
        load. A registered version that is not AVAILABLE is a counted failure, as in OVMS."""
        table = self._plane.table
        found = table.find(model_name, version)  # an unknown name or version is not counted
        if self._probe is not None:
            self._probe.served(found.model_name, found.number)
        servable = await table.acquire(model_name, version, wait=False)
        servable.release()
        return ModelMetadata(servable.model_name, servable.version, servable.model.inputs, servable.model.outputs)

    def status(self, model_name: str, version: int) -> list[ModelVersion]:
        """One version, or (version 0) every registered version in ascending order."""
        model = self._plane.table.get(model_name)
        if self._probe is not None:
            self._probe.served(model.name, None)  # OVMS counts status requests per model, without a version
        if not model.versions and model.source_error:
            # no version to list: say why instead of an empty list (a bucket or endpoint it cannot reach)
            raise DropinError(Status.MODEL_VERSION_MISSING, model.source_error)
        return versions(model, version)


def _inference_failed(servable: Servable, exc: Exception) -> DropinError:
    log.exception("model %s version %d: inference failed", servable.model_name, servable.version)
    return DropinError(Status.INFERENCE_ERROR, f"backend {servable.backend}: {type(exc).__name__}: {exc}")
