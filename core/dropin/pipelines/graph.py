"""A pipeline's graph, checked without the models: every wire leads to a node and an output that
exist, there is no cycle, every node reaches the response, and every gather has its
demultiplexer. Each node gets its demultiplexing context: the demultiplexers it runs under (one
run per branch of each), outermost first."""

from __future__ import annotations

import graphlib
from collections.abc import Mapping
from dataclasses import dataclass

from .config import REQUEST, RESPONSE, NodeConfig, PipelineConfig, Source


class PipelineError(Exception):
    """Why a pipeline cannot be served (its status says it); the message names the pipeline and,
    where one is at fault, the node."""


@dataclass(frozen=True)
class Graph:
    config: PipelineConfig
    order: tuple[NodeConfig, ...]  # every node after the nodes it takes inputs from
    #: the demultiplexers a node runs under (its inputs' context, less what it gathers)
    context: Mapping[str, tuple[str, ...]]
    #: the context of a node's outputs: its own, plus itself if it demultiplies
    out_context: Mapping[str, tuple[str, ...]]
    #: per node, alias -> the model's or custom node's output name ("request": input -> input)
    aliases: Mapping[str, Mapping[str, str]]
    nodes: Mapping[str, NodeConfig]

    @property
    def name(self) -> str:
        return self.config.name

    def node(self, name: str) -> NodeConfig:
        return self.nodes[name]


def check_graph(config: PipelineConfig) -> Graph:
    """The pipeline's graph, or PipelineError naming the first thing wrong."""
    where = f"pipeline {config.name!r}"
    nodes = {n.name: n for n in config.nodes}
    if len(nodes) != len(config.nodes):
        raise PipelineError(f"{where}: two nodes share a name")
    for reserved in (REQUEST, RESPONSE):
        if reserved in nodes:
            raise PipelineError(f"{where} node {reserved!r}: the name is reserved for the pipeline's "
                                f"{'inputs' if reserved == REQUEST else 'outputs'}")
    if not config.outputs:
        raise PipelineError(f"{where}: no outputs")
    aliases: dict[str, dict[str, str]] = {REQUEST: {name: name for name in config.inputs}}
    for node in config.nodes:
        aliases[node.name] = {alias: item for item, alias in node.outputs}
        if len(aliases[node.name]) != len(node.outputs):
            raise PipelineError(f"{where} node {node.name!r}: two outputs share an alias")
        if node.gather_from_node and node.gather_from_node not in nodes and node.gather_from_node != REQUEST:
            raise PipelineError(f"{where} node {node.name!r}: gather_from_node {node.gather_from_node!r} "
                                f"is not a node of the pipeline")

    def check_source(source: Source, label: str) -> None:
        if source.node not in aliases:
            raise PipelineError(f"{label}: takes {source.item!r} from node {source.node!r}, "
                                f"which is not a node of the pipeline")
        if source.item not in aliases[source.node]:
            offered = ", ".join(sorted(aliases[source.node])) or "none"
            what = "pipeline input" if source.node == REQUEST else f"output alias of node {source.node!r}"
            raise PipelineError(f"{label}: takes {source.item!r}, which is no {what} (there are: {offered})")

    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for node in config.nodes:
        if not node.inputs:
            raise PipelineError(f"{where} node {node.name!r}: no inputs")
        names = [name for name, _ in node.inputs]
        if len(set(names)) != len(names):
            raise PipelineError(f"{where} node {node.name!r}: an input is wired twice")
        for name, source in node.inputs:
            check_source(source, f"{where} node {node.name!r} input {name!r}")
        sorter.add(node.name, *(s.node for _, s in node.inputs if s.node != REQUEST))
    for name, source in config.outputs:
        check_source(source, f"{where} output {name!r}")
    try:
        order = tuple(nodes[n] for n in sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise PipelineError(f"{where}: the nodes form a cycle: {cycle}") from None

    used = {s.node for _, s in config.outputs}
    for node in reversed(order):
        if node.name not in used:
            raise PipelineError(f"{where} node {node.name!r}: not connected to the response "
                                f"(no output of it reaches the pipeline's outputs)")
        used.update(s.node for _, s in node.inputs)
    unused = sorted(set(config.inputs) - {s.item for n in config.nodes for _, s in n.inputs if s.node == REQUEST})
    if unused:
        raise PipelineError(f"{where}: input(s) {', '.join(unused)} go to no node")

    out_context: dict[str, tuple[str, ...]] = {REQUEST: (REQUEST,) if config.demultiply_count is not None else ()}
    context: dict[str, tuple[str, ...]] = {}
    for node in order:
        label = f"{where} node {node.name!r}"
        sources = [out_context[s.node] for _, s in node.inputs]
        deepest = max(sources, key=len)
        if node.gather_from_node:
            if not deepest or deepest[-1] != node.gather_from_node:
                under = ", ".join(deepest) or "none"
                raise PipelineError(f"{label}: gather_from_node {node.gather_from_node!r} names no demultiplexer "
                                    f"its inputs come from (the innermost must be; they run under: {under})")
        for ctx in sources:
            if ctx != deepest[: len(ctx)] and not (node.gather_from_node and ctx == deepest[:-1]):
                raise PipelineError(f"{label}: its inputs come from different demultiplexed branches "
                                    f"({', '.join(ctx) or 'none'} and {', '.join(deepest)})")
        if node.gather_from_node and any(ctx != deepest for ctx in sources):
            raise PipelineError(f"{label}: gathers from {node.gather_from_node!r}, so every input must come "
                                f"from its branches")
        context[node.name] = deepest[:-1] if node.gather_from_node else deepest
        out_context[node.name] = context[node.name] + ((node.name,) if node.demultiply_count is not None else ())
    return Graph(config, order, context, out_context, aliases, nodes)
