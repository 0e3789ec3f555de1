"""Small OpenVINO models for tests, built with the opset API (no downloads), and OpenVINO run
directly on them as the reference the server's answers are compared with."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import dropin_openvino.runtime  # noqa: F401  (the first import of openvino, with its telemetry off)

# isort: split
import numpy as np
import openvino as ov
import openvino.opset13 as ops

F32 = ov.Type.f32
#: --plugin_config that makes OpenVINO compute in f32 (the CPU plugin may use bf16), so that the
#: server's answers compare exactly with `run_openvino`
F32_CONFIG = '{"INFERENCE_PRECISION_HINT":"f32"}'


def _param(name: str, shape: Sequence[int], dtype: ov.Type = F32, layout: str | None = None) -> ov.Node:
    node = ops.parameter(
        ov.PartialShape([ov.Dimension(d) if d >= 0 else ov.Dimension() for d in shape]), dtype, name=name
    )
    node.output(0).get_tensor().set_names({name})
    if layout:
        node.set_layout(ov.Layout(layout))
    return node


def _result(node: ov.Node, name: str) -> ov.Node:
    node.output(0).get_tensor().set_names({name})
    return ops.result(node, name=name)


def save(model: ov.Model, version_dir: Path) -> Path:
    version_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(version_dir / "model.xml"), compress_to_fp16=False)
    return version_dir


def scale_model(version_dir: Path, shape: Sequence[int] = (1, 3, 4), factor: float = 2.0, offset: float = 0.0) -> Path:
    """y = x * factor + offset, FP32, input "x", output "y"."""
    x = _param("x", shape)
    y = ops.add(ops.multiply(x, ops.constant(np.float32(factor))), ops.constant(np.float32(offset)))
    return save(ov.Model([_result(y, "y")], [x], "scale"), version_dir)


def dynamic_model(version_dir: Path) -> Path:
    """x: FP32 [-1,-1] -> y = x + 1 and total = sum over axis 1."""
    x = _param("x", (-1, -1))
    y = ops.add(x, ops.constant(np.float32(1.0)))
    total = ops.reduce_sum(x, ops.constant(np.array([1], dtype=np.int64)), keep_dims=False)
    return save(ov.Model([_result(y, "y"), _result(total, "total")], [x], "dynamic"), version_dir)


def two_input_model(version_dir: Path) -> Path:
    """a, b: FP32 [-1,2] -> sum = a + b, diff = a - b."""
    a = _param("a", (-1, 2))
    b = _param("b", (-1, 2))
    return save(
        ov.Model([_result(ops.add(a, b), "sum"), _result(ops.subtract(a, b), "diff")], [a, b], "two_inputs"),
        version_dir,
    )


# element types of the identity model: input "in_<name>", output "out_<name>", shape [-1, 3]
IDENTITY_TYPES: dict[str, ov.Type] = {
    "fp32": ov.Type.f32,
    "fp64": ov.Type.f64,
    "fp16": ov.Type.f16,
    "i64": ov.Type.i64,
    "i32": ov.Type.i32,
    "i16": ov.Type.i16,
    "i8": ov.Type.i8,
    "u8": ov.Type.u8,
    "u16": ov.Type.u16,
    "u32": ov.Type.u32,
    "u64": ov.Type.u64,
    "bool": ov.Type.boolean,
}


def identity_model(version_dir: Path, names: Sequence[str] = tuple(IDENTITY_TYPES)) -> Path:
    """One pass-through input/output pair per element type."""
    params, results = [], []
    for name in names:
        p = _param(f"in_{name}", (-1, 3), IDENTITY_TYPES[name])
        params.append(p)
        # a no-op Reshape moves data only (a Convert would compute fp64 in f32 on the CPU plugin)
        same = ops.reshape(p, ops.constant(np.array([-1, 3], dtype=np.int64)), special_zero=False)
        results.append(_result(same, f"out_{name}"))
    return save(ov.Model(results, params, "identity"), version_dir)


def run_openvino(version_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: OpenVINO run directly, in f32, on the same input."""
    core = ov.Core()
    model = core.read_model(str(version_dir / "model.xml"))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled.infer_new_request(inputs)
    return {out.get_any_name(): np.array(result[out]) for out in compiled.outputs}


