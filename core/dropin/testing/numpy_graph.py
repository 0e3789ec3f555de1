"""The numpy backend's model format (`numpy_backend`), and its evaluation with numpy.

A numpy model is a version directory holding `numpy_model.json` (the graph) and, optionally,
`.npy` weight files next to it. Weights are opened with `np.load(mmap_mode="r")`: like real
runtimes, the backend maps them from the files it loaded. The graph:

    {"inputs":  {"x": {"dtype": "FP32", "shape": [-1, 2], "layout": "NC"}},
     "outputs": {"y": {"dtype": "FP32", "shape": [-1, 2]}},
     "weights": {"w": "w.npy"},
     "nodes":   [{"op": "mul", "args": ["x", {"const": 2.0}], "out": "y"}],
     "reject":  [{"input": "x", "equals": 13, "message": "13 is unlucky"}],
     "variables": {"acc": {"dtype": "FP32", "shape": [1, 2]}}, "assign": {"acc": "y"},
     "delay_seconds": 0.0, "gate": null, "load_delay_seconds": 0.0, "load_gate": null}

Dims are sizes, -1 (any size) or [low, high] ranges (high -1: unbounded). A node's args name an
input, a weight or an earlier node's `out`, or are constants `{"const": value, "dtype": "I32"}`
(FP32 by default for floats, I64 for integers); other keys of a node are the op's attributes.
Every output must be some node's `out`; results are cast to the output's declared dtype.
`OPS` lists the ops. `variables` make a stateful model: each starts at zeros, nodes read it by
its name, and `assign` gives it a node's value after each inference (`evaluate_sequence`: what
OpenVINO's ReadValue/Assign do). `reject` rules refuse requests with a client error (`check_rules`);
the `fail_if` op fails inference itself (an internal error). `delay_seconds` and `gate` (a file
that must exist before inference runs) slow inference down; `load_delay_seconds` and `load_gate`
do the same for loading.

`dropin.testing.numpy_models` writes these models; `evaluate` is the reference the tests compare
the server's answers with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DType
from ..errors import DropinError, Status
from ..shapes import TensorSpec, dim

#: the file that makes a version directory a numpy model (the only file name this backend claims)
GRAPH_FILE = "numpy_model.json"

Array = np.ndarray

_NPY_MAGIC = b"\x93NUMPY"


def _sum(a: Array, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    return np.asarray(np.sum(a, axis=_axis(axis), keepdims=keepdims))


def _axis(axis: int | Sequence[int] | None) -> int | tuple[int, ...] | None:
    return axis if axis is None or isinstance(axis, int) else tuple(axis)  # JSON gives lists


def _fail_if(a: Array, equals: Any = None, message: str = "fail_if: the input holds the failing value") -> Array:
    if equals is None or np.any(a == equals):
        raise RuntimeError(message)
    return a


def _softmax(a: Array, axis: int = -1) -> Array:
    e = np.exp(a - np.max(a, axis=axis, keepdims=True))
    return np.asarray(e / np.sum(e, axis=axis, keepdims=True))


def _dense(x: Array, w: Array, b: Array | None = None) -> Array:
    y = np.matmul(x, w)
    return np.asarray(y if b is None else y + b)


#: op name -> numpy function of (args..., **attributes)
OPS: dict[str, Callable[..., Any]] = {
    "identity": lambda a: np.array(a, copy=True),
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "matmul": np.matmul,
    "dense": _dense,  # x @ w (+ b)
    "gather": lambda table, ids, axis=0: np.take(table, ids, axis=axis),
    "argmax": lambda a, axis=-1: np.argmax(a, axis=axis).astype(np.int64),
    "sum": _sum,
    "reshape": lambda a, shape: np.reshape(a, shape),
    "cast": lambda a, dtype: np.asarray(a).astype(DType(dtype).numpy),
    "relu": lambda a: np.maximum(a, 0),
    "softmax": _softmax,
    "fail_if": _fail_if,  # raises when any item equals `equals` (always, without it)
}


class ModelFormatError(ValueError):
    """The graph file is not a model this backend can load (the message says where and why)."""


@dataclass(frozen=True)
class Node:
    op: str
    args: tuple[Any, ...]  # a name (str) or a constant array
    attrs: Mapping[str, Any]
    out: str


@dataclass(frozen=True)
class Rule:
    """A `reject` rule: requests whose input holds `equals` are refused with `message`."""

    input: str
    equals: Any
    message: str


@dataclass(frozen=True)
class Graph:
    """A parsed numpy model, weights mapped."""

    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    weights: Mapping[str, Array]
    nodes: tuple[Node, ...]
    reject: tuple[Rule, ...] = ()
    delay_seconds: float = 0.0
    gate: Path | None = None
    load_delay_seconds: float = 0.0
    load_gate: Path | None = None
    variables: Mapping[str, TensorSpec] = field(default_factory=dict)  # the state, each starting at zeros
    assign: Mapping[str, str] = field(default_factory=dict)  # variable -> the node whose value it takes


def claims(version_dir: Path) -> bool:
    return (Path(version_dir) / GRAPH_FILE).is_file()


def read_graph(version_dir: Path | str) -> Graph:
    """Parse and check `numpy_model.json` and map its weights; raises `ModelFormatError`
    (or OSError for unreadable files) with a message naming the problem."""
    version_dir = Path(version_dir)
    path = version_dir / GRAPH_FILE
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ModelFormatError(f"no {GRAPH_FILE} in {version_dir}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{GRAPH_FILE} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelFormatError(f"{GRAPH_FILE} must hold a JSON object")
    inputs = _specs(doc.get("inputs"), "input")
    outputs = _specs(doc.get("outputs"), "output")
    if not inputs or not outputs:
        raise ModelFormatError(f"{GRAPH_FILE}: a model needs at least one input and one output")
    weights: dict[str, Array] = {}
    for name, file in dict(doc.get("weights") or {}).items():
        weight_path = version_dir / str(file)
        if weight_path.parent != version_dir:
            raise ModelFormatError(f"weight {name!r}: {file!r} must be a file of the version directory")
        try:
            with open(weight_path, "rb") as f:
                if f.read(len(_NPY_MAGIC)) != _NPY_MAGIC:  # np.load would take it for a pickle
                    raise ModelFormatError(f"weight {name!r}: {file} is not an .npy file (no .npy header)")
            weights[name] = np.load(weight_path, mmap_mode="r", allow_pickle=False)
        except ModelFormatError:
            raise
        except FileNotFoundError:
            raise ModelFormatError(f"weight {name!r}: {file} not found") from None
        except (ValueError, EOFError) as exc:  # truncated, object dtype
            raise ModelFormatError(f"weight {name!r}: {file} is not a readable .npy file: {exc}") from None
    variables = _specs(doc.get("variables") or {}, "variable")
    known = set(inputs) | set(weights) | set(variables)
    nodes = []
    for index, raw in enumerate(doc.get("nodes") or []):
        node = _node(index, raw, known)
        known.add(node.out)
        nodes.append(node)
    missing = [name for name in outputs if name not in known]
    if missing:
        raise ModelFormatError(f"output(s) {', '.join(missing)} are computed by no node")
    assign = {str(k): str(v) for k, v in dict(doc.get("assign") or {}).items()}
    wrong = [f"{k} <- {v}" for k, v in assign.items() if k not in variables or v not in known]
    if wrong or set(variables) - set(assign):
        raise ModelFormatError(f"assign: every variable takes a node's value ({', '.join(wrong) or 'missing'})")
    reject = []
    for raw in doc.get("reject") or []:
        if not isinstance(raw, dict) or raw.get("input") not in inputs or "equals" not in raw:
            raise ModelFormatError(f"reject rule {raw!r}: expected {{\"input\": <an input>, \"equals\": <value>}}")
        message = str(raw.get("message") or f"value {raw['equals']!r} is refused")
        reject.append(Rule(raw["input"], raw["equals"], message))
    return Graph(
        inputs,
        outputs,
        weights,
        tuple(nodes),
        tuple(reject),
        parse_seconds(doc, "delay_seconds"),
        _gate(version_dir, doc.get("gate")),
        parse_seconds(doc, "load_delay_seconds"),
        _gate(version_dir, doc.get("load_gate")),
        variables,
        assign,
    )


def _specs(raw: Any, kind: str) -> dict[str, TensorSpec]:
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{GRAPH_FILE}: {kind}s must be an object of name -> {{dtype, shape}}")
    specs = {}
    for name, entry in raw.items():
        try:
            dtype = DType(str(entry["dtype"]).upper())
            shape = tuple(dim(tuple(d) if isinstance(d, list) else int(d)) for d in entry["shape"])
        except (KeyError, TypeError, ValueError) as exc:
            expected = '{"dtype": "FP32", "shape": [-1, 2]}'
            raise ModelFormatError(f"{kind} {name!r}: expected {expected} ({exc})") from None
        layout = entry.get("layout")
        if layout is not None and len(layout) != len(shape):
            raise ModelFormatError(f"{kind} {name!r}: layout {layout!r} does not fit rank {len(shape)}")
        specs[name] = TensorSpec(name, dtype, shape, layout)
    return specs


def _node(index: int, raw: Any, known: set[str]) -> Node:
    if not isinstance(raw, dict) or "op" not in raw or "out" not in raw:
        raise ModelFormatError(f"node {index}: expected {{\"op\": ..., \"args\": [...], \"out\": ...}}")
    op = raw["op"]
    if op not in OPS:
        raise ModelFormatError(f"node {index}: unknown op {op!r} (ops: {', '.join(OPS)})")
    args: list[Any] = []
    for arg in raw.get("args") or []:
        if isinstance(arg, str):
            if arg not in known:
                raise ModelFormatError(
                    f"node {index} ({op}): {arg!r} is not an input, a weight or an earlier node's out"
                )
            args.append(arg)
        elif isinstance(arg, dict) and "const" in arg:
            args.append(_const(arg["const"], arg.get("dtype")))
        else:
            raise ModelFormatError(f"node {index} ({op}): argument {arg!r} is neither a name nor {{\"const\": ...}}")
    attrs = {k: v for k, v in raw.items() if k not in ("op", "args", "out")}
    return Node(op, tuple(args), attrs, str(raw["out"]))


def _const(value: Any, dtype: str | None) -> Array:
    if dtype is None:
        dtype = "FP32" if isinstance(value, float) or (isinstance(value, list) and _has_float(value)) else "I64"
    return np.asarray(value, dtype=DType(dtype.upper()).numpy)


def _has_float(values: list[Any]) -> bool:
    return any(_has_float(v) if isinstance(v, list) else isinstance(v, float) for v in values)


def parse_seconds(doc: Mapping[str, Any], key: str) -> float:
    value = doc.get(key) or 0.0
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ModelFormatError(f"{key} {value!r}: expected a number of seconds >= 0")
    return float(value)


def _gate(version_dir: Path, value: Any) -> Path | None:
    return None if value is None else version_dir / str(value)  # an absolute path stays absolute


def initial_state(graph: Graph) -> dict[str, Array]:
    """The variables' values at the start of a sequence: zeros."""
    return {name: np.zeros([d.low for d in spec.shape], spec.dtype.numpy) for name, spec in graph.variables.items()}


