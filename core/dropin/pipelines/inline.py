"""One pipeline request run in the calling thread (a gRPC handler thread), without the event loop:
the nodes the wanted outputs need, one after the other in topological order, each model node
through its model's `infer_now` (which releases the GIL while it infers), each custom node's
`execute` called directly. Only for nodes that cannot run concurrently anyway: no
demultiplexing, and each node takes an input from the one before it (serving.Pipeline.run_now
decides); the loop's executor.py runs the others, independent nodes concurrently.

It saves what a request on the loop costs around two short inferences: the hand-offs from the
handler thread to the loop and back, and from the loop to a model's thread and back for every
node, each a thread switch on a busy machine (docs/performance.md, Pipelines)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DropinError
from ..models import Servable
from .config import CUSTOM_NODE, REQUEST, Source
from .executor import check_outputs, custom_failed, custom_outputs, model_arrays, model_failed
from .graph import Graph

if TYPE_CHECKING:
    from ..custom_nodes import CustomNode


def needed_nodes(graph: Graph, outputs: Sequence[tuple[str, Source]]) -> frozenset[str]:
    """The nodes whose results the outputs `outputs` depend on."""
    needed = {source.node for _, source in outputs}
    for node in reversed(graph.order):
        if node.name in needed:
            needed.update(source.node for _, source in node.inputs)
    return frozenset(needed)


def one_after_another(graph: Graph, needed: frozenset[str]) -> bool:
    """Whether the nodes `needed` can only run one after the other: each takes an input from the
    one before it in topological order (else two of them could run at once, on the loop)."""
    chain = [node for node in graph.order if node.name in needed]
    return all(any(source.node == before.name for _, source in node.inputs)
               for before, node in zip(chain, chain[1:], strict=False))


def run_inline(
    graph: Graph,
    request: Mapping[str, np.ndarray],
    servables: Mapping[str, Servable],
    customs: Mapping[str, CustomNode],
    outputs: Sequence[tuple[str, Source]],
    needed: frozenset[str],
) -> dict[str, np.ndarray]:
    """The pipeline outputs `outputs`, running the nodes in `needed` (needed_nodes)."""
    results: dict[str, Mapping[str, np.ndarray]] = {}

    def value(source: Source) -> np.ndarray:
        if source.node == REQUEST:
            return request[source.item]
        return results[source.node][graph.aliases[source.node][source.item]]

    for node in graph.order:
        if node.name not in needed:
            continue
        inputs = {name: value(source) for name, source in node.inputs}
        where = f"pipeline {graph.name!r} node {node.name!r}"
        node_outputs: Mapping[str, np.ndarray]
        if node.kind == CUSTOM_NODE:
            custom = customs[node.name]
            try:
                node_outputs = custom_outputs(custom.execute(inputs), where)
            except DropinError:
                raise
            except Exception as exc:
                raise custom_failed(custom, where, exc) from (None if isinstance(exc, ValueError) else exc)
        else:
            servable = servables[node.name]
            arrays = model_arrays(servable, inputs, where)
            try:
                node_outputs = servable.model.infer_now(arrays)
            except DropinError:
                raise
            except Exception as exc:
                raise model_failed(servable, where, exc) from exc
        check_outputs(node, node_outputs, where)
        results[node.name] = node_outputs
    return {name: value(source) for name, source in outputs}
