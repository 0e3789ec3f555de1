"""One pipeline request: every node runs as soon as its inputs are ready, independent nodes and
demultiplexed branches concurrently (asyncio tasks), and only the nodes the wanted outputs need.
Tensors pass between nodes as the arrays the nodes returned: a branch of a demultiplexer is a
view of its output, never a copy; a gather stacks its branches once.

A node runs once per branch key: the tuple of branch indices of the demultiplexers it runs under
(graph.Graph.context), empty outside any."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import DType
from ..errors import DropinError, Status
from ..models import Servable
from ..validation import ReshapeRequired, validate_request
from .config import CUSTOM_NODE, REQUEST, NodeConfig, Source
from .graph import Graph

if TYPE_CHECKING:
    from ..custom_nodes import CustomNode

log = logging.getLogger("dropin.pipelines")

Key = tuple[int, ...]


class ArrayTensor:
    """A node's output as the input of the next node's validation (validation.RequestTensor)."""

    __slots__ = ("_array", "tf_dtype", "shape")

    def __init__(self, array: np.ndarray) -> None:
        self._array = array
        self.shape: tuple[int, ...] = array.shape
        try:
            self.tf_dtype = DType.from_numpy(array.dtype).tf_enum
        except ValueError:
            self.tf_dtype = DType.STRING.tf_enum if array.dtype == object else 0

    def array(self, name: str, dtype: DType) -> np.ndarray:
        return self._array

    def strings(self) -> np.ndarray:
        return self._array.reshape(-1)


class PipelineRun:
    """The state of one request: the tasks of the node runs started so far, by (node, key)."""

    def __init__(
        self,
        graph: Graph,
        request: Mapping[str, np.ndarray],
        servables: Mapping[str, Servable],
        customs: Mapping[str, CustomNode],
    ) -> None:
        self.graph = graph
        self.request = request
        self.servables = servables
        self.customs = customs
        self._runs: dict[tuple[str, Key], asyncio.Task[Mapping[str, np.ndarray]]] = {}

    async def outputs(self, names: Sequence[tuple[str, Source]]) -> dict[str, np.ndarray]:
        """The pipeline outputs `names`, each gathered over every branch it was split into."""
        try:
            values = await asyncio.gather(*(self._gathered(source, ()) for _, source in names))
        except BaseException:
            for task in self._runs.values():
                task.cancel()
            raise
        finally:
            for task in self._runs.values():  # a failure reported by another task is not logged twice
                if task.done() and not task.cancelled():
                    task.exception()
        return {name: value for (name, _), value in zip(names, values, strict=True)}

    # -- values ------------------------------------------------------------------------------

    async def _gathered(self, source: Source, key: Key) -> np.ndarray:
        levels = self.graph.out_context[source.node]
        if len(key) == len(levels):
            return await self._value(source, key)
        count = await self._count(levels[len(key)], key)
        branches = await asyncio.gather(*(self._gathered(source, (*key, i)) for i in range(count)))
        return np.stack(branches)

    async def _value(self, source: Source, key: Key) -> np.ndarray:
        """`source`'s tensor in the branch `key` (as long as the source's output context)."""
        if source.node == REQUEST:
            array = self.request[source.item]
            return array[key[0]] if key else array
        node = self.graph.node(source.node)
        item = self.graph.aliases[node.name][source.item]
        if node.demultiply_count is None:
            return (await self._run(node, key))[item]
        branches: np.ndarray = (await self._run(node, key[:-1]))[item]
        branch: np.ndarray = branches[key[-1]]  # a view, not a copy
        return branch

    async def _count(self, demultiplexer: str, key: Key) -> int:
        """How many branches `demultiplexer` made in branch `key` (its own context)."""
        if demultiplexer == REQUEST:
            return self._branches(self.request, self.graph.config.demultiply_count, "the request")
        node = self.graph.node(demultiplexer)
        return self._branches(await self._run(node, key), node.demultiply_count, f"node {demultiplexer!r}")

    def _branches(self, outputs: Mapping[str, np.ndarray], count: int | None, where: str) -> int:
        """The number of branches a demultiplexer's outputs split into: their common first dim."""
        sizes = {a.shape[0] if a.ndim else 0 for a in outputs.values()}
        found = sizes.pop() if len(sizes) == 1 else None
        if found is None or (count is not None and count > 0 and found != count):
            shapes = ", ".join(str(a.shape) for a in outputs.values())
            raise DropinError(
                Status.PIPELINE_WRONG_DIMENSION_SIZE_TO_DEMULTIPLY,
                f"pipeline {self.graph.name!r}: {where} demultiplies into {count if count and count > 0 else 'any'} "
                f"branches along the first dimension, but gives shapes {shapes}",
            )
        if found == 0:
            raise DropinError(
                Status.PIPELINE_DEMULTIPLEXER_NO_RESULTS, f"pipeline {self.graph.name!r}: {where} gave 0 branches"
            )
        return found

    # -- nodes -------------------------------------------------------------------------------

    def _run(self, node: NodeConfig, key: Key) -> asyncio.Task[Mapping[str, np.ndarray]]:
        task = self._runs.get((node.name, key))
        if task is None:
            task = self._runs[(node.name, key)] = asyncio.ensure_future(self._execute(node, key))
        return task

    async def _input(self, node: NodeConfig, source: Source, key: Key) -> np.ndarray:
        context = self.graph.out_context[source.node]
        if node.gather_from_node and len(context) > len(key):  # the branches of the gathered demultiplexer
            count = await self._count(node.gather_from_node, key)
            return np.stack(await asyncio.gather(*(self._value(source, (*key, i)) for i in range(count))))
        return await self._value(source, key[: len(context)])

    async def _execute(self, node: NodeConfig, key: Key) -> Mapping[str, np.ndarray]:
        values = await asyncio.gather(*(self._input(node, source, key) for _, source in node.inputs))
        inputs = {name: value for (name, _), value in zip(node.inputs, values, strict=True)}
        where = f"pipeline {self.graph.name!r} node {node.name!r}"
        if node.kind == CUSTOM_NODE:
            outputs = await self._custom(node, inputs, where)
        else:
            outputs = await self._model(node, inputs, where)
        check_outputs(node, outputs, where)
        if node.demultiply_count is not None:  # every output splits into the same number of branches
            self._branches(outputs, node.demultiply_count, f"node {node.name!r}")
        return outputs

    async def _model(self, node: NodeConfig, inputs: dict[str, np.ndarray], where: str) -> Mapping[str, np.ndarray]:
        servable = self.servables[node.name]
        arrays = model_arrays(servable, inputs, where)
        try:
            return await servable.model.infer(arrays)
        except DropinError:
            raise
        except Exception as exc:
            raise model_failed(servable, where, exc) from exc

    async def _custom(self, node: NodeConfig, inputs: dict[str, np.ndarray], where: str) -> Mapping[str, np.ndarray]:
        custom = self.customs[node.name]
        try:
            outputs = await asyncio.to_thread(custom.execute, inputs)
        except DropinError:
            raise
        except Exception as exc:
            raise custom_failed(custom, where, exc) from (None if isinstance(exc, ValueError) else exc)
        return custom_outputs(outputs, where)


