"""Pipelines served like models: each is an entry of the model table (looked up after the
models) with one version, 1, whose servable runs the pipeline. So Predict, GetModelMetadata,
GetModelStatus, output_filter and the metrics treat a pipeline's name as a model's.

Per request the pipeline acquires the current version of every model it uses (so a model's new
version takes over between two requests and the old one retires once they are done), validates
and converts the request's inputs with the plans of the model inputs they feed (binary images
included; errors name the pipeline's input), runs the graph (executor.py) and releases them.

Status, as OVMS reported pipelines: AVAILABLE while every model it uses has the version it names
AVAILABLE and the wiring fits them; otherwise LOADING with FAILED_PRECONDITION and the reason;
END once removed from the configuration."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..backend import LoadedModel
from ..config import ModelConfig
from ..custom_nodes import CustomNode
from ..errors import DropinError, Status
from ..models import Model, ModelTable, ModelVersion, Servable, State
from ..shapes import TensorSpec
from ..validation import InputPlan, RequestTensor, validate_request
from .build import Binding, bind, current_servables
from .config import CUSTOM_NODE, REQUEST, Source
from .executor import ArrayTensor, PipelineRun
from .graph import Graph, PipelineError
from .inline import needed_nodes, one_after_another, run_inline

if TYPE_CHECKING:
    from ..dataplane import DataPlane

log = logging.getLogger("dropin.pipelines")

FAILED_PRECONDITION = 9  # tensorflow.error.Code, as OVMS reports a pipeline that failed validation


class Pipeline(LoadedModel):
    """A validated graph with its custom nodes built; `run` serves one request."""

    def __init__(self, graph: Graph, customs: Mapping[str, CustomNode], table: ModelTable) -> None:
        self.graph = graph
        self.customs = customs
        self.table = table
        self._model_nodes = tuple(n for n in graph.order if n.kind != CUSTOM_NODE)
        # each pipeline input is validated as the first node input it feeds: (node, its input)
        consumers: dict[str, tuple[str, str]] = {}
        for node in graph.order:
            for name, source in node.inputs:
                if source.node == REQUEST:
                    consumers.setdefault(source.item, (node.name, name))
        self._consumers = tuple(sorted(consumers.items()))
        self._binding: tuple[tuple[Servable, ...], Binding] | None = None
        # a request may run in the calling thread (run_now) when its nodes could not run concurrently
        self._demultiplexes = any(graph.out_context.values())
        self._needed = needed_nodes(graph, graph.config.outputs)
        self._inline = not self._demultiplexes and one_after_another(graph, self._needed)
        self._plans: tuple[tuple[Servable | None, ...], tuple[InputPlan, ...]] | None = None

    def failed(self, exc: Exception) -> DropinError:
        """What a request gets when running the pipeline raised something unexpected (logged)."""
        log.error("pipeline %s: request failed", self.graph.name, exc_info=exc)
        return DropinError(Status.INTERNAL_ERROR, f"pipeline {self.graph.name}: {type(exc).__name__}: {exc}")

    # -- what metadata and status report ---------------------------------------------------------

    def check(self) -> str | None:
        """Why the pipeline cannot run with the models served now, or None."""
        try:
            self.binding()
        except PipelineError as exc:
            return str(exc)
        return None

    def binding(self) -> Binding:
        """The pipeline's inputs and outputs with the models served now (PipelineError if they do
        not fit); computed again only when one of those versions changed."""
        servables = current_servables(self.graph, self.table)
        key = tuple(servables.values())
        cached = self._binding
        if cached is not None and cached[0] == key:
            return cached[1]
        binding = bind(self.graph, servables, self.customs)
        self._binding = (key, binding)
        return binding

    def _specs(self) -> Binding | None:
        try:
            return self.binding()
        except PipelineError:
            return self._binding[1] if self._binding is not None else None

    @property
    def inputs(self) -> Mapping[str, TensorSpec]:
        specs = self._specs()
        return specs.inputs if specs is not None else {}

    @property
    def outputs(self) -> Mapping[str, TensorSpec]:
        specs = self._specs()
        return specs.outputs if specs is not None else {}

    # -- requests ----------------------------------------------------------------------------

    async def run(
        self, request: Mapping[str, RequestTensor], plane: DataPlane | None, output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        servables: dict[str, Servable] = {}
        try:
            for node in self._model_nodes:
                try:
                    servables[node.name] = await self.table.acquire(node.model_name, node.version)
                except DropinError as exc:
                    where = f"pipeline {self.graph.name!r} node {node.name!r} model {node.model_name!r}"
                    raise DropinError(exc.status, f"{where}: {exc.status.message}") from None
            plans = self._input_plans(servables)
            limits = (plane.max_elements, plane.max_tensor_bytes) if plane is not None else (0, 0)
            arrays, conversions = validate_request(plans, request, *limits)
            if conversions:
                assert plane is not None
                await plane._convert(conversions, arrays)
            return await PipelineRun(self.graph, arrays, servables, self.customs).outputs(self._wanted(output_filter))
        finally:
            for servable in servables.values():
                servable.release()

    def run_now(
        self, request: Mapping[str, RequestTensor], plane: DataPlane, output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray] | None:
        """`run` in the calling thread (inline.py) when it can: nodes that run one after the
        other, every model it uses AVAILABLE right now and offering `infer_now`, inputs that need
        no conversion; else None, and `run` must run on the loop."""
        needed = self._needed
        if output_filter and not self._demultiplexes:
            needed = needed_nodes(self.graph, self._wanted(output_filter))
            if not one_after_another(self.graph, needed):
                return None
        elif not self._inline:
            return None
        servables: dict[str, Servable] = {}
        try:
            for node in self._model_nodes:
                servable = self.table.acquire_now(node.model_name, node.version)
                if servable is None:
                    return None
                servables[node.name] = servable
                if not servable.model.infers_now:
                    return None
            plans = self._input_plans(servables)
            arrays, conversions = validate_request(plans, request, plane.max_elements, plane.max_tensor_bytes)
            if conversions:
                return None
            return run_inline(self.graph, arrays, servables, self.customs, self._wanted(output_filter), needed)
        finally:
            for servable in servables.values():
                servable.release()

    def _wanted(self, output_filter: Sequence[str]) -> tuple[tuple[str, Source], ...]:
        """The pipeline outputs a request wants: `output_filter`'s, in its order, or all."""
        outputs = self.graph.config.outputs
        if output_filter:
            wanted = dict(outputs)
            outputs = tuple((name, wanted[name]) for name in dict.fromkeys(output_filter))
        return outputs

    def _input_plans(self, servables: Mapping[str, Servable]) -> tuple[InputPlan, ...]:
        """The plans of the model inputs the pipeline's inputs feed, named as the pipeline's
        inputs (so errors name them); cached while those versions serve."""
        key = tuple(servables.get(node, None) for _, (node, _) in self._consumers)
        cached = self._plans
        if cached is not None and cached[0] == key:
            return cached[1]
        demultiplied = self.graph.config.demultiply_count is not None
        plans = []
        for (name, (node, node_input)), servable in zip(self._consumers, key, strict=True):
            if servable is None:
                spec = self.customs[node].inputs[node_input]
                plan = InputPlan(dataclasses.replace(spec, name=name))
            else:
                plan = next(p for p in servable.plans if p.spec.name == node_input)
                plan = dataclasses.replace(plan, spec=dataclasses.replace(plan.spec, name=name), auto="")
            if demultiplied:  # the request is split along a first dimension of its own
                specs = self._specs()
                if specs is None or name not in specs.inputs:
                    why = f"pipeline {self.graph.name!r}: {self.check()}"
                    raise DropinError(Status.MODEL_VERSION_NOT_LOADED_YET, why)
                plan = InputPlan(dataclasses.replace(specs.inputs[name], name=name))
            plans.append(plan)
        self._plans = (key, tuple(plans))
        return tuple(plans)

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        return await self.run({name: ArrayTensor(array) for name, array in inputs.items()}, None)

    def close(self) -> None:
        for custom in self.customs.values():
            try:
                custom.close()
            except Exception as exc:
                log.error("pipeline %s: custom node %s failed to close: %s", self.graph.name, custom.name, exc)