# -- models for binary (encoded image) and text inputs ----------------------------------------------


def _image_param(name: str, shape: Sequence, dtype: ov.Type, layout: str | None) -> ov.Node:
    dims = [
        ov.Dimension(d[0], d[1]) if isinstance(d, tuple) else ov.Dimension(d) if d >= 0 else ov.Dimension()
        for d in shape
    ]
    node = ops.parameter(ov.PartialShape(dims), dtype, name=name)
    node.output(0).get_tensor().set_names({name})
    if layout:
        node.set_layout(ov.Layout(layout))
    return node


def image_model(version_dir: Path, shape: Sequence, layout: str | None = None, dtype: ov.Type = F32) -> Path:
    """x (4-D, any dims: ints, -1 or (low, high) ranges; optional layout) -> y = x, unchanged: the
    output is exactly the tensor the server built from the images."""
    x = _image_param("x", shape, dtype, layout)
    same = ops.reshape(x, ops.shape_of(x), special_zero=False)
    return save(ov.Model([_result(same, "y")], [x], "image"), version_dir)


def conv_image_model(
    version_dir: Path, shape: Sequence = (-1, 3, 16, 16), layout: str | None = "NCHW", seed: int = 0
) -> Path:
    """x: FP32 NCHW image -> y = relu(conv3x3(x) with 4 random filters), a small real network."""
    x = _image_param("x", shape, F32, layout)
    weights = np.random.default_rng(seed).standard_normal((4, 3, 3, 3)).astype(np.float32) / 255.0
    conv = ops.convolution(x, ops.constant(weights), [1, 1], [1, 1], [1, 1], [1, 1])
    return save(ov.Model([_result(ops.relu(conv), "y")], [x], "conv_image"), version_dir)


def token_model(version_dir: Path, length: int = 8) -> Path:
    """ids: I32 [-1, length] -> echo = ids, total = sum of each row (I32 [-1])."""
    ids = _param("ids", (-1, length), ov.Type.i32)
    echo = ops.reshape(ids, ops.constant(np.array([-1, length], dtype=np.int64)), special_zero=False)
    total = ops.reduce_sum(ids, ops.constant(np.array([1], dtype=np.int64)), keep_dims=False)
    return save(ov.Model([_result(echo, "echo"), _result(total, "total")], [ids], "tokens"), version_dir)


def gather_model(version_dir: Path, rows: int = 100_000, width: int = 64, seed: int = 0) -> Path:
    """ids: I32 [-1] -> emb = rows of a random FP32 [rows, width] table (100000 x 64: a 26 MB
    model.bin, which OpenVINO's CPU plugin reads in place, from the file's pages)."""
    ids = _param("ids", (-1,), ov.Type.i32)
    table = np.random.default_rng(seed).standard_normal((rows, width)).astype(np.float32)
    emb = ops.gather(ops.constant(table), ids, ops.constant(np.int32(0)))
    return save(ov.Model([_result(emb, "emb")], [ids], "gather"), version_dir)


# -- the bundled digits demo model (models/digits/1) and its sample images ----------------------

_ROOT = Path(__file__).resolve().parents[3]  # the repository (the plugin is installed editable)
DIGITS = _ROOT / "models" / "digits" / "1"
DIGITS_F32 = {"INFERENCE_PRECISION_HINT": "f32"}  # so that answers equal OpenVINO's bit for bit
_SAMPLES = json.loads((_ROOT / "examples" / "digits" / "samples.json").read_text())
_PIXELS = np.array([s["pixels"] for s in _SAMPLES], dtype=np.float32)  # (10, 8, 8), 0..255
LABELS = [s["label"] for s in _SAMPLES]