def check_outputs(node: NodeConfig, outputs: Mapping[str, np.ndarray], where: str) -> None:
    missing = [item for item, _ in node.outputs if item not in outputs]
    if missing:
        raise DropinError(Status.CUSTOM_NODE_FAILED if node.kind == CUSTOM_NODE else Status.INFERENCE_ERROR,
                          f"{where} did not return {', '.join(missing)}")


def model_arrays(servable: Servable, inputs: Mapping[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """A model node's inputs validated against its model (the previous node's outputs may not fit)."""
    try:
        arrays, conversions = validate_request(servable.plans, {k: ArrayTensor(v) for k, v in inputs.items()})
    except DropinError as exc:  # the previous node's output does not fit this model
        raise DropinError(exc.status, f"{where}: {exc.details or exc.status.message}") from None
    except ReshapeRequired:
        raise DropinError(Status.INVALID_SHAPE, f"{where}: the shapes of its inputs need a reshape reload "
                          f"of model {servable.model_name!r}, which pipelines do not do") from None
    if conversions:
        raise DropinError(Status.INVALID_PRECISION, f"{where}: input {conversions[0].plan.spec.name} would need "
                          f"converting to {conversions[0].plan.spec.dtype.value}")
    return arrays


def model_failed(servable: Servable, where: str, exc: Exception) -> DropinError:
    log.error("%s: model %s version %d failed", where, servable.model_name, servable.version, exc_info=exc)
    return DropinError(Status.INFERENCE_ERROR, f"{where}: backend {servable.backend}: {type(exc).__name__}: {exc}")


def custom_failed(custom: CustomNode, where: str, exc: Exception) -> DropinError:
    if isinstance(exc, ValueError):
        return DropinError(Status.CUSTOM_NODE_INVALID_INPUT, f"{where}: {exc}")
    log.error("%s: custom node %s failed", where, custom.name, exc_info=exc)
    return DropinError(Status.CUSTOM_NODE_FAILED, f"{where}: {type(exc).__name__}: {exc}")


def custom_outputs(outputs: object, where: str) -> Mapping[str, np.ndarray]:
    if not isinstance(outputs, Mapping) or not all(isinstance(v, np.ndarray) for v in outputs.values()):
        raise DropinError(Status.CUSTOM_NODE_FAILED, f"{where}: execute must return a mapping of numpy arrays")
    return outputs