class PipelineVersion(ModelVersion):
    """Version 1 of a pipeline; a failed validation is FAILED_PRECONDITION, as in OVMS. Its state
    is checked again whenever it is read while not AVAILABLE, so that a pipeline waiting for a
    model serves as soon as the model does."""

    entry: PipelineEntry | None = None
    _state: State = State.START

    @property
    def state(self) -> State:
        if self._state is not State.AVAILABLE and self.entry is not None:
            self.entry.refresh()
        return self._state

    @state.setter
    def state(self, value: State) -> None:
        self._state = value

    @property
    def error_code(self) -> int:
        return 0 if self.error is None else FAILED_PRECONDITION


class PipelineEntry(Model):
    """A pipeline in the model table: its configuration, its one version and what it runs."""

    def __init__(self, name: str) -> None:
        super().__init__(ModelConfig(name=name, base_path=""))
        self.version = PipelineVersion(name, 1)
        self.version.entry = self
        self._versions: dict[int, ModelVersion] = {1: self.version}
        self.default = self.version
        self.pipeline: Pipeline | None = None
        self.source: object = None  # what it was built from: (config, libraries)
        self.build_error: str | None = None  # why it could not be built at all

    @property
    def versions(self) -> dict[int, ModelVersion]:
        self.refresh()
        return self._versions

    @versions.setter
    def versions(self, value: dict[int, ModelVersion]) -> None:
        self._versions = value

    def servable_now(self, number: int) -> Servable | None:
        """The servable of version `number` (0: the default) if AVAILABLE, from any thread: it
        reads the state without refreshing it (a refresh runs on the loop only)."""
        version = self.version
        if number not in (0, 1) or version._state is not State.AVAILABLE or self.default is not version:
            return None
        return version.servable

    def install(self, pipeline: Pipeline | None, error: str | None, source: object) -> asyncio.Task[None] | None:
        """Serve `pipeline` from now on (None: `error` says why nothing can); the previous one
        finishes its requests, then closes (the task returned)."""
        version = self.version
        old = version.servable
        self.pipeline, self.build_error, self.source, self.removed = pipeline, error, source, False
        version.servable = None if pipeline is None else Servable(
            self.name, 1, pipeline, (), "pipeline", pipeline=pipeline
        )
        self.default = version
        closing = asyncio.get_running_loop().create_task(_close_when_drained(old)) if old is not None else None
        self.refresh()
        return closing

    def retire(self) -> asyncio.Task[None] | None:
        closing = self.install(None, None, None)
        self.removed = True
        self.default = None
        self.refresh()
        return closing

    def refresh(self) -> None:
        """Follow the models it uses: AVAILABLE only while they are there and fit the wiring."""
        version = self.version
        if self.removed:
            state, error = State.END, None
        elif self.pipeline is None:
            state, error = State.LOADING, self.build_error
        else:
            error = self.pipeline.check()
            state = State.AVAILABLE if error is None else State.LOADING
        if (state, error) != (version._state, version.error):
            version._state, version.error = state, error
            level = logging.WARNING if error else logging.INFO
            log.log(level, "pipeline %s: %s%s", self.name, state.name, f" ({error})" if error else "")


async def _close_when_drained(servable: Servable) -> None:
    await servable.drained()
    await asyncio.to_thread(servable.model.close)
