"""OVMS's pipeline configuration: `pipeline_config_list` and `custom_node_library_config_list` of
config.json, read with OVMS's schema (every object refuses keys it does not define, every value
has its type). A file that breaks the schema is refused as a whole, as OVMS refuses it; what only
the models can tell (unknown models, mismatched tensors, cycles) is checked when the pipeline is
built, and fails that pipeline alone (graph.py, build.py).

    {"name": "chain", "inputs": ["x"],
     "nodes": [{"name": "a", "type": "DL model", "model_name": "model_a",
                "inputs": [{"in": {"node_name": "request", "data_item": "x"}}],
                "outputs": [{"data_item": "out", "alias": "a_out"}]}],
     "outputs": [{"y": {"node_name": "a", "data_item": "a_out"}}]}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError

#: the node a pipeline's inputs come from, in every node's `inputs`
REQUEST = "request"
#: the node a pipeline's outputs go to (OVMS's name; no node may take it)
RESPONSE = "response"
MODEL_NODE = "DL model"
CUSTOM_NODE = "custom"


@dataclass(frozen=True)
class Source:
    """Where a node input (or a pipeline output) comes from: a node's output alias, or a
    pipeline input when `node` is "request"."""

    node: str
    item: str


@dataclass(frozen=True)
class NodeConfig:
    name: str
    kind: str  # MODEL_NODE or CUSTOM_NODE
    inputs: tuple[tuple[str, Source], ...]  # (the model's or custom node's input name, its source)
    outputs: tuple[tuple[str, str], ...]  # (the model's or custom node's output name, its alias)
    model_name: str = ""
    version: int = 0  # 0: the model's default version
    library_name: str = ""
    params: tuple[tuple[str, str], ...] = ()
    demultiply_count: int | None = None  # None: no demultiplexing; -1 (or 0): any count
    gather_from_node: str = ""

    @property
    def dynamic_count(self) -> bool:
        return self.demultiply_count is not None and self.demultiply_count <= 0


@dataclass(frozen=True)
class PipelineConfig:
    name: str
    inputs: tuple[str, ...]
    nodes: tuple[NodeConfig, ...]
    outputs: tuple[tuple[str, Source], ...]  # (the pipeline output's name, its source)
    demultiply_count: int | None = None  # the request itself is split along its first dimension


@dataclass(frozen=True)
class PipelineSet:
    """Every pipeline of a config.json, and its custom node libraries (name -> base_path)."""

    pipelines: tuple[PipelineConfig, ...] = ()
    libraries: tuple[tuple[str, str], ...] = ()


def parse_pipelines(document: Mapping[str, Any], where: str) -> PipelineSet:
    """The pipelines and libraries of a decoded config.json (`where` names it in errors)."""
    libraries = []
    for item in _list(document, "custom_node_library_config_list", where):
        label = f"{where}: custom_node_library_config_list item {item.get('name', '?')!r}"
        _keys(item, {"name", "base_path"}, {"name", "base_path"}, label)
        libraries.append((_str(item, "name", label), _str(item, "base_path", label)))
    _unique([name for name, _ in libraries], f"{where}: custom_node_library_config_list")
    pipelines = tuple(
        _pipeline(item, where) for item in _list(document, "pipeline_config_list", where)
    )
    _unique([p.name for p in pipelines], f"{where}: pipeline_config_list")
    return PipelineSet(pipelines, tuple(libraries))


def _pipeline(item: Mapping[str, Any], where: str) -> PipelineConfig:
    label = f"{where}: pipeline_config_list item {item.get('name', '?')!r}"
    _keys(item, {"name", "nodes", "inputs", "outputs"}, {"name", "nodes", "inputs", "outputs", "demultiply_count"},
          label)
    name = _str(item, "name", label)
    inputs = item["inputs"]
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise ConfigError(f"{label}: inputs must be a list of names")
    nodes = tuple(_node(node, label) for node in _list(item, "nodes", label))
    outputs = _sources(item["outputs"], f"{label} outputs")
    return PipelineConfig(name, tuple(inputs), nodes, outputs, _count(item, label))


def _node(item: Mapping[str, Any], where: str) -> NodeConfig:
    label = f"{where} node {item.get('name', '?')!r}"
    allowed = {"name", "model_name", "library_name", "type", "version", "inputs", "outputs", "params",
               "demultiply_count", "gather_from_node"}
    _keys(item, {"name", "type", "inputs", "outputs"}, allowed, label)
    kind = item["type"]
    if kind == MODEL_NODE:
        if "model_name" not in item or "library_name" in item:
            raise ConfigError(f'{label}: a "DL model" node needs model_name and takes no library_name')
    elif kind == CUSTOM_NODE:
        if "library_name" not in item or "model_name" in item:
            raise ConfigError(f'{label}: a "custom" node needs library_name and takes no model_name')
    else:
        raise ConfigError(f'{label}: type must be "DL model" or "custom", got {kind!r}')
    version = item.get("version", 0)
    if "version" in item and (not _is_int(version) or version < 1):
        raise ConfigError(f"{label}: version must be an integer >= 1, got {version!r}")
    params = item.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise ConfigError(f"{label}: params must be an object of strings")
    outputs = item["outputs"]
    if not isinstance(outputs, list):
        raise ConfigError(f"{label}: outputs must be a list")
    pairs = []
    for output in outputs:
        if not isinstance(output, dict):
            raise ConfigError(f'{label}: every output must be {{"data_item": ..., "alias": ...}}')
        _keys(output, {"data_item", "alias"}, {"data_item", "alias"}, f"{label} output")
        pairs.append((_str(output, "data_item", label), _str(output, "alias", label)))
    gather = item.get("gather_from_node", "")
    if not isinstance(gather, str):
        raise ConfigError(f"{label}: gather_from_node must be a node name")
    return NodeConfig(
        name=_str(item, "name", label),
        kind=kind,
        inputs=_sources(item["inputs"], f"{label} inputs"),
        outputs=tuple(pairs),
        model_name=item.get("model_name", "") if kind == MODEL_NODE else "",
        version=version,
        library_name=item.get("library_name", "") if kind == CUSTOM_NODE else "",
        params=tuple(sorted(params.items())),
        demultiply_count=_count(item, label),
        gather_from_node=gather,
    )


def _sources(value: Any, where: str) -> tuple[tuple[str, Source], ...]:
    """OVMS's `[{"name": {"node_name": ..., "data_item": ...}}, ...]`."""
    if not isinstance(value, list):
        raise ConfigError(f"{where} must be a list")
    pairs = []
    for item in value:
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f'{where}: every item must be {{"name": {{"node_name": ..., "data_item": ...}}}}')
        (name, source), = item.items()
        if not isinstance(source, dict):
            raise ConfigError(f"{where} {name!r} must be {{\"node_name\": ..., \"data_item\": ...}}")
        _keys(source, {"node_name", "data_item"}, {"node_name", "data_item"}, f"{where} {name!r}")
        pairs.append((name, Source(_str(source, "node_name", where), _str(source, "data_item", where))))
    return tuple(pairs)


def _count(item: Mapping[str, Any], label: str) -> int | None:
    count = item.get("demultiply_count")
    if count is not None and (not _is_int(count) or not -1 <= count <= 10000):
        raise ConfigError(f"{label}: demultiply_count must be an integer from -1 (any count) to 10000, got {count!r}")
    return count


def _list(document: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{where}: {key} must be a list of objects")
    return items


def _keys(item: Mapping[str, Any], required: set[str], allowed: set[str], label: str) -> None:
    extra = sorted(set(item) - allowed)
    if extra:
        raise ConfigError(f"{label}: unknown key(s) {', '.join(extra)}")
    missing = sorted(required - set(item))
    if missing:
        raise ConfigError(f"{label} needs {', '.join(missing)}")


def _str(item: Mapping[str, Any], key: str, label: str) -> str:
    value = item[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{label}: {key} must be a non-empty string")
    return value


def _unique(names: list[str], where: str) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: duplicate name(s) {', '.join(duplicates)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