def digit_images(n: int, start: int = 0) -> np.ndarray:
    """n digit images (n, 8, 8, 1): the samples in turn, rotated by 90 degrees on each later pass
    so that up to 40 images differ."""
    out = [np.rot90(_PIXELS[i % len(_PIXELS)], k=(i // len(_PIXELS)) % 4) for i in range(start, start + n)]
    return np.ascontiguousarray(np.stack(out)[..., None])


def assert_same_digits(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> None:
    """The digits model's two outputs, exactly equal."""
    assert set(got) == {"probabilities", "label"}
    np.testing.assert_array_equal(got["probabilities"], want["probabilities"])
    np.testing.assert_array_equal(got["label"], want["label"])


def save_fails_on_7(directory: Path, name: str = "fails_on_7") -> Path:
    """An IR whose input x (any length) is reshaped to (3, -1): 6 or 9 values work, 7 fail at
    inference time (the shape is only checked then)."""
    directory.mkdir(parents=True, exist_ok=True)
    x = ops.parameter([-1], ov.Type.f32, name="x")
    y = ops.reshape(x, ops.constant(np.array([3, -1], np.int64)), special_zero=False)
    y.output(0).get_tensor().set_names({"y"})
    ov.save_model(ov.Model([y], [x], name), str(directory / f"{name}.xml"))
    return directory


# -- stateful models (ReadValue/Assign), and OpenVINO run over a whole sequence ----------------------


def _variable(name: str, shape: Sequence[int]) -> ov.op.util.Variable:
    info = ov.op.util.VariableInfo()
    info.data_shape = ov.PartialShape(list(shape))
    info.data_type = F32
    info.variable_id = name
    return ov.op.util.Variable(info)


def running_sum_model(version_dir: Path, width: int = 2) -> Path:
    """A stateful model: x: FP32 [1, width] -> y = the sum of every x of the sequence so far,
    kept in the variable "acc" (ReadValue/Assign, zeros at the start)."""
    x = _param("x", (1, width))
    acc = _variable("acc", (1, width))
    total = ops.add(x, ops.read_value(ops.constant(np.zeros((1, width), np.float32)), acc))
    model = ov.Model([_result(total, "y")], [ops.assign(total, acc)], [x], "running_sum")
    return save(model, version_dir)


def recurrent_model(version_dir: Path, inputs: int = 4, hidden: int = 8, seed: int = 0) -> Path:
    """A small recurrent network with its hidden state in a variable: h = tanh(x W + h U + b),
    y = h V (x: FP32 [1, inputs], y: FP32 [1, 3])."""
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> ov.Node:
        return ops.constant((rng.standard_normal(shape) * 0.5).astype(np.float32))

    x = _param("x", (1, inputs))
    state = _variable("h", (1, hidden))
    h_prev = ops.read_value(ops.constant(np.zeros((1, hidden), np.float32)), state)
    h = ops.tanh(ops.add(ops.add(ops.matmul(x, weight(inputs, hidden), False, False),
                                 ops.matmul(h_prev, weight(hidden, hidden), False, False)), weight(1, hidden)))
    y = ops.matmul(h, weight(hidden, 3), False, False)
    model = ov.Model([_result(y, "y")], [ops.assign(h, state)], [x], "recurrent")
    return save(model, version_dir)


def rnn_sequence_model(version_dir: Path, steps: int = 1, inputs: int = 2, hidden: int = 3, seed: int = 0) -> Path:
    """An RNNSequence over `steps` time steps (x: FP32 [1, steps, inputs] -> h: FP32 [1, 1,
    hidden], the last hidden state), stateless as saved: with one step and OpenVINO's LowLatency2
    (low_latency_transformation) its hidden state becomes a variable kept between requests."""
    rng = np.random.default_rng(seed)
    x = _param("x", (1, steps, inputs))
    rnn = ops.rnn_sequence(
        x, ops.constant(np.zeros((1, 1, hidden), np.float32)), ops.constant(np.array([steps], np.int32)),
        ops.constant(rng.standard_normal((1, hidden, inputs)).astype(np.float32)),
        ops.constant(rng.standard_normal((1, hidden, hidden)).astype(np.float32)),
        ops.constant(rng.standard_normal((1, hidden)).astype(np.float32)), hidden, "forward",
    )
    h = rnn.output(1)
    h.get_tensor().set_names({"h"})
    return save(ov.Model([ops.result(h, name="h")], [x], "rnn"), version_dir)


def run_openvino_sequence(version_dir: Path, steps: Sequence[Mapping[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The reference for a stateful model: OpenVINO run in-process (f32) on one infer request
    over the whole sequence, from the initial state."""
    compiled = ov.Core().compile_model(str(version_dir / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    names = [port.get_any_name() for port in compiled.outputs]
    results = []
    for inputs in steps:
        out = request.infer(dict(inputs))
        results.append({name: np.array(out[compiled.output(name)]) for name in names})
    return results
