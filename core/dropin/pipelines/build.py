"""A pipeline's graph bound to what its nodes run: the custom node classes the libraries name
(built once, with their params), and the model versions served now, whose inputs and outputs
must fit the wiring (every input connected, types and shapes that agree). Binding yields the
pipeline's own inputs and outputs, as metadata reports them."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..custom_nodes import CustomNode
from ..models import ModelTable, Servable, State
from ..registry import Registry
from ..shapes import Dim, TensorSpec
from .config import CUSTOM_NODE, REQUEST, NodeConfig, Source
from .graph import Graph, PipelineError


@dataclass(frozen=True)
class Binding:
    inputs: Mapping[str, TensorSpec]  # the pipeline's inputs, by name
    outputs: Mapping[str, TensorSpec]  # the pipeline's outputs, by name


def library_class(library: str, libraries: Mapping[str, str], registry: Registry[CustomNode]) -> type[CustomNode]:
    """The class a library of custom_node_library_config_list stands for: the one registered
    under its name, or else under its file's name without `libcustom_node_`/`lib` and `.so`."""
    if library not in libraries:
        raise KeyError(f"library {library!r} is not in custom_node_library_config_list")
    if library in registry:
        return registry.get(library)
    stem = PurePosixPath(libraries[library]).name.removesuffix(".so")
    for prefix in ("libcustom_node_", "lib"):
        if stem.startswith(prefix):
            stem = stem[len(prefix):]
            break
    if stem in registry:
        return registry.get(stem)
    installed = ", ".join(registry.names()) or "none"
    raise KeyError(f"library {library!r} ({libraries[library]}) is no installed custom node (installed: {installed})")


def build_custom_nodes(
    graph: Graph, libraries: Mapping[str, str], registry: Registry[CustomNode]
) -> dict[str, CustomNode]:
    """Every custom node of the pipeline, built with its params (in a worker thread: a node may
    read files). PipelineError names the node whose library or params are wrong."""
    built: dict[str, CustomNode] = {}
    for node in graph.order:
        if node.kind != CUSTOM_NODE:
            continue
        where = f"pipeline {graph.name!r} node {node.name!r}"
        try:
            cls = library_class(node.library_name, libraries, registry)
        except KeyError as exc:
            raise PipelineError(f"{where}: {exc.args[0]}") from None
        try:
            built[node.name] = cls(dict(node.params))
        except Exception as exc:
            for done in built.values():
                done.close()
            raise PipelineError(f"{where}: custom node {cls.name!r} refused its params: {exc}") from None
    return built


def current_servables(graph: Graph, table: ModelTable) -> dict[str, Servable]:
    """The servable each model node would run now (its version, or the default), without
    acquiring them; PipelineError when a model is unknown or has no such version AVAILABLE."""
    found: dict[str, Servable] = {}
    for node in graph.order:
        if node.kind == CUSTOM_NODE:
            continue
        where = f"pipeline {graph.name!r} node {node.name!r}"
        model = table.models.get(node.model_name)
        if model is None or model.removed:
            raise PipelineError(f"{where}: model {node.model_name!r} is not served")
        version = model.versions.get(node.version) if node.version else model.default
        if version is None or version.state != State.AVAILABLE or version.servable is None:
            which = f"version {node.version}" if node.version else "no version"
            raise PipelineError(f"{where}: model {node.model_name!r} has {which} AVAILABLE")
        if version.servable.sequences is not None:  # a request of a pipeline carries no sequence
            raise PipelineError(f"{where}: model {node.model_name!r} is stateful; pipelines take stateless models only")
        found[node.name] = version.servable
    return found


