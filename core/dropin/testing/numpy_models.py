"""Writes models for the numpy backend (`dropin.testing.numpy_backend`): a small builder, the
test models the core's tests use, the conformance suite's models, and `run_numpy`, the reference
the tests compare the server's outputs with (numpy run directly on the same input).

    model = NumpyModelWriter()
    x = model.input("x", "FP32", [-1, 2])
    model.output(model.node("mul", x, model.const(2.0)), "y", "FP32", [-1, 2])
    model.save(version_dir)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..dtypes import DType
from .models import ALL_DTYPES, ConformanceModels
from .numpy_graph import GRAPH_FILE, evaluate, evaluate_sequence, read_graph

DimSpec = Any  # an int (-1: any size) or a (low, high) pair


class NumpyModelWriter:
    """Builds a `numpy_model.json` graph (and its .npy weights) node by node."""

    def __init__(self) -> None:
        self.doc: dict[str, Any] = {"inputs": {}, "outputs": {}, "weights": {}, "nodes": []}
        self._arrays: dict[str, np.ndarray] = {}

    def input(self, name: str, dtype: DType | str, shape: Sequence[DimSpec], layout: str | None = None) -> str:
        self.doc["inputs"][name] = _spec(dtype, shape, layout)
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """A weight saved as `<name>.npy` beside the graph (mapped, not read, at load)."""
        self._arrays[name] = np.ascontiguousarray(array)
        self.doc["weights"][name] = f"{name}.npy"
        return name

    @staticmethod
    def const(value: Any, dtype: DType | str | None = None) -> dict[str, Any]:
        const: dict[str, Any] = {"const": value.tolist() if isinstance(value, np.ndarray) else value}
        if dtype is not None:
            const["dtype"] = DType(dtype).value if isinstance(dtype, str) else dtype.value
        return const

    def node(self, op: str, *args: Any, out: str | None = None, **attrs: Any) -> str:
        """Add `out = op(*args, **attrs)`; args are names (inputs, weights, nodes) or `const`s."""
        out = out or f"t{len(self.doc['nodes'])}"
        self.doc["nodes"].append({"op": op, "args": list(args), "out": out, **attrs})
        return out

    def output(self, node: str, name: str, dtype: DType | str, shape: Sequence[DimSpec]) -> str:
        """Declare output `name` as the value of `node` (renaming the node's `out` to `name`)."""
        if node != name:
            if node in self.doc["inputs"] or node in self.doc["weights"]:
                node = self.node("identity", node)
            for entry in self.doc["nodes"]:
                entry["args"] = [name if a == node else a for a in entry["args"]]
                if entry["out"] == node:
                    entry["out"] = name
        self.doc["outputs"][name] = _spec(dtype, shape)
        return name

    def variable(self, name: str, dtype: DType | str, shape: Sequence[int]) -> str:
        """A state variable (zeros at the start of a sequence): give it a value with `assign`."""
        self.doc.setdefault("variables", {})[name] = _spec(dtype, shape)
        return name

    def assign(self, variable: str, node: str) -> None:
        """After each inference, `variable` takes the value of `node` (an output's name once declared)."""
        self.doc.setdefault("assign", {})[variable] = node

    def set(self, **model_keys: Any) -> NumpyModelWriter:
        """Model-level keys: reject, delay_seconds, gate, load_delay_seconds, load_gate."""
        self.doc.update(model_keys)
        return self

    def save(self, version_dir: Path | str) -> Path:
        version_dir = Path(version_dir)
        version_dir.mkdir(parents=True, exist_ok=True)
        for name, array in self._arrays.items():
            np.save(version_dir / f"{name}.npy", array, allow_pickle=False)
        (version_dir / GRAPH_FILE).write_text(json.dumps(self.doc, indent=1))
        return version_dir


def _spec(dtype: DType | str, shape: Sequence[DimSpec], layout: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dtype": dtype.value if isinstance(dtype, DType) else str(dtype).upper(),
        "shape": [list(d) if isinstance(d, tuple) else int(d) for d in shape],
    }
    if layout:
        spec["layout"] = layout
    return spec


def run_numpy(version_dir: Path | str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: the model's graph evaluated with numpy directly on the same input."""
    return evaluate(read_graph(version_dir), inputs)


def run_numpy_sequence(
    version_dir: Path | str, steps: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """The reference for a stateful model: its graph run with numpy over the whole sequence."""
    graph = read_graph(version_dir)
    state = None
    results = []
    for inputs in steps:
        outputs, state = evaluate_sequence(graph, inputs, state)
        results.append(outputs)
    return results


# -- the core tests' models (named as dropin_openvino.modelgen names its OpenVINO models) ---------------


#: the files of a `scale_model`: its weights first, the graph last (the order a deployment writes them)
SCALE_FILES = ("factor.npy", "numpy_model.json")


def scale_model(
    version_dir: Path, shape: Sequence[DimSpec] = (1, 3, 4), factor: float = 2.0, offset: float = 0.0, **model_keys: Any
) -> Path:
    """y = x * factor + offset, FP32, input "x", output "y"; the factor is a weight (factor.npy,
    the same size whatever its value, so that tests can overwrite it in place). `model_keys`:
    see `NumpyModelWriter.set` (delay_seconds, gate, load_gate, ...)."""
    m = NumpyModelWriter().set(**model_keys)
    x = m.input("x", DType.FP32, shape)
    y = m.node("add", m.node("mul", x, m.weight("factor", np.array(factor, np.float32))), m.const(float(offset)))
    m.output(y, "y", DType.FP32, shape)
    return m.save(version_dir)


def dynamic_model(version_dir: Path) -> Path:
    """x: FP32 [-1,-1] -> y = x + 1 and total = sum over axis 1."""
    m = NumpyModelWriter()
    x = m.input("x", DType.FP32, (-1, -1))
    m.output(m.node("add", x, m.const(1.0)), "y", DType.FP32, (-1, -1))
    m.output(m.node("sum", x, axis=1), "total", DType.FP32, (-1,))
    return m.save(version_dir)


def two_input_model(version_dir: Path) -> Path:
    """a, b: FP32 [-1,2] -> sum = a + b, diff = a - b."""
    m = NumpyModelWriter()
    a = m.input("a", DType.FP32, (-1, 2))
    b = m.input("b", DType.FP32, (-1, 2))
    m.output(m.node("add", a, b), "sum", DType.FP32, (-1, 2))
    m.output(m.node("sub", a, b), "diff", DType.FP32, (-1, 2))
    return m.save(version_dir)


#: element types of the identity model: input "in_<name>", output "out_<name>", shape [-1, 3]
IDENTITY_TYPES: dict[str, DType] = {
    "fp32": DType.FP32,
    "fp64": DType.FP64,
    "fp16": DType.FP16,
    "i64": DType.I64,
    "i32": DType.I32,
    "i16": DType.I16,
    "i8": DType.I8,
    "u8": DType.U8,
    "u16": DType.U16,
    "u32": DType.U32,
    "u64": DType.U64,
    "bool": DType.BOOL,
}


def identity_model(
    version_dir: Path, names: Sequence[str] = tuple(IDENTITY_TYPES), types: Mapping[str, DType] = IDENTITY_TYPES
) -> Path:
    """One pass-through input/output pair per element type (STRING too, with `types`)."""
    m = NumpyModelWriter()
    for name in names:
        x = m.input(f"in_{name}", types[name], (-1, 3))
        m.output(m.node("identity", x), f"out_{name}", types[name], (-1, 3))
    return m.save(version_dir)


def string_model(version_dir: Path, name: str = "text", out: str = "echo", shape: Sequence[DimSpec] = (-1,)) -> Path:
    """A STRING input echoed unchanged."""
    m = NumpyModelWriter()
    m.output(m.node("identity", m.input(name, DType.STRING, shape)), out, DType.STRING, shape)
    return m.save(version_dir)


def image_model(
    version_dir: Path, shape: Sequence[DimSpec], layout: str | None = None, dtype: DType = DType.FP32
) -> Path:
    """x (4-D, any dims: ints, -1 or (low, high) ranges; optional layout) -> y = x, unchanged: the
    output is exactly the tensor the server built from the images."""
    m = NumpyModelWriter()
    m.output(m.node("identity", m.input("x", dtype, shape, layout)), "y", dtype, shape)
    return m.save(version_dir)


def token_model(version_dir: Path, length: int = 8) -> Path:
    """ids: I32 [-1, length] -> echo = ids, total = sum of each row (I32 [-1])."""
    m = NumpyModelWriter()
    ids = m.input("ids", DType.I32, (-1, length))
    m.output(m.node("identity", ids), "echo", DType.I32, (-1, length))
    m.output(m.node("sum", ids, axis=1), "total", DType.I32, (-1,))
    return m.save(version_dir)


def gather_model(version_dir: Path, rows: int = 100_000, width: int = 64, seed: int = 0) -> Path:
    """ids: I32 [-1] -> emb = rows of a random FP32 [rows, width] table (100000 x 64: a 26 MB
    table.npy, which the backend maps from the file)."""
    m = NumpyModelWriter()
    table = m.weight("table", np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32))
    m.output(m.node("gather", table, m.input("ids", DType.I32, (-1,)), axis=0), "emb", DType.FP32, (-1, width))
    return m.save(version_dir)


def dense_model(version_dir: Path, inputs: int = 4, units: int = 3, seed: int = 0) -> Path:
    """x: FP32 [-1, inputs] -> logits = x @ w + b (random weights), label = argmax(logits) (I64)."""
    rng = np.random.default_rng(seed)
    m = NumpyModelWriter()
    w = m.weight("w", rng.standard_normal((inputs, units)).astype(np.float32))
    b = m.weight("b", rng.standard_normal(units).astype(np.float32))
    logits = m.node("dense", m.input("x", DType.FP32, (-1, inputs)), w, b)
    m.output(m.node("argmax", logits, axis=-1), "label", DType.I64, (-1,))
    m.output(logits, "logits", DType.FP32, (-1, units))
    return m.save(version_dir)


def failing_model(version_dir: Path) -> Path:
    """x: FP32 [-1] -> y = reshape(x, [3, -1]): inference fails unless x has a multiple of 3 items."""
    m = NumpyModelWriter()
    m.output(m.node("reshape", m.input("x", DType.FP32, (-1,)), shape=[3, -1]), "y", DType.FP32, (3, -1))
    return m.save(version_dir)


def running_sum_model(version_dir: Path, width: int = 2, **model_keys: Any) -> Path:
    """A stateful model: x: FP32 [1, width] -> y = the sum of every x of the sequence so far (the
    variable "acc"). `model_keys`: see `NumpyModelWriter.set` (delay_seconds, gate, ...)."""
    m = NumpyModelWriter().set(**model_keys)
    acc = m.variable("acc", DType.FP32, (1, width))
    y = m.output(m.node("add", m.input("x", DType.FP32, (1, width)), acc), "y", DType.FP32, (1, width))
    m.assign(acc, y)
    return m.save(version_dir)


class NumpyConformanceModels(ConformanceModels):
    """The conformance suite's models for the numpy backend (every dtype, STRING included)."""

    dtypes = ALL_DTYPES

    def scale(self, version_dir: Path, factor: float, shape: Sequence[int]) -> None:
        scale_model(version_dir, shape=shape, factor=factor)

    def identity(self, version_dir: Path, dtype: DType, shape: Sequence[int]) -> None:
        m = NumpyModelWriter()
        m.output(m.node("identity", m.input("x", dtype, shape)), "y", dtype, shape)
        m.save(version_dir)

    def failing(self, version_dir: Path) -> None:
        failing_model(version_dir)