def evaluate_sequence(
    graph: Graph, inputs: Mapping[str, Array], state: Mapping[str, Array] | None
) -> tuple[dict[str, Array], dict[str, Array]]:
    """One step of a stateful graph: the outputs and the variables' new values (`state` None:
    the sequence starts)."""
    values: dict[str, Any] = {**graph.weights, **(initial_state(graph) if state is None else state), **inputs}
    outputs = _run_nodes(graph, values)
    new_state = {
        name: np.asarray(values[node]).astype(graph.variables[name].dtype.numpy) for name, node in graph.assign.items()
    }
    return outputs, new_state


def evaluate(graph: Graph, inputs: Mapping[str, Array]) -> dict[str, Array]:
    """Run the graph on `inputs` with numpy: what the backend computes, without the server."""
    if graph.variables:  # a stateful graph evaluated alone: one step from the initial state
        return evaluate_sequence(graph, inputs, None)[0]
    return _run_nodes(graph, {**graph.weights, **inputs})


def _run_nodes(graph: Graph, values: dict[str, Any]) -> dict[str, Array]:
    for node in graph.nodes:
        args = [values[a] if isinstance(a, str) else a for a in node.args]
        values[node.out] = OPS[node.op](*args, **node.attrs)
    outputs = {}
    for name, spec in graph.outputs.items():
        result = np.asarray(values[name])
        if spec.dtype is DType.STRING:
            outputs[name] = result.astype(object, copy=False)
        else:
            outputs[name] = result.astype(spec.dtype.numpy, copy=False)
    return outputs


def check_rules(graph: Graph, inputs: Mapping[str, Array]) -> None:
    """Refuse a request that a `reject` rule names (vectorised: one comparison per rule)."""
    for rule in graph.reject:
        if np.any(inputs[rule.input] == rule.equals):
            raise DropinError(Status.INVALID_VALUE, f"input {rule.input}: {rule.message}")