def bind(graph: Graph, servables: Mapping[str, Servable], customs: Mapping[str, CustomNode]) -> Binding:
    """Check the wiring against the nodes' inputs and outputs; the pipeline's own specs."""
    config = graph.config
    produced: dict[tuple[str, str], TensorSpec] = {}  # (node, alias) -> one branch's spec
    requested: dict[str, TensorSpec] = {}  # pipeline input -> the spec of the first node input it feeds
    request_count = _count_dim(config.demultiply_count)
    for node in graph.order:
        where = f"pipeline {graph.name!r} node {node.name!r}"
        ins, outs = _node_specs(node, servables, customs)
        wired = [name for name, _ in node.inputs]
        missing = sorted(set(ins) - set(wired))
        if missing:
            raise PipelineError(f"{where}: input(s) {', '.join(missing)} are not connected")
        for name, source in node.inputs:
            if name not in ins:
                raise PipelineError(f"{where}: takes no input {name!r} (its inputs: {', '.join(sorted(ins))})")
            want = ins[name]
            if source.node == REQUEST:
                spec = requested.setdefault(source.item, dataclasses.replace(want, name=source.item))
                if request_count is not None:  # the request's first dimension splits it into branches
                    continue
            else:
                spec = produced[(source.node, source.item)]
                if node.gather_from_node and graph.out_context[source.node][-1:] == (node.gather_from_node,):
                    spec = _prepend(spec, _gather_dim(graph, node.gather_from_node))
            if spec.dtype != want.dtype or not _fits(spec.shape, want.shape):
                got = f"{spec.dtype.value} {spec.shape_text()}"
                raise PipelineError(f"{where}: input {name!r} takes {want.dtype.value} {want.shape_text()}, but "
                                    f"{_describe(source)} gives {got}")
        for item, alias in node.outputs:
            if item not in outs:
                raise PipelineError(f"{where}: has no output {item!r} (its outputs: {', '.join(sorted(outs))})")
            spec = outs[item]
            if node.demultiply_count is not None:
                count = node.demultiply_count
                if spec.rank < 2:
                    raise PipelineError(f"{where}: demultiplies, but output {item!r} has {spec.rank} dimension(s); "
                                        f"a demultiplexer's outputs need at least 2")
                first = spec.shape[0]
                if count > 0 and first.is_static and first.low != count:
                    raise PipelineError(f"{where}: demultiply_count is {count}, but output {item!r} has shape "
                                        f"{spec.shape_text()}")
                spec = dataclasses.replace(spec, shape=spec.shape[1:])
            produced[(node.name, alias)] = spec
    if request_count is not None:
        requested = {name: _prepend(spec, request_count) for name, spec in requested.items()}
    outputs = {}
    for name, source in config.outputs:
        spec = requested[source.item] if source.node == REQUEST else produced[(source.node, source.item)]
        for level in reversed(graph.out_context[source.node]):
            spec = _prepend(spec, _gather_dim(graph, level))
        outputs[name] = dataclasses.replace(spec, name=name, layout=None)
    return Binding({name: requested[name] for name in config.inputs if name in requested}, outputs)


def _node_specs(
    node: NodeConfig, servables: Mapping[str, Servable], customs: Mapping[str, CustomNode]
) -> tuple[Mapping[str, TensorSpec], Mapping[str, TensorSpec]]:
    if node.kind == CUSTOM_NODE:
        custom = customs[node.name]
        return custom.inputs, custom.outputs
    model = servables[node.name].model
    return model.inputs, model.outputs


def _count_dim(count: int | None) -> Dim | None:
    if count is None:
        return None
    return Dim.static(count) if count > 0 else Dim.dynamic()


def _gather_dim(graph: Graph, demultiplexer: str) -> Dim:
    count = graph.config.demultiply_count if demultiplexer == REQUEST else graph.node(demultiplexer).demultiply_count
    dim = _count_dim(count)
    assert dim is not None
    return dim


def _prepend(spec: TensorSpec, dim: Dim) -> TensorSpec:
    return dataclasses.replace(spec, shape=(dim, *spec.shape), layout=None)


def _fits(got: tuple[Dim, ...], want: tuple[Dim, ...]) -> bool:
    """Some shape fits both: same rank, and every pair of dims has a size in common."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        low = max(a.low, b.low)
        highs = [h for h in (a.high, b.high) if h is not None]
        if highs and low > min(highs):
            return False
    return True


def _describe(source: Source) -> str:
    if source.node == REQUEST:
        return f"pipeline input {source.item!r}"
    return f"{source.item!r} of node {source.node!r}"

